//! Flows in the schema: thin resolvers over `service::Flows`, and the types
//! clients generate code from (names fixed by the flows contract).

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use super::scalars::{DateTime, Json};
use super::{client_error, request_id};
use crate::db::Erased;
use crate::domain::{
    self, Error, EventType, FlowChange, FlowDeclaration, FlowStatus, Reonboarding, StepDeclaration,
    StepRecord, StepStatus, Viewer,
};
use crate::service::{EventPage, FlowStateView, Flows, UserData, WriteOptions};

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

/// One step of a flow's version.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "FlowStep", serial)]
pub struct FlowStep {
    /// Stable key: what clients pass to completeStep and the like.
    key: String,
    /// What the user sees.
    title: String,
    /// An optional step is not needed for the flow to complete.
    optional: bool,
}

impl From<&StepDeclaration> for FlowStep {
    fn from(step: &StepDeclaration) -> Self {
        Self {
            key: step.key.clone(),
            title: step.title.clone(),
            optional: step.optional,
        }
    }
}

/// One published version of a flow; versions never change.
pub struct FlowVersion(domain::FlowVersion);

/// One published version of a flow; versions never change.
#[Object(name = "FlowVersion", serial)]
impl FlowVersion {
    /// From 1, one up at each publish that changed the title or the steps.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// The flow's title in this version.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// The steps, in order.
    async fn steps(&self) -> Vec<FlowStep> {
        self.0.steps.iter().map(FlowStep::from).collect()
    }

    /// What publishing this version did to users already in the flow.
    async fn reonboarding(&self) -> ReonboardingPolicy {
        self.0.reonboarding.into()
    }

    /// When this version was published.
    async fn published_at(&self) -> DateTime {
        DateTime(self.0.published_at)
    }
}

/// A published flow: its latest version, and every version.
pub struct Flow(domain::Flow);

/// A published flow: its latest version, and every version.
#[Object(name = "Flow", serial)]
impl Flow {
    /// The flow's key, e.g. `welcome-tour`.
    async fn key(&self) -> &str {
        self.0.key()
    }

    /// The latest version's title.
    async fn title(&self) -> &str {
        &self.0.latest().title
    }

    /// The latest version's number.
    async fn version(&self) -> i32 {
        self.0.latest().version
    }

    /// The latest version's steps, in order.
    async fn steps(&self) -> Vec<FlowStep> {
        self.0.latest().steps.iter().map(FlowStep::from).collect()
    }

    /// When the latest version was published.
    async fn published_at(&self) -> DateTime {
        DateTime(self.0.latest().published_at)
    }

    /// Every version, oldest first.
    async fn versions(&self) -> Vec<FlowVersion> {
        self.0.versions.iter().cloned().map(FlowVersion).collect()
    }
}

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
}

