//! The operations clients call, over the domain and the store.

mod flows;
mod onboarding;

pub use flows::{EventPage, FlowStateView, Flows, MAX_PAGE, UserData, WriteOptions};
pub use onboarding::Onboarding;
