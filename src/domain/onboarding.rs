//! The original onboarding state: one per user, a step and whether (and
//! when) the user finished.

use chrono::{DateTime, Utc};

use super::{Error, Result};

/// An onboarding step: never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(i32);

impl Step {
    pub const FIRST: Step = Step(0);

    pub fn parse(value: i32) -> Result<Self> {
        if value < 0 {
            return Err(Error::BadUserInput(format!(
                "step must be 0 or greater; got {value}."
            )));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// One user's onboarding progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingState {
    pub user_id: String,
    pub is_completed: bool,
    pub current_step: i32,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A write to a state; each one creates the state first if it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Finished: `is_completed`, `current_step = step`, `completed_at = now`.
    Complete(Step),
    /// Moves to `step`; completion is left as it is.
    SetStep(Step),
    /// Back to the start: not completed, step 0, no completion time.
    Reset,
}
