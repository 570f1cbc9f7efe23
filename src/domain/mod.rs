//! The domain: users, who is asking, onboarding states, flows and the
//! errors of their rules. It imports nothing from the layers above it (the store, the
//! service, GraphQL, HTTP), so each of them can depend on it.

mod error;
mod flow;
mod flow_state;
#[cfg(test)]
mod flow_state_properties;
mod group;
mod onboarding;
mod text;
mod time;
mod user;
mod viewer;
pub mod webhook;

pub use error::{Error, Result};
pub use flow::{
    Flow, FlowDeclaration, FlowVersion, MAX_STEPS, ONBOARDING, Reonboarding, StepDeclaration,
    check_key, unknown_flow,
};
pub use flow_state::{
    EventType, FlowChange, FlowEvent, FlowState, FlowStatus, Happened, MAX_STEP_DATA_BYTES,
    StepRecord, StepStatus,
};
pub use group::{Access, GroupId, Scope, Subject};
pub use onboarding::{Change, OnboardingState, Step};
pub use text::{MAX_EXACT_INTEGER, check_json, check_text};
pub use time::now;
pub use user::{ERASED_ACTOR, UserId};
pub use viewer::Viewer;
