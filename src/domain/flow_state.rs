//! One user's progress through one flow, and how each change moves it.
//! Pure rules: the store reads a state, these compute the next one and the
//! event that records it, and the store writes both in one transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::flow::{FlowVersion, Reonboarding};
use super::{Error, Result, check_json, check_text};

/// Largest `data` a step may hold, as JSON.
pub const MAX_STEP_DATA_BYTES: usize = 4 * 1024;
/// Farthest a snooze may reach.
const MAX_SNOOZE: TimeDelta = TimeDelta::days(366);

/// Where a user is in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowStatus {
    NotStarted,
    InProgress,
    Completed,
    Dismissed,
    Snoozed,
}

impl FlowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::NotStarted => "NOT_STARTED",
            FlowStatus::InProgress => "IN_PROGRESS",
            FlowStatus::Completed => "COMPLETED",
            FlowStatus::Dismissed => "DISMISSED",
            FlowStatus::Snoozed => "SNOOZED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            FlowStatus::NotStarted,
            FlowStatus::InProgress,
            FlowStatus::Completed,
            FlowStatus::Dismissed,
            FlowStatus::Snoozed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// Where a user is in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    NotStarted,
    Completed,
    Skipped,
}

/// A step the user completed or skipped, as stored (steps not done have none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// One user's state in one flow, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowState {
    pub user_id: String,
    pub flow: String,
    pub version: i32,
    pub status: FlowStatus,
    /// Index of the current step in the version's steps; for the undeclared
    /// `onboarding` flow, the original integer step.
    pub current_step: i32,
    /// The steps done, by key.
    pub steps: BTreeMap<String, StepRecord>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub dismissed_at: Option<DateTime<Utc>>,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a change records in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    FlowStarted,
    StepCompleted,
    StepSkipped,
    StepSet,
    FlowCompleted,
    FlowDismissed,
    FlowSnoozed,
    FlowRestarted,
    Reset,
    Reonboarded,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::FlowStarted => "FLOW_STARTED",
            EventType::StepCompleted => "STEP_COMPLETED",
            EventType::StepSkipped => "STEP_SKIPPED",
            EventType::StepSet => "STEP_SET",
            EventType::FlowCompleted => "FLOW_COMPLETED",
            EventType::FlowDismissed => "FLOW_DISMISSED",
            EventType::FlowSnoozed => "FLOW_SNOOZED",
            EventType::FlowRestarted => "FLOW_RESTARTED",
            EventType::Reset => "RESET",
            EventType::Reonboarded => "REONBOARDED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            EventType::FlowStarted,
            EventType::StepCompleted,
            EventType::StepSkipped,
            EventType::StepSet,
            EventType::FlowCompleted,
            EventType::FlowDismissed,
            EventType::FlowSnoozed,
            EventType::FlowRestarted,
            EventType::Reset,
            EventType::Reonboarded,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// The event a change appends: its type, the step it names and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Happened {
    pub kind: EventType,
    pub step: Option<String>,
    pub data: Option<Value>,
}

impl Happened {
    fn new(kind: EventType) -> Self {
        Self {
            kind,
            step: None,
            data: None,
        }
    }

