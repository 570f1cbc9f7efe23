//! The operations clients call, over the domain and the store.

mod data;
mod flows;
mod live;
mod onboarding;
mod webhooks;

pub use data::{GroupData, UserData};
pub use flows::{EventPage, FlowStateView, Flows, MAX_PAGE, WriteOptions};
pub use onboarding::Onboarding;
pub use webhooks::{Deliveries, EndpointInput, MAX_MESSAGES_PAGE, MessagePage, Webhooks};
