//! The GraphQL schema: thin resolvers that hand each field to the domain.
//! Descriptions here are what client developers read in GraphiQL and codegen.
//!
//! Output objects resolve their fields `serial`ly: each field reads data
//! already loaded, so resolving them concurrently would only add a task per
//! field to every response.

pub mod document;
mod flows;
mod scalars;
mod webhooks;

use async_graphql::{
    Context, ErrorExtensions, ID, MergedObject, MergedSubscription, Object, SDLExportOptions,
    Schema, SchemaBuilder, ValidationMode,
};

use crate::domain::{Change, Error, OnboardingState, Step, Viewer};
use crate::service::{Flows, Onboarding, Webhooks, WriteOptions};
use flows::{FlowMutation, FlowQuery, FlowSubscription};
pub use scalars::DateTime;
use webhooks::{WebhookMutation, WebhookQuery};

pub type OnboardingSchema = Schema<Query, Mutation, Subscription>;

/// Deepest selection nesting a query may have; the real schema needs 2, the
/// introspection query that GraphiQL and codegen send needs 13.
const MAX_DEPTH: usize = 16;
/// Most fields a single query may select, introspection included.
const MAX_COMPLEXITY: usize = 1000;

/// The request id of the HTTP request being executed, for error reports.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The operations the schema resolves against.
#[derive(Debug, Clone)]
pub struct Operations {
    pub onboarding: Onboarding,
    pub flows: Flows,
    pub webhooks: Webhooks,
}

/// The schema, with the operations it resolves against.
pub fn schema(operations: Option<Operations>) -> OnboardingSchema {
    builder(operations).finish()
}

/// The same schema for documents that passed its validation before, sent
/// again as they were then (`DocumentCache`): it checks only the limits,
/// which the full validation of the same document would find the same.
pub fn schema_for_valid_documents(operations: Operations) -> OnboardingSchema {
    builder(Some(operations))
        .validation_mode(ValidationMode::Fast)
        .finish()
}

fn builder(operations: Option<Operations>) -> SchemaBuilder<Query, Mutation, Subscription> {
    let builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(document::MAX_DEPTH)
    .limit_directives(document::MAX_DIRECTIVES);
    match operations {
        Some(operations) => builder
            .data(operations.onboarding)
            .data(operations.flows)
            .data(operations.webhooks),
        None => builder,
    }
}

/// The schema in SDL, as `onboarding schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    let options = SDLExportOptions::new()
        .prefer_single_line_descriptions()
        .use_space_ident()
        .indent_width(2);
    schema(None).sdl_with_options(options)
}

/// Onboarding progress of one user.
#[Object(name = "OnboardingState", serial)]
impl OnboardingState {
    /// Stable, unique per user: clients cache by it.
    async fn id(&self) -> ID {
        ID(self.user_id.clone())
    }

    /// The user this state belongs to (the `sub` of their token).
    async fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Whether the user has finished onboarding.
    async fn is_completed(&self) -> bool {
        self.is_completed
    }

    /// The step the user is on, counted from 0.
    async fn current_step(&self) -> i32 {
        self.current_step
    }

    /// When the user finished onboarding; null until then and after a reset.
    async fn completed_at(&self) -> Option<DateTime> {
        self.completed_at.map(DateTime)
    }

    /// When the state was first created; never changes.
    async fn created_at(&self) -> DateTime {
        DateTime(self.created_at)
    }

    /// When the state last changed; every write moves it.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.updated_at)
    }

    /// Incremented by every write; pass it back as expectedRevision.
    async fn revision(&self) -> i64 {
        self.revision
    }
}

/// Every query: the original onboarding state's, the flows' and the webhooks'.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct Query(OnboardingQuery, FlowQuery, WebhookQuery);

/// Every mutation: the original onboarding state's, the flows' and the webhooks'.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct Mutation(OnboardingMutation, FlowMutation, WebhookMutation);

/// Every subscription: the flows' live states.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct Subscription(FlowSubscription);

#[derive(Default)]
pub struct OnboardingQuery;

#[Object]
impl OnboardingQuery {
    /// The signed-in user's state, or `userId`'s for an admin. Created on first access.
    async fn onboarding_state(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
    ) -> async_graphql::Result<OnboardingState> {
        let (onboarding, viewer) = operations(ctx)?;
        onboarding
            .state(viewer, user_id)
            .await
            .map_err(|error| client_error(ctx, error))
    }
}

#[derive(Default)]
pub struct OnboardingMutation;

