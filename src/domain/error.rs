//! The errors of the rules, and the `extensions.code` each carries.

use super::FlowState;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `expectedRevision` differs from the revision of `current`, the
    /// stored state, which the error carries.
    pub fn stale_revision(expected: i64, current: &FlowState) -> Self {
        Error::Conflict {
            message: format!(
                "The state is at revision {}, not {expected}: read it again and retry.",
                current.revision
            ),
            current_revision: Some(current.revision),
            current_state: Some(Box::new(current.clone())),
        }
    }
}

/// Everything an onboarding operation can fail with. Only the messages of the
/// client-facing variants reach clients; `Internal` is logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Sign in first: send an `Authorization: Bearer <token>` header.")]
    Unauthenticated,
    #[error(
        "Only an admin may read or change another user's onboarding state: an admin's token \
         carries the admin role (JWT_ADMIN_ROLE, default `admin`) in its roles claim \
         (JWT_ROLES_CLAIM, default `roles`)."
    )]
    Forbidden,
    /// An operation for admins only: what it does, as in "publish flows".
    #[error(
        "Only an admin may {0}: an admin's token carries the admin role (JWT_ADMIN_ROLE, \
         default `admin`) in its roles claim (JWT_ROLES_CLAIM, default `roles`)."
    )]
    AdminOnly(&'static str),
    /// A group's state asked for by someone neither in the group nor an admin.
    #[error(
        "Only the group's members (the groups their token names in the groups claim, \
         JWT_GROUPS_CLAIM, default `org_id`) and admins may read or change a group's progress."
    )]
    NotMember,
    #[error("{0}")]
    BadUserInput(String),
    /// The stored state moved on (`expectedRevision` differs), or an
    /// idempotency key was reused for another change.
    #[error("{message}")]
    Conflict {
        message: String,
        current_revision: Option<i64>,
        /// The state as stored, for a client to redraw without a read.
        current_state: Option<Box<FlowState>>,
    },
    #[error("The database is unavailable; retry shortly.")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database gave up on the statement for another transaction's sake
    /// (a row held past the lock or statement timeout, a deadlock): nothing
    /// was written.
    #[error(
        "Another transaction held what this request needs for too long, and nothing was \
         changed; retry shortly."
    )]
    Busy(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("Internal server error.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The machine-readable `extensions.code` clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "UNAUTHENTICATED",
            Error::Forbidden | Error::AdminOnly(_) | Error::NotMember => "FORBIDDEN",
            Error::BadUserInput(_) => "BAD_USER_INPUT",
            Error::Conflict { .. } => "CONFLICT",
            Error::Unavailable(_) | Error::Busy(_) | Error::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Whether the fault is the server's (logged in full) rather than the client's.
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Busy(_) | Error::Internal(_)
        )
    }
}
