//! The flow queries.

use async_graphql::{Context, Object};

use super::flow::Flow;
use super::operations;
use super::state::{FlowEventConnection, FlowState, UserDataObject};
use crate::domain::Error;
use crate::graphql::client_error;

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
