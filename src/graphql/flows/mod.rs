//! Flows in the schema: thin resolvers over `service::Flows`, and the types
//! clients generate code from (names fixed by the flows contract).

mod enums;
mod flow;
mod mutation;
mod query;
mod state;
mod subscription;

use async_graphql::Context;

use super::client_error;
use crate::domain::{Error, Viewer};
use crate::service::Flows;
pub use mutation::FlowMutation;
pub use query::FlowQuery;
pub use state::PageInfo;
pub use subscription::FlowSubscription;

fn operations<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Flows, &'a Viewer)> {
    let internal =
        |error: async_graphql::Error| client_error(ctx, Error::Internal(error.message.into()));
    Ok((
        ctx.data::<Flows>().map_err(internal)?,
        ctx.data::<Viewer>().map_err(internal)?,
    ))
}

/// Counts below `MAX_STEPS` fit in a GraphQL Int.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
