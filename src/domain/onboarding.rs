//! The original onboarding state: one per user, a step and whether (and
//! when) the user finished.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::flow_state::{EventType, FlowState, FlowStatus, Happened};
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
    /// Incremented by every write, flows' writes of `onboarding` included.
    pub revision: i64,
}

impl From<FlowState> for OnboardingState {
    /// The original state of the built-in flow `onboarding`'s state.
    fn from(state: FlowState) -> Self {
        Self {
            is_completed: state.status == FlowStatus::Completed,
            user_id: state.user_id,
            current_step: state.current_step,
            completed_at: state.completed_at,
            created_at: state.created_at,
            updated_at: state.updated_at,
            revision: state.revision,
        }
    }
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

impl Change {
    /// Applies the change to the built-in flow `onboarding`'s state as the
    /// original API's own statements do, and returns the event they append:
    /// for a write that carries `expectedRevision` or `idempotencyKey`.
    pub fn apply_to(self, state: &mut FlowState, now: DateTime<Utc>) -> Happened {
        match self {
            Change::Complete(step) => {
                state.status = FlowStatus::Completed;
                state.current_step = step.get();
                state.completed_at = Some(now);
                state.snoozed_until = None;
                state.started_at.get_or_insert(now);
                Happened {
                    kind: EventType::FlowCompleted,
                    step: None,
                    data: Some(json!({ "step": step.get() })),
                }
            }
            Change::SetStep(step) => {
                state.current_step = step.get();
                if state.status == FlowStatus::NotStarted {
                    state.status = FlowStatus::InProgress;
                }
                state.started_at.get_or_insert(now);
                Happened {
                    kind: EventType::StepSet,
                    step: None,
                    data: Some(json!({ "step": step.get() })),
                }
            }
            Change::Reset => {
                state.status = FlowStatus::NotStarted;
                state.current_step = Step::FIRST.get();
                state.steps.clear();
                state.started_at = None;
                state.completed_at = None;
                state.dismissed_at = None;
                state.snoozed_until = None;
                Happened {
                    kind: EventType::Reset,
                    step: None,
                    data: None,
                }
            }
        }
    }
}
