//! The domain: users, who is asking, onboarding states and the errors of
//! their rules. It imports nothing from the layers above it (the store, the
//! service, GraphQL, HTTP), so each of them can depend on it.

mod error;
mod onboarding;
mod time;
mod user;
mod viewer;

pub use error::{Error, Result};
pub use onboarding::{Change, OnboardingState, Step};
pub use time::now;
pub use user::UserId;
pub use viewer::Viewer;
