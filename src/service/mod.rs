//! The operations clients call, over the domain and the store.

mod data;
mod flows;
mod onboarding;

pub use data::{GroupData, UserData};
pub use flows::{EventPage, FlowStateView, Flows, MAX_PAGE, WriteOptions};
pub use onboarding::Onboarding;
