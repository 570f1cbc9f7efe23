//! The flow mutations.

use async_graphql::{Context, ErrorExtensions, Object};

use super::flow::{Flow, PublishFlowInput};
use super::operations;
use super::state::{DeletedGroupData, DeletedUserData, FlowState, deleted, deleted_group};
use crate::domain::{Error, FlowChange, Viewer};
use crate::graphql::scalars::{DateTime, Json};
use crate::graphql::{client_error, request_id};
use crate::service::WriteOptions;

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
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
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
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Skips `step`, which counts as done.
    #[allow(clippy::too_many_arguments)]
    async fn skip_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "The step's key.")] step: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Makes `step` the current step.
    #[allow(clippy::too_many_arguments)]
    async fn go_to_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "The step's key.")] step: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
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
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
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
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
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
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
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
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
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
            group_id,
            change,
            expected_revision,
            idempotency_key,
        )
        .await
    }

    /// Admins only. Erases every row of the group (flow states, events, idempotency records) in one transaction.
    async fn delete_group_data(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The group to erase.")] group_id: String,
    ) -> async_graphql::Result<DeletedGroupData> {
        let (flows, viewer) = operations(ctx)?;
        let erased = flows.erase_group(viewer, group_id.clone()).await;
        erased
            .map(|erased| deleted_group(group_id, erased))
            .map_err(|error| client_error(ctx, error))
    }

    /// Admins only. Erases every row of the user (flow states, events, idempotency records) in one transaction; anonymizes them in groups' histories.
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
    group_id: Option<String>,
    change: Result<FlowChange, Error>,
    expected_revision: Option<i32>,
    idempotency_key: Option<String>,
) -> async_graphql::Result<FlowState> {
    let (flows, viewer) = operations(ctx)?;
    // Signing in is checked first, before the change's own arguments.
    let result = match (viewer, change) {
        (Viewer::Anonymous, _) => Err(Error::Unauthenticated),
        (_, Err(error)) => Err(error),
        (viewer, Ok(change)) => {
            let options = WriteOptions {
                expected_revision: expected_revision.map(i64::from),
                idempotency_key,
                request_id: request_id(ctx),
            };
            flows
                .change(viewer, &flow, user_id, group_id, change, options)
                .await
        }
    };
    match result {
        Ok(view) => Ok(FlowState(view)),
        Err(mut error) => {
            let current_state = match &mut error {
                Error::Conflict { current_state, .. } => current_state.take(),
                _ => None,
            };
            let refused = client_error(ctx, error);
            let Some(state) = current_state else {
                return Err(refused);
            };
            // The state as a read would give it, for the client to redraw.
            match flows.view_of(viewer, *state).await {
                Ok(view) => {
                    let json = FlowState(view).to_json();
                    Err(refused.extend_with(|_, extensions| {
                        if let Ok(value) = async_graphql::Value::from_json(json) {
                            extensions.set("currentState", value);
                        }
                    }))
                }
                Err(_) => Err(refused),
            }
        }
    }
}
