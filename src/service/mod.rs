//! The operations clients call, over the domain and the store.

mod onboarding;

pub use onboarding::Onboarding;
