//! The enums of flows in the schema, and how each maps to the domain's.

use async_graphql::Enum;

use crate::domain::{EventType, FlowStatus, Reonboarding, Scope, StepStatus};

/// Where a user is in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "FlowStatus")]
pub enum FlowStatusValue {
    /// Never started (or restarted).
    NotStarted,
    /// Started, not finished.
    InProgress,
    /// Finished: every required step done, or completed outright.
    Completed,
    /// Closed by the user without finishing.
    Dismissed,
    /// Put off until `snoozedUntil`; reads IN_PROGRESS after it.
    Snoozed,
}

impl From<FlowStatus> for FlowStatusValue {
    fn from(status: FlowStatus) -> Self {
        match status {
            FlowStatus::NotStarted => Self::NotStarted,
            FlowStatus::InProgress => Self::InProgress,
            FlowStatus::Completed => Self::Completed,
            FlowStatus::Dismissed => Self::Dismissed,
            FlowStatus::Snoozed => Self::Snoozed,
        }
    }
}

/// Where a user is in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "StepStatus")]
pub enum StepStatusValue {
    /// Not done yet.
    NotStarted,
    /// Done.
    Completed,
    /// Passed over; counts as done.
    Skipped,
}

impl From<StepStatus> for StepStatusValue {
    fn from(status: StepStatus) -> Self {
        match status {
            StepStatus::NotStarted => Self::NotStarted,
            StepStatus::Completed => Self::Completed,
            StepStatus::Skipped => Self::Skipped,
        }
    }
}

/// What publishing a new version does to users already in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Enum)]
#[graphql(name = "ReonboardingPolicy")]
pub enum ReonboardingPolicy {
    /// They stay on the version they are on.
    #[default]
    Keep,
    /// Users in progress start again on the new version; others stay.
    RestartInProgress,
    /// Every user starts again on the new version.
    RestartAll,
    /// Users who completed the flow go through the steps the new version
    /// added, their earlier step completions carried over by step key.
    NewStepsOnly,
}

impl From<Reonboarding> for ReonboardingPolicy {
    fn from(policy: Reonboarding) -> Self {
        match policy {
            Reonboarding::Keep => Self::Keep,
            Reonboarding::RestartInProgress => Self::RestartInProgress,
            Reonboarding::RestartAll => Self::RestartAll,
            Reonboarding::NewStepsOnly => Self::NewStepsOnly,
        }
    }
}

impl From<ReonboardingPolicy> for Reonboarding {
    fn from(policy: ReonboardingPolicy) -> Self {
        match policy {
            ReonboardingPolicy::Keep => Self::Keep,
            ReonboardingPolicy::RestartInProgress => Self::RestartInProgress,
            ReonboardingPolicy::RestartAll => Self::RestartAll,
            ReonboardingPolicy::NewStepsOnly => Self::NewStepsOnly,
        }
    }
}

/// What a recorded change was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "FlowEventType")]
pub enum FlowEventType {
    /// startFlow.
    FlowStarted,
    /// completeStep; the event carries the step and its data.
    StepCompleted,
    /// skipStep.
    StepSkipped,
    /// goToStep, or setOnboardingStep.
    StepSet,
    /// completeFlow, a last required step completed, or completeOnboarding.
    FlowCompleted,
    /// dismissFlow.
    FlowDismissed,
    /// snoozeFlow.
    FlowSnoozed,
    /// restartFlow.
    FlowRestarted,
    /// resetOnboarding.
    Reset,
    /// A new version's re-onboarding policy moved the user onto it.
    Reonboarded,
}

impl From<EventType> for FlowEventType {
    fn from(kind: EventType) -> Self {
        match kind {
            EventType::FlowStarted => Self::FlowStarted,
            EventType::StepCompleted => Self::StepCompleted,
            EventType::StepSkipped => Self::StepSkipped,
            EventType::StepSet => Self::StepSet,
            EventType::FlowCompleted => Self::FlowCompleted,
            EventType::FlowDismissed => Self::FlowDismissed,
            EventType::FlowSnoozed => Self::FlowSnoozed,
            EventType::FlowRestarted => Self::FlowRestarted,
            EventType::Reset => Self::Reset,
            EventType::Reonboarded => Self::Reonboarded,
        }
    }
}

/// Whose progress a flow keeps: each user's own, or each group's, shared by its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "FlowScope")]
pub enum FlowScope {
    /// Each user's own progress.
    User,
    /// One state per group (a team, a workspace, a company), shared by its
    /// members: a step any member completes is completed for all.
    Group,
}

impl From<Scope> for FlowScope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::User => Self::User,
            Scope::Group => Self::Group,
        }
    }
}

impl From<FlowScope> for Scope {
    fn from(scope: FlowScope) -> Self {
        match scope {
            FlowScope::User => Self::User,
            FlowScope::Group => Self::Group,
        }
    }
}