    fn at_step(kind: EventType, step: &str) -> Self {
        Self {
            kind,
            step: Some(step.to_owned()),
            data: None,
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEvent {
    pub id: i64,
    /// The user whose state changed; for a group's, the member (or admin)
    /// who changed it.
    pub user_id: String,
    /// The group whose state changed; none for a user's.
    pub group_id: Option<String>,
    pub flow: String,
    pub version: i32,
    pub kind: EventType,
    pub step: Option<String>,
    pub actor: String,
    pub request_id: Option<String>,
    pub at: DateTime<Utc>,
    pub data: Option<Value>,
}

impl FlowEvent {
    /// The event as read from a group's state, which keeps it under the
    /// group's id: it names the group, and as its user the member (or admin)
    /// who made the change.
    pub fn of_group(mut self) -> Self {
        let member = self.actor.clone();
        self.group_id = Some(std::mem::replace(&mut self.user_id, member));
        self
    }
}

/// A change a client asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowChange {
    Start,
    CompleteStep {
        step: String,
        data: Option<Map<String, Value>>,
    },
    SkipStep {
        step: String,
    },
    GoToStep {
        step: String,
    },
    Complete,
    Dismiss,
    Snooze {
        until: DateTime<Utc>,
    },
    Restart,
}

impl FlowChange {
    /// Checks what can be checked before the state is read: the data's shape
    /// and size, the snooze's reach.
    pub fn check(&self, now: DateTime<Utc>) -> Result<()> {
        match self {
            FlowChange::CompleteStep {
                data: Some(data), ..
            } => {
                let size = serde_json::to_vec(data).map_or(usize::MAX, |json| json.len());
                if size > MAX_STEP_DATA_BYTES {
                    return Err(Error::BadUserInput(format!(
                        "`data` is {size} bytes as JSON; a step's data may be at most {} KiB.",
                        MAX_STEP_DATA_BYTES / 1024
                    )));
                }
                data.iter().try_for_each(|(key, value)| {
                    check_text("A key in `data`", key)?;
                    check_json(&format!("data.{key}"), value)
                })
            }
            FlowChange::Snooze { until } if *until <= now => Err(Error::BadUserInput(
                "`until` is in the past: snooze until a time to come.".to_owned(),
            )),
            FlowChange::Snooze { until } if *until > now + MAX_SNOOZE => Err(Error::BadUserInput(
                "`until` is more than a year ahead: snooze for a year at most.".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// A fingerprint of the change, to tell an idempotent retry from a key
    /// reused for another change.
    pub fn fingerprint(&self, flow: &str, user_id: &str) -> String {
        format!("{user_id}\n{flow}\n{self:?}")
    }
}

impl FlowState {
    /// A state nobody has touched, on `version`.
    pub fn new(user_id: &str, version: &FlowVersion, now: DateTime<Utc>) -> Self {
        Self {
            user_id: user_id.to_owned(),
            flow: version.flow.clone(),
            version: version.version,
            status: FlowStatus::NotStarted,
            current_step: 0,
            steps: BTreeMap::new(),
            started_at: None,
            completed_at: None,
            dismissed_at: None,
            snoozed_until: None,
            revision: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// The state as it reads at `now`: a snooze that has run out reads
    /// IN_PROGRESS, with no `snoozedUntil`.
    pub fn as_of(mut self, now: DateTime<Utc>) -> Self {
        if self.status == FlowStatus::Snoozed
            && self.snoozed_until.is_some_and(|until| until <= now)
        {
            self.status = FlowStatus::InProgress;
            self.snoozed_until = None;
        }
        self
    }

    /// Refuses a write whose `expectedRevision` is not this state's.
    pub fn check_revision(&self, expected: Option<i64>) -> Result<()> {
        match expected {
            Some(expected) if expected != self.revision => {
                Err(Error::stale_revision(expected, self))
            }
            _ => Ok(()),
        }
    }

    /// The status of step `key`.
    pub fn step_status(&self, key: &str) -> StepStatus {
        self.steps
            .get(key)
            .map_or(StepStatus::NotStarted, |record| record.status)
    }

    fn is_done(&self, key: &str) -> bool {
        self.step_status(key) != StepStatus::NotStarted
    }

    /// Steps completed or skipped, among the version's.
    pub fn done_steps(&self, version: &FlowVersion) -> usize {
        version
            .steps
            .iter()
            .filter(|step| self.is_done(&step.key))
            .count()
    }

    /// Applies `change`, on the state's own `version` of the flow, with
    /// `latest` for a restart; returns the events to append: the change's,
    /// and FLOW_COMPLETED after it when the change completed the flow. The
    /// caller has brought the state `as_of(now)` and bumps revision and
    /// `updated_at`.
    ///
    /// `completedAt` is set exactly when the status is COMPLETED. A completed
    /// flow stays completed until restarted: dismissing it records when it
    /// was dismissed, and snoozing it is refused.
    pub fn apply(
        &mut self,
        change: &FlowChange,
        version: &FlowVersion,
        latest: &FlowVersion,
        now: DateTime<Utc>,
    ) -> Result<Vec<Happened>> {
        let was_completed = self.status == FlowStatus::Completed;
        let happened = match change {
            FlowChange::Start => {
                if self.status != FlowStatus::Completed {
                    self.resume(now);
                }
                Happened::new(EventType::FlowStarted)
            }
            FlowChange::CompleteStep { step, data } => {
                let index = version.step_index(step)?;
                let record = self.steps.entry(step.clone()).or_insert(StepRecord {
                    status: StepStatus::Completed,
                    at: now,
                    data: None,
                });
                if record.status != StepStatus::Completed {
                    record.status = StepStatus::Completed;
                    record.at = now;
                }
                if data.is_some() {
                    record.data.clone_from(data);
                }
                self.step_done(index, version, now);
                Happened {
                    data: data.clone().map(Value::Object),
                    ..Happened::at_step(EventType::StepCompleted, step)
                }
            }
            FlowChange::SkipStep { step } => {
                let index = version.step_index(step)?;
                if self.step_status(step) == StepStatus::NotStarted {
                    self.steps.insert(
                        step.clone(),
                        StepRecord {
                            status: StepStatus::Skipped,
                            at: now,
                            data: None,
                        },
                    );
                }
                self.step_done(index, version, now);
                Happened::at_step(EventType::StepSkipped, step)
            }
            FlowChange::GoToStep { step } => {
                let index = version.step_index(step)?;
                self.current_step = step_number(index);
                if self.status != FlowStatus::Completed {
                    self.resume(now);
                }
                Happened::at_step(EventType::StepSet, step)
            }
            FlowChange::Complete => {
                self.complete(now);
                Happened::new(EventType::FlowCompleted)
            }
            FlowChange::Dismiss => {
                if !was_completed {
                    self.status = FlowStatus::Dismissed;
                }
                self.dismissed_at = Some(now);
                self.snoozed_until = None;
                Happened::new(EventType::FlowDismissed)
            }
            FlowChange::Snooze { .. } if was_completed => {
                return Err(Error::BadUserInput(format!(
                    "Flow `{}` is completed: there is nothing to snooze. `restartFlow` starts it \
                     again.",
                    self.flow
                )));
            }
            FlowChange::Snooze { until } => {
                self.status = FlowStatus::Snoozed;
                self.snoozed_until = Some(*until);
                Happened {
                    data: Some(serde_json::json!({
                        "until": until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    })),
                    ..Happened::new(EventType::FlowSnoozed)
                }
            }
            FlowChange::Restart => {
                self.restart(latest);
                Happened::new(EventType::FlowRestarted)
            }
        };
        let completed_by_step = !was_completed
            && self.status == FlowStatus::Completed
            && matches!(
                change,
                FlowChange::CompleteStep { .. } | FlowChange::SkipStep { .. }
            );
        let mut happenings = vec![happened];
        if completed_by_step {
            happenings.push(Happened::new(EventType::FlowCompleted));
        }
        Ok(happenings)
    }

    /// Applies the re-onboarding policies of the versions published since
    /// the user's, once: the strongest that applies moves the user onto
    /// `latest`. Returns the event when it changed anything; when no policy
    /// applies, the state is left as it was.
    pub fn reonboard(
        &mut self,
        current: &FlowVersion,
        newer: &[FlowVersion],
        now: DateTime<Utc>,
    ) -> Option<Happened> {
        let latest = newer.last()?;
        let policy =
            |wanted: Reonboarding| newer.iter().any(|version| version.reonboarding == wanted);
        let from = self.version;
        let applied = if policy(Reonboarding::RestartAll) {
            self.restart(latest);
            Reonboarding::RestartAll
        } else if policy(Reonboarding::RestartInProgress) && self.status == FlowStatus::InProgress {
            self.restart(latest);
            Reonboarding::RestartInProgress
        } else if policy(Reonboarding::NewStepsOnly)
            && matches!(self.status, FlowStatus::Completed | FlowStatus::InProgress)
        {
            self.carry_over(current, latest, now);
            Reonboarding::NewStepsOnly
        } else {
            return None;
        };
        Some(Happened {
            data: Some(serde_json::json!({ "policy": applied.as_str(), "fromVersion": from })),
            ..Happened::new(EventType::Reonboarded)
        })
    }

    /// Onto `latest`, keeping the steps done whose keys it still declares;
    /// back in progress at the first step not done, unless none is left.
    fn carry_over(&mut self, current: &FlowVersion, latest: &FlowVersion, now: DateTime<Utc>) {
        let kept = latest
            .steps
            .iter()
            .filter(|step| current.steps.iter().any(|old| old.key == step.key))
            .filter_map(|step| Some((step.key.clone(), self.steps.get(&step.key)?.clone())))
            .collect();
        self.steps = kept;
        self.version = latest.version;
        match first_not_done(self, latest, 0) {
            Some(index) => {
                self.current_step = step_number(index);
                self.status = FlowStatus::InProgress;
                self.completed_at = None;
                self.started_at.get_or_insert(now);
            }
            None => self.current_step = step_number(latest.steps.len()),
        }
    }

    /// NOT_STARTED, SNOOZED or DISMISSED back to IN_PROGRESS.
    fn resume(&mut self, now: DateTime<Utc>) {
        if self.status != FlowStatus::InProgress {
            self.status = FlowStatus::InProgress;
        }
        self.snoozed_until = None;
        self.started_at.get_or_insert(now);
    }

    fn complete(&mut self, now: DateTime<Utc>) {
        self.status = FlowStatus::Completed;
        self.completed_at = Some(now);
        self.snoozed_until = None;
        self.started_at.get_or_insert(now);
    }

    fn restart(&mut self, version: &FlowVersion) {
        self.version = version.version;
        self.status = FlowStatus::NotStarted;
        self.current_step = 0;
        self.steps.clear();
        self.started_at = None;
        self.completed_at = None;
        self.dismissed_at = None;
        self.snoozed_until = None;
    }

    /// After step `index` was completed or skipped: the current step moves to
    /// the next not done, and the flow completes once every required step is.
    fn step_done(&mut self, index: usize, version: &FlowVersion, now: DateTime<Utc>) {
        if self.status != FlowStatus::Completed {
            self.resume(now);
        }
        let next =
            first_not_done(self, version, index + 1).or_else(|| first_not_done(self, version, 0));
        self.current_step = step_number(next.unwrap_or(version.steps.len()));
        let required: Vec<_> = version.steps.iter().filter(|step| !step.optional).collect();
        let all_required_done = required.iter().all(|step| self.is_done(&step.key));
        if !required.is_empty() && all_required_done && self.status != FlowStatus::Completed {
            self.complete(now);
        }
    }
}

/// The first step from `start` on that is not done.
fn first_not_done(state: &FlowState, version: &FlowVersion, start: usize) -> Option<usize> {
    version
        .steps
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, step)| !state.is_done(&step.key))
        .map(|(index, _)| index)
}

/// Step indexes are below `MAX_STEPS`, so they fit.
fn step_number(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;
    use crate::domain::flow::StepDeclaration;

    fn version(number: i32, steps: &[(&str, bool)], policy: Reonboarding) -> FlowVersion {
        FlowVersion {
            flow: "checklist".to_owned(),
            version: number,
            title: "Set up".to_owned(),
            steps: steps
                .iter()
                .map(|(key, optional)| StepDeclaration {
                    key: (*key).to_owned(),
                    title: key.to_uppercase(),
                    optional: *optional,
                })
                .collect(),
            reonboarding: policy,
            scope: Scope::User,
            published_at: Utc::now(),
        }
    }

    fn complete(state: &mut FlowState, step: &str, version: &FlowVersion) {
        let change = FlowChange::CompleteStep {
            step: step.to_owned(),
            data: None,
        };
        state
            .apply(&change, version, version, Utc::now())
            .expect("applies");
    }

    #[test]
    fn completing_steps_moves_on_and_completes_once_every_required_step_is_done() {
        let v1 = version(
            1,
            &[("a", false), ("b", true), ("c", false)],
            Reonboarding::Keep,
        );
        let mut state = FlowState::new("u", &v1, Utc::now());
        complete(&mut state, "a", &v1);
        assert_eq!(
            (state.status, state.current_step),
            (FlowStatus::InProgress, 1)
        );
        complete(&mut state, "c", &v1);
        assert_eq!(state.status, FlowStatus::Completed, "b is optional");
        assert_eq!(state.current_step, 1, "b is still the one not done");
    }

    #[test]
    fn a_flow_of_optional_steps_completes_only_when_asked() {
        let v1 = version(1, &[("a", true)], Reonboarding::Keep);
        let mut state = FlowState::new("u", &v1, Utc::now());
        complete(&mut state, "a", &v1);
        assert_eq!(
            (state.status, state.current_step),
            (FlowStatus::InProgress, 1)
        );
    }

    #[test]
    fn new_steps_only_reopens_a_completed_flow_at_the_added_step() {
        let v1 = version(1, &[("a", false), ("b", false)], Reonboarding::Keep);
        let v2 = version(
            2,
            &[("a", false), ("new", false), ("b", false)],
            Reonboarding::NewStepsOnly,
        );
        let mut state = FlowState::new("u", &v1, Utc::now());
        complete(&mut state, "a", &v1);
        complete(&mut state, "b", &v1);
        assert_eq!(state.status, FlowStatus::Completed);
        let event = state.reonboard(&v1, std::slice::from_ref(&v2), Utc::now());
        assert_eq!(event.map(|event| event.kind), Some(EventType::Reonboarded));
        assert_eq!(
            (state.version, state.status, state.current_step),
            (2, FlowStatus::InProgress, 1)
        );
        assert_eq!(state.step_status("a"), StepStatus::Completed);
        complete(&mut state, "new", &v2);
        assert_eq!(state.status, FlowStatus::Completed);
    }

    #[test]
    fn keep_leaves_users_on_their_version() {
        let v1 = version(1, &[("a", false)], Reonboarding::Keep);
        let v2 = version(2, &[("a", false), ("b", false)], Reonboarding::Keep);
        let mut state = FlowState::new("u", &v1, Utc::now());
        complete(&mut state, "a", &v1);
        assert!(state.reonboard(&v1, &[v2], Utc::now()).is_none());
        assert_eq!(state.version, 1);
    }

    #[test]
    fn a_snooze_that_ran_out_reads_in_progress() {
        let v1 = version(1, &[("a", false)], Reonboarding::Keep);
        let now = Utc::now();
        let mut state = FlowState::new("u", &v1, now);
        let until = now + TimeDelta::seconds(10);
        state
            .apply(&FlowChange::Snooze { until }, &v1, &v1, now)
            .expect("applies");
        assert_eq!(state.clone().as_of(now).status, FlowStatus::Snoozed);
        let later = state.as_of(until);
        assert_eq!(
            (later.status, later.snoozed_until),
            (FlowStatus::InProgress, None)
        );
    }
}
