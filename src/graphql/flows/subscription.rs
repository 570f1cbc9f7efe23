//! The flow subscription (names fixed by the live contract).

use async_graphql::{Context, Subscription};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::operations;
use super::state::FlowState;
use crate::graphql::{RequestId, client_error, into_graphql};

#[derive(Default)]
pub struct FlowSubscription;

#[Subscription]
impl FlowSubscription {
    /// The state now, then the state after every change, for one flow (flow given) or every flow of the user or group (flow null). Each message is a whole FlowState; `revision` tells a client which is newest. Under load intermediate revisions may be skipped, never the newest. Ends when the user's or group's data is erased.
    async fn flow_state_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key; null for every flow of the user, or of the group.")]
        flow: Option<String>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The group, on a GROUP flow (or, with flow null, every GROUP flow of the group); a token naming exactly one group needs none for a GROUP flow."
        )]
        group_id: Option<String>,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<FlowState>>> {
        let (flows, viewer) = operations(ctx)?;
        let request_id = ctx.data_opt::<RequestId>().map(|id| id.0.clone());
        let states = flows
            .watch(viewer, flow.as_deref(), user_id, group_id)
            .await
            .map_err(|error| client_error(ctx, error))?;
        Ok(states
            .map(move |state| {
                state
                    .map(FlowState)
                    .map_err(|error| into_graphql(error, request_id.as_deref()))
            })
            .boxed())
    }
}
