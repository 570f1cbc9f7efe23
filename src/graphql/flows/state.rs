//! A state in a flow, its steps, its history, and a user's data as a whole.

use async_graphql::{ID, Object, ScalarType, SimpleObject};
use serde_json::{Value, json};

use super::count;
use super::enums::{FlowEventType, FlowStatusValue, StepStatusValue};
use crate::db::{Erased, ErasedGroup};
use crate::domain::{self, StepDeclaration, StepRecord, StepStatus, Subject};
use crate::graphql::scalars::{DateTime, Json};
use crate::service::{EventPage, FlowStateView, GroupData, UserData};

/// One user's progress in one step: the step as declared, and what the
/// user did in it, read only for the fields asked.
pub struct StepState<'a> {
    step: &'a StepDeclaration,
    record: Option<&'a StepRecord>,
}

impl StepState<'_> {
    /// When the step reached `status`, if it is in it.
    fn at(&self, status: StepStatus) -> Option<DateTime> {
        self.record
            .filter(|record| record.status == status)
            .map(|record| DateTime(record.at))
    }

    fn step_status(&self) -> StepStatus {
        self.record
            .map_or(StepStatus::NotStarted, |record| record.status)
    }
}

/// One user's (or group's) progress in one step.
#[Object(name = "StepState", serial)]
impl StepState<'_> {
    /// The step's key.
    async fn key(&self) -> &str {
        &self.step.key
    }

    /// The step's title, from the state's version.
    async fn title(&self) -> &str {
        &self.step.title
    }

    /// Whether the step is optional (not needed for the flow to complete), from the state's version.
    async fn optional(&self) -> bool {
        self.step.optional
    }

    /// Not started, completed or skipped.
    async fn status(&self) -> StepStatusValue {
        self.step_status().into()
    }

    /// When the step was completed; null unless it is.
    async fn completed_at(&self) -> Option<DateTime> {
        self.at(StepStatus::Completed)
    }

    /// When the step was skipped; null unless it is.
    async fn skipped_at(&self) -> Option<DateTime> {
        self.at(StepStatus::Skipped)
    }

    /// What the user gave when completing the step (completeStep's `data`).
    async fn data(&self) -> Option<Json> {
        let data = self.record?.data.clone()?;
        Some(Json(serde_json::Value::Object(data)))
    }
}

/// One user's, or one group's, progress in one flow.
pub struct FlowState(pub(super) FlowStateView);

impl FlowState {
    fn id_text(&self) -> String {
        let flow = &self.0.state.flow;
        match &self.0.subject {
            Subject::User(user) => format!("{}/{flow}", user.as_str()),
            Subject::Group { group, .. } => format!("group:{}/{flow}", group.as_str()),
        }
    }

    fn current_step_key(&self) -> Option<&str> {
        let index = usize::try_from(self.0.state.current_step).ok()?;
        self.0
            .version()
            .steps
            .get(index)
            .map(|step| step.key.as_str())
    }

    fn step_states(&self) -> Vec<StepState<'_>> {
        self.0
            .version()
            .steps
            .iter()
            .map(|step| StepState {
                step,
                record: self.0.state.steps.get(&step.key),
            })
            .collect()
    }

    /// The state as JSON with the field names of the schema, for the
    /// `currentState` of a CONFLICT.
    pub(super) fn to_json(&self) -> Value {
        let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
            at.map(|at| DateTime(at).to_value().into_json().unwrap_or(Value::Null))
        };
        let state = &self.0.state;
        let steps: Vec<Value> = self
            .step_states()
            .iter()
            .map(|step| {
                json!({
                    "key": step.step.key,
                    "title": step.step.title,
                    "optional": step.step.optional,
                    "status": serde_json::to_value(step.step_status()).unwrap_or(Value::Null),
                    "completedAt": time(step.at(StepStatus::Completed).map(|at| at.0)),
                    "skippedAt": time(step.at(StepStatus::Skipped).map(|at| at.0)),
                    "data": step.record.and_then(|record| record.data.clone()),
                })
            })
            .collect();
        json!({
            "__typename": "FlowState",
            "id": self.id_text(),
            "userId": self.0.subject.user_id(),
            "groupId": self.0.subject.group_id(),
            "flow": state.flow,
            "version": state.version,
            "status": state.status.as_str(),
            "currentStepIndex": state.current_step,
            "currentStep": self.current_step_key(),
            "steps": steps,
            "doneSteps": count(state.done_steps(self.0.version())),
            "totalSteps": count(self.0.version().steps.len()),
            "startedAt": time(state.started_at),
            "completedAt": time(state.completed_at),
            "dismissedAt": time(state.dismissed_at),
            "snoozedUntil": time(state.snoozed_until),
            "revision": state.revision,
            "createdAt": time(Some(state.created_at)),
            "updatedAt": time(Some(state.updated_at)),
        })
    }
}

