//! The service's error type and the `extensions.code` each variant carries.

use async_graphql::ErrorExtensions;

use crate::db::DbError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    #[error("{0}")]
    BadUserInput(String),
    #[error("The database is unavailable; retry shortly.")]
    Unavailable(#[source] DbError),
    #[error("Internal server error.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The machine-readable `extensions.code` clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "UNAUTHENTICATED",
            Error::Forbidden => "FORBIDDEN",
            Error::BadUserInput(_) => "BAD_USER_INPUT",
            Error::Unavailable(_) | Error::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Turns the error into what the client sees. Server-side failures are logged
    /// here, in full, with the request id that the client is also given.
    pub fn into_graphql(self, request_id: Option<&str>) -> async_graphql::Error {
        let code = self.code();
        let server_side = matches!(self, Error::Unavailable(_) | Error::Internal(_));
        if server_side {
            let detail = std::error::Error::source(&self).map(ToString::to_string);
            tracing::error!(request_id, error = detail, "request failed: {self}");
        }
        async_graphql::Error::new(self.to_string()).extend_with(|_, extensions| {
            extensions.set("code", code);
            if let (true, Some(id)) = (server_side, request_id) {
                extensions.set("requestId", id);
            }
        })
    }
}

/// The `extensions.code` of a request refused before any field ran, named as
/// Apollo Server names them so clients can tell these from field errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorCode {
    /// Not a GraphQL-over-HTTP request this server takes: wrong content type or
    /// method, malformed JSON, a batch, a body over the limit.
    BadRequest,
    /// The document is not valid GraphQL syntax.
    ParseFailed,
    /// The document does not fit the schema or its limits, or an argument or
    /// variable value does not fit its type, or a required variable is missing.
    ValidationFailed,
}

impl RequestErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestErrorCode::BadRequest => "BAD_REQUEST",
            RequestErrorCode::ParseFailed => "GRAPHQL_PARSE_FAILED",
            RequestErrorCode::ValidationFailed => "GRAPHQL_VALIDATION_FAILED",
        }
    }
}

impl From<DbError> for Error {
    fn from(error: DbError) -> Self {
        if error.is_unavailable() {
            Error::Unavailable(error)
        } else {
            Error::Internal(Box::new(error))
        }
    }
}