#[Object]
impl OnboardingMutation {
    /// isCompleted = true, currentStep = step, completedAt = now (as the Django original).
    async fn complete_onboarding(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0, desc = "The step the user finished on; 0 or greater.")] step: i32,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The `revision` last read: when the state has moved on since, nothing changes and the error is a CONFLICT carrying `currentRevision`."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, one per user action: a retry with the same key returns the first answer and changes nothing; the same key with other arguments is a CONFLICT."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<OnboardingState> {
        let checks = (expected_revision, idempotency_key);
        change(
            ctx,
            user_id,
            Step::parse(step).map(Change::Complete),
            checks,
        )
        .await
    }

    /// currentStep = step; isCompleted and completedAt unchanged.
    async fn set_onboarding_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The step the user is on now; 0 or greater.")] step: i32,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The `revision` last read: when the state has moved on since, nothing changes and the error is a CONFLICT carrying `currentRevision`."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, one per user action: a retry with the same key returns the first answer and changes nothing; the same key with other arguments is a CONFLICT."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<OnboardingState> {
        let checks = (expected_revision, idempotency_key);
        change(ctx, user_id, Step::parse(step).map(Change::SetStep), checks).await
    }

    /// isCompleted = false, currentStep = 0, completedAt = null.
    async fn reset_onboarding(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Another user's id; only admins may pass one other than their own.")]
        user_id: Option<String>,
        #[graphql(
            desc = "The `revision` last read: when the state has moved on since, nothing changes and the error is a CONFLICT carrying `currentRevision`."
        )]
        expected_revision: Option<i32>,
        #[graphql(
            desc = "1 to 255 bytes, one per user action: a retry with the same key returns the first answer and changes nothing; the same key with other arguments is a CONFLICT."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<OnboardingState> {
        let checks = (expected_revision, idempotency_key);
        change(ctx, user_id, Ok(Change::Reset), checks).await
    }
}

/// Applies a change once the viewer is known to be signed in: an anonymous
/// caller hears UNAUTHENTICATED before any complaint about its arguments.
async fn change(
    ctx: &Context<'_>,
    user_id: Option<String>,
    change: Result<Change, Error>,
    (expected_revision, idempotency_key): (Option<i32>, Option<String>),
) -> async_graphql::Result<OnboardingState> {
    let (onboarding, viewer) = operations(ctx)?;
    let result = match (viewer, change) {
        (Viewer::Anonymous, _) => Err(Error::Unauthenticated),
        (_, Err(error)) => Err(error),
        (viewer, Ok(change)) => {
            let options = WriteOptions {
                expected_revision: expected_revision.map(i64::from),
                idempotency_key,
                request_id: request_id(ctx),
            };
            onboarding.apply(viewer, user_id, change, options).await
        }
    };
    result.map_err(|error| client_error(ctx, error))
}

/// What every resolver needs from the request. Their absence is a wiring
/// fault, reported like any internal error: every error a resolver returns
/// carries a code, which is how `http::graphql_over_http` tells them from request errors.
fn operations<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Onboarding, &'a Viewer)> {
    let internal =
        |error: async_graphql::Error| client_error(ctx, Error::Internal(error.message.into()));
    Ok((
        ctx.data::<Onboarding>().map_err(internal)?,
        ctx.data::<Viewer>().map_err(internal)?,
    ))
}

/// The request's id, for events and error reports.
fn request_id(ctx: &Context<'_>) -> Option<String> {
    ctx.data_opt::<RequestId>().map(|id| id.0.clone())
}

fn client_error(ctx: &Context<'_>, error: Error) -> async_graphql::Error {
    let request_id = ctx.data_opt::<RequestId>().map(|id| id.0.as_str());
    into_graphql(error, request_id)
}

/// Turns an error into what the client sees. Server-side failures are logged
/// here, in full, with the request id that the client is also given.
fn into_graphql(error: Error, request_id: Option<&str>) -> async_graphql::Error {
    let code = error.code();
    let server_side = error.is_server_side();
    let current_revision = match &error {
        Error::Conflict {
            current_revision, ..
        } => *current_revision,
        _ => None,
    };
    if server_side {
        let detail = std::error::Error::source(&error).map(ToString::to_string);
        tracing::error!(request_id, error = detail, "request failed: {error}");
    }
    async_graphql::Error::new(error.to_string()).extend_with(|_, extensions| {
        extensions.set("code", code);
        if let Some(revision) = current_revision {
            extensions.set("currentRevision", revision);
        }
        if let (true, Some(id)) = (server_side, request_id) {
            extensions.set("requestId", id);
        }
    })
}
