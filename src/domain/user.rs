//! Users, as identity providers name them.

use super::{Error, Result};

/// The actor of events whose author was erased: erasing a user who acted
/// for others (an admin) leaves this in their place.
pub const ERASED_ACTOR: &str = "(erased)";

/// A user id as the auth provider gives it in `sub`: 1 to 255 bytes, no NUL,
/// not the marker of erased actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(value: String) -> Result<Self> {
        if value.is_empty() || value.len() > Self::MAX_BYTES {
            return Err(Error::BadUserInput(format!(
                "userId must be 1 to {} bytes long; got {} bytes.",
                Self::MAX_BYTES,
                value.len()
            )));
        }
        // The marker of erased actors names no one: a token or a request
        // naming it would read every erased user's events in groups.
        if value == ERASED_ACTOR {
            return Err(Error::BadUserInput(format!(
                "userId `{ERASED_ACTOR}` is reserved: it stands for erased users in histories."
            )));
        }
        // Postgres text cannot hold NUL; SQLite could, so both refuse it alike.
        if value.contains('\0') {
            return Err(Error::BadUserInput(
                "userId must not contain NUL characters.".to_owned(),
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