/// One user's progress in one step.
#[Object(name = "StepState", serial)]
impl StepState<'_> {
    /// The step's key.
    async fn key(&self) -> &str {
        &self.step.key
    }

    /// Not started, completed or skipped.
    async fn status(&self) -> StepStatusValue {
        self.record
            .map_or(StepStatus::NotStarted, |record| record.status)
            .into()
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

/// One user's progress in one flow.
pub struct FlowState(FlowStateView);

/// One user's progress in one flow.
#[Object(name = "FlowState", serial)]
impl FlowState {
    /// `<userId>/<flow>`: stable, unique; clients cache by it.
    async fn id(&self) -> ID {
        ID(format!("{}/{}", self.0.state.user_id, self.0.state.flow))
    }

    /// The user this state belongs to.
    async fn user_id(&self) -> &str {
        &self.0.state.user_id
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
        let index = usize::try_from(self.0.state.current_step).ok()?;
        self.0
            .version()
            .steps
            .get(index)
            .map(|step| step.key.as_str())
    }

    /// Each step of the version, in order, with the user's progress in it.
    async fn steps(&self) -> Vec<StepState<'_>> {
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
pub struct FlowEvent(domain::FlowEvent);

/// One recorded change of a user's state in a flow.
#[Object(name = "FlowEvent", serial)]
impl FlowEvent {
    /// Unique, increasing in the order events were recorded.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The user whose state changed.
    async fn user_id(&self) -> &str {
        &self.0.user_id
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
    /// Whether older events follow.
    has_next_page: bool,
    /// The last edge's cursor; null for an empty page.
    end_cursor: Option<String>,
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
    /// The user's events, newest first: the whole history up to 100 events,
    /// else the newest 100 (see `eventsPageInfo`).
    events: Vec<FlowEvent>,
    /// Whether older events follow `events`; when they do, page on with
    /// `flowEvents(userId: ..., after: eventsPageInfo.endCursor)`, or export
    /// the whole history with `onboarding users export USER`.
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
}

/// One step of a declaration.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "FlowStepInput")]
pub struct FlowStepInput {
    /// `[a-z0-9][a-z0-9_-]{0,63}`, unique in the flow.
    key: String,
    /// What the user sees.
    title: String,
    /// An optional step is not needed for the flow to complete.
    #[graphql(default_with = "Some(false)")]
    optional: Option<bool>,
}

/// A flow declaration to publish.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "PublishFlowInput")]
pub struct PublishFlowInput {
    /// `[a-z0-9][a-z0-9_-]{0,63}`.
    key: String,
    /// The flow's title.
    title: String,
    /// 1 to 100 steps, in order.
    steps: Vec<FlowStepInput>,
    /// What a new version does to users already in the flow.
    #[graphql(default_with = "Some(ReonboardingPolicy::Keep)")]
    reonboarding: Option<ReonboardingPolicy>,
}

impl From<PublishFlowInput> for FlowDeclaration {
    fn from(input: PublishFlowInput) -> Self {
        Self {
            key: input.key,
            title: input.title,
            steps: input
                .steps
                .into_iter()
                .map(|step| StepDeclaration {
                    key: step.key,
                    title: step.title,
                    optional: step.optional.unwrap_or(false),
                })
                .collect(),
            reonboarding: input.reonboarding.unwrap_or_default().into(),
        }
    }
}

#[derive(Default)]
pub struct FlowQuery;

#[Object]
impl FlowQuery {
    /// The user's state in `flow` (the signed-in user's, or `userId`'s for an admin). Created on first access.
    async fn flow_state(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let (flows, viewer) = operations(ctx)?;
        let view = flows.state(viewer, &flow, user_id).await;
        view.map(FlowState)
            .map_err(|error| client_error(ctx, error))
    }

    /// Every published flow for that user (NOT_STARTED where never touched; no rows are written).
    async fn flow_states(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
    ) -> async_graphql::Result<Vec<FlowState>> {
        let (flows, viewer) = operations(ctx)?;
        let views = flows.states(viewer, user_id).await;
        views
            .map(|views| views.into_iter().map(FlowState).collect())
            .map_err(|error| client_error(ctx, error))
    }

    /// Every published flow, by key.
    async fn flows(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Flow>> {
        let (flows, viewer) = operations(ctx)?;
        let published = flows.flows(viewer).await;
        published
            .map(|published| published.into_iter().map(Flow).collect())
            .map_err(|error| client_error(ctx, error))
    }

    /// The published flow `key`, with every version; null when there is none.
    async fn flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] key: String,
    ) -> async_graphql::Result<Option<Flow>> {
        let (flows, viewer) = operations(ctx)?;
        let flow = flows.flow(viewer, &key).await;
        flow.map(|flow| flow.map(Flow))
            .map_err(|error| client_error(ctx, error))
    }

    /// Newest first.
    async fn flow_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "One flow's events; every flow's when left out.")] flow: Option<String>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            default = 20,
            desc = "How many events, 1 to 100 (20 when left out or null)."
        )]
        first: Option<i32>,
        #[graphql(desc = "A cursor (`pageInfo.endCursor`): the events older than it.")]
        after: Option<String>,
    ) -> async_graphql::Result<FlowEventConnection> {
        let (flows, viewer) = operations(ctx)?;
        let page = async {
            let after = after
                .map(|cursor| {
                    cursor.parse::<i64>().map_err(|_| {
                        Error::BadUserInput(format!(
                            "`after` is not a cursor this API gave: {cursor:?}; pass a \
                             `pageInfo.endCursor` or `cursor` as it came."
                        ))
                    })
                })
                .transpose()?;
            flows
                .events(
                    viewer,
                    flow.as_deref(),
                    user_id,
                    i64::from(first.unwrap_or(20)),
                    after,
                )
                .await
        };
        page.await
            .map(FlowEventConnection::from)
            .map_err(|error| client_error(ctx, error))
    }

    /// Every flow state and event of the user (the signed-in user, or `userId` for an admin).
    async fn export_user_data(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
    ) -> async_graphql::Result<UserDataObject> {
        let (flows, viewer) = operations(ctx)?;
        let data = flows.export(viewer, user_id).await;
        data.map(UserDataObject::from)
            .map_err(|error| client_error(ctx, error))
    }
}

#[derive(Default)]
pub struct FlowMutation;

