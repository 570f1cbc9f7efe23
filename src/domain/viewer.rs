//! Who is asking, and on whose behalf they may act.

use super::{Error, GroupId, Result, UserId};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No token: may run introspection, nothing else.
    Anonymous,
    /// A verified token's subject, and the groups it names, in its order.
    User {
        id: UserId,
        admin: bool,
        groups: Vec<GroupId>,
    },
}

impl Viewer {
    /// The signed-in user's id (their token's user claim).
    pub fn id(&self) -> Option<&str> {
        match self {
            Viewer::User { id, .. } => Some(id.as_str()),
            Viewer::Anonymous => None,
        }
    }

    /// Whose state the viewer acts on: its own, or anyone's for an admin.
    pub fn acting_on(&self, requested: Option<String>) -> Result<UserId> {
        let Viewer::User { id, admin, .. } = self else {
            return Err(Error::Unauthenticated);
        };
        match requested {
            None => Ok(id.clone()),
            Some(requested) if requested == id.as_str() => Ok(id.clone()),
            Some(_) if !admin => Err(Error::Forbidden),
            Some(requested) => UserId::parse(requested),
        }
    }
}