/// One user's, or one group's, progress in one flow.
#[Object(name = "FlowState", serial)]
impl FlowState {
    /// Stable, unique across every user's and group's states; clients cache
    /// by it: `<userId>/<flow>` for a user's, `group:<groupId>/<flow>` for a
    /// group's.
    async fn id(&self) -> ID {
        ID(self.id_text())
    }

    /// The user this state belongs to; for a group's state, the user asking
    /// (the caller, or the user an admin names).
    async fn user_id(&self) -> &str {
        self.0.subject.user_id()
    }

    /// The group whose progress this is; null for a USER flow.
    async fn group_id(&self) -> Option<&str> {
        self.0.subject.group_id()
    }

    /// The flow's key.
    async fn flow(&self) -> &str {
        &self.0.state.flow
    }

    /// The version of the flow the user is on.
    async fn version(&self) -> i32 {
        self.0.state.version
    }

    /// Where the user is in the flow.
    async fn status(&self) -> FlowStatusValue {
        self.0.state.status.into()
    }

    /// Index of the current step in the version's steps, from 0.
    async fn current_step_index(&self) -> i32 {
        self.0.state.current_step
    }

    /// Key of the current step; null when every step is done, or the flow has no declared steps.
    async fn current_step(&self) -> Option<&str> {
        self.current_step_key()
    }

    /// Each step of the version, in order, with the user's progress in it.
    async fn steps(&self) -> Vec<StepState<'_>> {
        self.step_states()
    }

    /// Steps completed or skipped.
    async fn done_steps(&self) -> i32 {
        count(self.0.state.done_steps(self.0.version()))
    }

    /// The number of steps in the version.
    async fn total_steps(&self) -> i32 {
        count(self.0.version().steps.len())
    }

    /// When the user started the flow.
    async fn started_at(&self) -> Option<DateTime> {
        self.0.state.started_at.map(DateTime)
    }

    /// When the flow was completed; null unless it is.
    async fn completed_at(&self) -> Option<DateTime> {
        self.0.state.completed_at.map(DateTime)
    }

    /// When the user last dismissed the flow.
    async fn dismissed_at(&self) -> Option<DateTime> {
        self.0.state.dismissed_at.map(DateTime)
    }

    /// Until when the flow is snoozed; null once that has passed.
    async fn snoozed_until(&self) -> Option<DateTime> {
        self.0.state.snoozed_until.map(DateTime)
    }

    /// Incremented by every write; pass it back as expectedRevision.
    async fn revision(&self) -> i64 {
        self.0.state.revision
    }

    /// When the state was first created; never changes.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.state.created_at)
    }

    /// When the state last changed.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.state.updated_at)
    }
}

/// One recorded change of a user's state in a flow.
pub struct FlowEvent(pub(super) domain::FlowEvent);

/// One recorded change of a user's state in a flow.
#[Object(name = "FlowEvent", serial)]
impl FlowEvent {
    /// Unique, increasing in the order events were recorded.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The user whose state changed; for a group's event, the member (or admin) who changed it.
    async fn user_id(&self) -> &str {
        &self.0.user_id
    }

    /// The group whose progress changed; null for a USER flow.
    async fn group_id(&self) -> Option<&str> {
        self.0.group_id.as_deref()
    }

    /// The flow's key.
    async fn flow(&self) -> &str {
        &self.0.flow
    }

    /// The version the state was on after the change.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// What the change was.
    #[graphql(name = "type")]
    async fn kind(&self) -> FlowEventType {
        self.0.kind.into()
    }

    /// The step the change named, if any.
    async fn step(&self) -> Option<&str> {
        self.0.step.as_deref()
    }

    /// The `sub` of whoever made the change: the user, or an admin acting for them.
    async fn actor(&self) -> &str {
        &self.0.actor
    }

    /// The `x-request-id` of the request that made the change.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// When the change was made.
    async fn at(&self) -> DateTime {
        DateTime(self.0.at)
    }

    /// What came with the change: a step's data, a snooze's end, a policy.
    async fn data(&self) -> Option<Json> {
        self.0.data.clone().map(Json)
    }
}

/// An event and the cursor to page on from it.
#[derive(SimpleObject)]
#[graphql(name = "FlowEventEdge", serial)]
pub struct FlowEventEdge {
    /// Pass as `after` to get the events older than this one.
    cursor: String,
    /// The event.
    node: FlowEvent,
}

/// Where a page ends.
#[derive(SimpleObject)]
#[graphql(name = "PageInfo", serial)]
pub struct PageInfo {
    /// Whether older items follow.
    has_next_page: bool,
    /// The last edge's cursor; null for an empty page.
    end_cursor: Option<String>,
}

impl PageInfo {
    pub fn new(has_next_page: bool, end_cursor: Option<String>) -> Self {
        Self {
            has_next_page,
            end_cursor,
        }
    }
}