#[Object]
impl FlowMutation {
    /// Admins only. Publishes a new version when the title or the steps changed; the same content again creates nothing.
    async fn publish_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The declaration.")] input: PublishFlowInput,
    ) -> async_graphql::Result<Flow> {
        let (flows, viewer) = operations(ctx)?;
        let flow = flows.publish(viewer, input.into()).await;
        flow.map(Flow).map_err(|error| client_error(ctx, error))
    }

    /// NOT_STARTED, SNOOZED or DISMISSED -> IN_PROGRESS; a completed flow stays completed.
    async fn start_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        write(
            ctx,
            flow,
            user_id,
            Ok(FlowChange::Start),
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Completes `step` (with the user's `data`); the current step moves to the next not done, and the flow completes once every required step is done.
    #[allow(clippy::too_many_arguments)]
    async fn complete_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "The step's key.")] step: String,
        #[graphql(
            desc = "A JSON object of at most 4 KiB, e.g. the answers given at this step; replaces earlier data."
        )]
        data: Option<Json>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = match data.map(|data| data.0) {
            None => Ok(FlowChange::CompleteStep { step, data: None }),
            Some(serde_json::Value::Object(data)) => Ok(FlowChange::CompleteStep {
                step,
                data: Some(data),
            }),
            Some(_) => Err(Error::BadUserInput(
                "`data` must be a JSON object, e.g. {\"role\": \"developer\"}.".to_owned(),
            )),
        };
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Skips `step`, which counts as done.
    async fn skip_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "The step's key.")] step: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = Ok(FlowChange::SkipStep { step });
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Makes `step` the current step.
    async fn go_to_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "The step's key.")] step: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = Ok(FlowChange::GoToStep { step });
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// COMPLETED now, whatever steps are left.
    async fn complete_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = Ok(FlowChange::Complete);
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// DISMISSED: the user closed the flow without finishing.
    async fn dismiss_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = Ok(FlowChange::Dismiss);
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// SNOOZED until `until` (in the future, at most a year ahead); reads IN_PROGRESS after it.
    #[allow(clippy::too_many_arguments)]
    async fn snooze_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "When the snooze ends.")] until: DateTime,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = Ok(FlowChange::Snooze { until: until.0 });
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Back to NOT_STARTED on the latest version, every step state cleared.
    async fn restart_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The revision the change is based on; when the state has moved on, nothing changes and the error (CONFLICT) carries the current revision."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, unique per change: a retry with the same key returns the first result and changes nothing."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let change = Ok(FlowChange::Restart);
        write(
            ctx,
            flow,
            user_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Admins only. Erases every row of the user (flow states, events, idempotency records) in one transaction.
    async fn delete_user_data(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to erase.")] user_id: String,
    ) -> async_graphql::Result<DeletedUserData> {
        let (flows, viewer) = operations(ctx)?;
        let erased = flows.erase(viewer, user_id.clone()).await;
        erased
            .map(|erased| deleted(user_id, erased))
            .map_err(|error| client_error(ctx, error))
    }
}

/// Applies a change once the viewer is known to be signed in.
async fn write(
    ctx: &Context<'_>,
    flow: String,
    user_id: Option<String>,
    change: Result<FlowChange, Error>,
    expected_revision: Option<i32>,
    idempotency_key: Option<String>,
) -> async_graphql::Result<FlowState> {
    let (flows, viewer) = operations(ctx)?;
    let result = match (viewer, change) {
        (Viewer::Anonymous, _) => Err(Error::Unauthenticated),
        (_, Err(error)) => Err(error),
        (viewer, Ok(change)) => {
            let options = WriteOptions {
                expected_revision: expected_revision.map(i64::from),
                idempotency_key,
                request_id: request_id(ctx),
            };
            flows.change(viewer, &flow, user_id, change, options).await
        }
    };
    result
        .map(FlowState)
        .map_err(|error| client_error(ctx, error))
}

fn operations<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Flows, &'a Viewer)> {
    let internal =
        |error: async_graphql::Error| client_error(ctx, Error::Internal(error.message.into()));
    Ok((
        ctx.data::<Flows>().map_err(internal)?,
        ctx.data::<Viewer>().map_err(internal)?,
    ))
}

fn deleted(user_id: String, erased: Erased) -> DeletedUserData {
    let count = |rows: u64| i32::try_from(rows).unwrap_or(i32::MAX);
    DeletedUserData {
        user_id,
        flow_states: count(erased.flow_states),
        events: count(erased.events),
        idempotency_keys: count(erased.idempotency_keys),
        events_anonymized: count(erased.events_anonymized),
    }
}

/// Counts below `MAX_STEPS` fit in a GraphQL Int.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
