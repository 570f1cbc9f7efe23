//! The flow queries.

use async_graphql::{Context, Object, SimpleObject};

use super::flow::Flow;
use super::operations;
use super::state::{FlowEventConnection, FlowState, GroupDataObject, UserDataObject};
use crate::domain::{Error, Viewer};
use crate::graphql::client_error;

#[derive(Default)]
pub struct FlowQuery;

#[Object]
impl FlowQuery {
    /// The state in `flow`: the user's (the signed-in user's, or `userId`'s for an admin), or on a GROUP flow the group's. Created on first access.
    async fn flow_state(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key.")] flow: String,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The group, on a GROUP flow; a token naming exactly one group needs none."
        )]
        group_id: Option<String>,
    ) -> async_graphql::Result<FlowState> {
        let (flows, viewer) = operations(ctx)?;
        let view = flows.state(viewer, &flow, user_id, group_id).await;
        view.map(FlowState)
            .map_err(|error| client_error(ctx, error))
    }

    /// With groupId: that group's states in every GROUP flow. Without: the user's states in every USER flow (as before). NOT_STARTED where never touched; no rows are written.
    async fn flow_states(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(desc = "A group the caller belongs to (any group for an admin).")]
        group_id: Option<String>,
    ) -> async_graphql::Result<Vec<FlowState>> {
        let (flows, viewer) = operations(ctx)?;
        let views = flows.states(viewer, user_id, group_id).await;
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
            desc = "The group whose events to list (a GROUP flow's group; a token naming exactly one group needs none when `flow` is a GROUP flow)."
        )]
        group_id: Option<String>,
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
            let after = cursor(after)?;
            flows
                .events(
                    viewer,
                    flow.as_deref(),
                    user_id,
                    group_id,
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
        #[graphql(
            desc = "A cursor (`eventsPageInfo.endCursor`): the events older than it, to page on through a long history."
        )]
        after: Option<String>,
    ) -> async_graphql::Result<UserDataObject> {
        let (flows, viewer) = operations(ctx)?;
        let data = match cursor(after) {
            Ok(after) => flows.export(viewer, user_id, after).await,
            Err(error) => Err(error),
        };
        data.map(UserDataObject::from)
            .map_err(|error| client_error(ctx, error))
    }

    /// Every flow state and event of the group (its members, or an admin).
    async fn export_group_data(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The group.")] group_id: String,
        #[graphql(
            desc = "A cursor (`eventsPageInfo.endCursor`): the events older than it, to page on through a long history."
        )]
        after: Option<String>,
    ) -> async_graphql::Result<GroupDataObject> {
        let (flows, viewer) = operations(ctx)?;
        let data = match cursor(after) {
            Ok(after) => flows.export_group(viewer, group_id, after).await,
            Err(error) => Err(error),
        };
        data.map(GroupDataObject::from)
            .map_err(|error| client_error(ctx, error))
    }

    /// Who is asking, as the token says.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<ViewerObject> {
        let (_, viewer) = operations(ctx)?;
        match viewer {
            Viewer::Anonymous => Err(client_error(ctx, Error::Unauthenticated)),
            Viewer::User { id, admin, groups } => Ok(ViewerObject {
                user_id: id.as_str().to_owned(),
                is_admin: *admin,
                group_ids: groups
                    .iter()
                    .map(|group| group.as_str().to_owned())
                    .collect(),
            }),
        }
    }
}

/// Who is asking, as the token says.
#[derive(SimpleObject)]
#[graphql(name = "Viewer", serial)]
pub struct ViewerObject {
    /// The token's user (its user claim, JWT_USER_CLAIM).
    user_id: String,
    /// Whether the token carries the admin role.
    is_admin: bool,
    /// The groups the token names, in its order (its groups claim, JWT_GROUPS_CLAIM).
    group_ids: Vec<String>,
}

/// The event id a cursor this API gave stands for.
fn cursor(after: Option<String>) -> Result<Option<i64>, Error> {
    after
        .map(|cursor| {
            cursor.parse::<i64>().map_err(|_| {
                Error::BadUserInput(format!(
                    "`after` is not a cursor this API gave: {cursor:?}; pass a \
                     `pageInfo.endCursor` or `cursor` as it came."
                ))
            })
        })
        .transpose()
}