/// A page of events, newest first.
#[derive(SimpleObject)]
#[graphql(name = "FlowEventConnection", serial)]
pub struct FlowEventConnection {
    /// The events of this page.
    edges: Vec<FlowEventEdge>,
    /// Whether more follow, and the cursor to ask for them.
    page_info: PageInfo,
}

impl From<EventPage> for FlowEventConnection {
    fn from(page: EventPage) -> Self {
        let edges: Vec<FlowEventEdge> = page
            .events
            .into_iter()
            .map(|event| FlowEventEdge {
                cursor: event.id.to_string(),
                node: FlowEvent(event),
            })
            .collect();
        let end_cursor = edges.last().map(|edge| edge.cursor.clone());
        Self {
            edges,
            page_info: PageInfo {
                has_next_page: page.has_next_page,
                end_cursor,
            },
        }
    }
}

/// Everything the service keeps about one user.
#[derive(SimpleObject)]
#[graphql(name = "UserData", serial)]
pub struct UserDataObject {
    /// The user.
    user_id: String,
    /// Every flow state the user has.
    flow_states: Vec<FlowState>,
    /// The user's events, those they made in groups' states included,
    /// newest first: the whole history up to 100 events, else the newest 100
    /// (see `eventsPageInfo`).
    events: Vec<FlowEvent>,
    /// Whether older events follow `events`; when they do, page on with
    /// `exportUserData(userId: ..., after: eventsPageInfo.endCursor)`, or
    /// export the whole history with `onboarding users export USER`.
    events_page_info: PageInfo,
}

impl From<UserData> for UserDataObject {
    fn from(data: UserData) -> Self {
        let FlowEventConnection { edges, page_info } = data.events.into();
        Self {
            user_id: data.user_id,
            flow_states: data.flow_states.into_iter().map(FlowState).collect(),
            events: edges.into_iter().map(|edge| edge.node).collect(),
            events_page_info: page_info,
        }
    }
}

/// What erasing a user removed.
#[derive(SimpleObject)]
#[graphql(name = "DeletedUserData", serial)]
pub struct DeletedUserData {
    /// The user, now as if never seen.
    user_id: String,
    /// Flow states removed (the original onboarding state included).
    flow_states: i32,
    /// Events removed.
    events: i32,
    /// Idempotency records removed.
    idempotency_keys: i32,
    /// Events in other users' histories whose actor was this user (an admin
    /// acting for them), now with the actor `(erased)`.
    events_anonymized: i32,
    /// Events in groups' histories whose actor was this user, now anonymized: their actor `(erased)`, their data cleared.
    group_events_anonymized: i32,
}

fn rows(rows: u64) -> i32 {
    i32::try_from(rows).unwrap_or(i32::MAX)
}

pub(super) fn deleted(user_id: String, erased: Erased) -> DeletedUserData {
    DeletedUserData {
        user_id,
        flow_states: rows(erased.flow_states),
        events: rows(erased.events),
        idempotency_keys: rows(erased.idempotency_keys),
        events_anonymized: rows(erased.events_anonymized),
        group_events_anonymized: rows(erased.group_events_anonymized),
    }
}

/// Everything the service keeps about one group.
#[derive(SimpleObject)]
#[graphql(name = "GroupData", serial)]
pub struct GroupDataObject {
    /// The group.
    group_id: String,
    /// The group's state in every GROUP flow it has one in.
    flow_states: Vec<FlowState>,
    /// The group's events, newest first: the whole history up to 100
    /// events, else the newest 100 (see `eventsPageInfo`).
    events: Vec<FlowEvent>,
    /// Whether older events follow `events`; when they do, page on with
    /// `exportGroupData(groupId: ..., after: eventsPageInfo.endCursor)`, or
    /// export the whole history with `onboarding groups export GROUP`.
    events_page_info: PageInfo,
}

impl From<GroupData> for GroupDataObject {
    fn from(data: GroupData) -> Self {
        let FlowEventConnection { edges, page_info } = data.events.into();
        Self {
            group_id: data.group_id,
            flow_states: data.flow_states.into_iter().map(FlowState).collect(),
            events: edges.into_iter().map(|edge| edge.node).collect(),
            events_page_info: page_info,
        }
    }
}

/// What erasing a group removed.
#[derive(SimpleObject)]
#[graphql(name = "DeletedGroupData", serial)]
pub struct DeletedGroupData {
    /// The group, now as if never seen.
    group_id: String,
    /// Flow states removed.
    flow_states: i32,
    /// Events removed.
    events: i32,
    /// Idempotency records of writes to the group's states removed.
    idempotency_keys: i32,
}

pub(super) fn deleted_group(group_id: String, erased: ErasedGroup) -> DeletedGroupData {
    DeletedGroupData {
        group_id,
        flow_states: rows(erased.flow_states),
        events: rows(erased.events),
        idempotency_keys: rows(erased.idempotency_keys),
    }
}
