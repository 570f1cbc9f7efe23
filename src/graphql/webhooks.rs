//! Webhooks in the schema: thin resolvers over `service::Webhooks`, with
//! the names the webhooks contract fixes.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use serde_json::Value;

use super::client_error;
use super::flows::PageInfo;
use super::scalars::DateTime;
use crate::db::{StoredEndpoint, StoredMessage};
use crate::domain::{Error, Viewer};
use crate::service::{EndpointInput, MessagePage, Webhooks};

fn operations<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Webhooks, &'a Viewer)> {
    let internal =
        |error: async_graphql::Error| client_error(ctx, Error::Internal(error.message.into()));
    Ok((
        ctx.data::<Webhooks>().map_err(internal)?,
        ctx.data::<Viewer>().map_err(internal)?,
    ))
}

/// Where change messages go: an admin's registered receiver.
#[derive(SimpleObject)]
#[graphql(name = "WebhookEndpoint", serial)]
pub struct WebhookEndpoint {
    id: ID,
    url: String,
    description: Option<String>,
    /// Event types delivered; empty means every type.
    event_types: Vec<String>,
    /// Flows delivered; empty means every flow.
    flows: Vec<String>,
    enabled: bool,
    /// Why it was disabled (410 from the receiver, failing too long, an admin), when it is.
    disabled_reason: Option<String>,
    created_at: DateTime,
}

impl From<StoredEndpoint> for WebhookEndpoint {
    fn from(endpoint: StoredEndpoint) -> Self {
        Self {
            id: ID(endpoint.id),
            url: endpoint.url,
            description: endpoint.description,
            event_types: endpoint.event_types,
            flows: endpoint.flows,
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason,
            created_at: DateTime(endpoint.created_at),
        }
    }
}

/// Returned once, when the secret is made; never readable again.
#[derive(SimpleObject)]
#[graphql(name = "WebhookEndpointWithSecret", serial)]
pub struct WebhookEndpointWithSecret {
    endpoint: WebhookEndpoint,
    /// `whsec_` and base64: give it to the receiver's Standard Webhooks library.
    secret: String,
}

impl From<StoredEndpoint> for WebhookEndpointWithSecret {
    fn from(endpoint: StoredEndpoint) -> Self {
        Self {
            secret: endpoint.secret.clone(),
            endpoint: endpoint.into(),
        }
    }
}

/// Where a message stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "WebhookDeliveryStatus")]
pub enum WebhookDeliveryStatus {
    /// Not delivered yet: waiting for its first attempt or a retry.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Every attempt of the schedule failed.
    Failed,
}

impl WebhookDeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "SUCCEEDED" => Self::Succeeded,
            "FAILED" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// One try at delivering a message.
#[derive(SimpleObject)]
#[graphql(name = "WebhookAttempt", serial)]
pub struct WebhookAttempt {
    at: DateTime,
    /// The receiver's HTTP status; null when no answer came (refused, timed out, TLS).
    response_status: Option<i32>,
    /// Why it failed, in words; null on success.
    error: Option<String>,
    duration_ms: i32,
}

/// One change told to one endpoint.
#[derive(SimpleObject)]
#[graphql(name = "WebhookMessage", serial)]
pub struct WebhookMessage {
    /// The `webhook-id` header: the same on every attempt; receivers deduplicate by it.
    id: ID,
    endpoint_id: ID,
    event_type: String,
    status: WebhookDeliveryStatus,
    attempts: Vec<WebhookAttempt>,
    next_attempt_at: Option<DateTime>,
    created_at: DateTime,
}

impl From<StoredMessage> for WebhookMessage {
    fn from(message: StoredMessage) -> Self {
        let status = WebhookDeliveryStatus::parse(&message.status);
        let attempts: Vec<Value> = serde_json::from_str(&message.attempts).unwrap_or_default();
        Self {
            id: ID(message.id),
            endpoint_id: ID(message.endpoint_id),
            event_type: message.event_type,
            next_attempt_at: message
                .next_attempt_at
                .filter(|_| status == WebhookDeliveryStatus::Pending)
                .map(DateTime),
            status,
            attempts: attempts.iter().filter_map(attempt).collect(),
            created_at: DateTime(message.created_at),
        }
    }
}

fn attempt(stored: &Value) -> Option<WebhookAttempt> {
    let at = chrono::DateTime::parse_from_rfc3339(stored.get("at")?.as_str()?).ok()?;
    Some(WebhookAttempt {
        at: DateTime(at.with_timezone(&chrono::Utc)),
        response_status: stored
            .get("responseStatus")
            .and_then(Value::as_i64)
            .and_then(|status| i32::try_from(status).ok()),
        error: stored
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned),
        duration_ms: stored
            .get("durationMs")
            .and_then(Value::as_i64)
            .map_or(0, |ms| i32::try_from(ms).unwrap_or(i32::MAX)),
    })
}

#[derive(SimpleObject)]
#[graphql(name = "WebhookMessageEdge", serial)]
pub struct WebhookMessageEdge {
    cursor: String,
    node: WebhookMessage,
}

/// A page of messages, newest first.
#[derive(SimpleObject)]
#[graphql(name = "WebhookMessageConnection", serial)]
pub struct WebhookMessageConnection {
    edges: Vec<WebhookMessageEdge>,
    page_info: PageInfo,
}

impl From<MessagePage> for WebhookMessageConnection {
    fn from(page: MessagePage) -> Self {
        let edges: Vec<WebhookMessageEdge> = page
            .messages
            .into_iter()
            .map(|message| WebhookMessageEdge {
                cursor: message.seq.to_string(),
                node: message.into(),
            })
            .collect();
        let end_cursor = edges.last().map(|edge| edge.cursor.clone());
        Self {
            edges,
            page_info: PageInfo::new(page.has_next_page, end_cursor),
        }
    }
}

/// Where to send, and what.
#[derive(InputObject)]
#[graphql(name = "WebhookEndpointInput")]
pub struct WebhookEndpointInput {
    /// https:// (http:// and private addresses only with WEBHOOK_ALLOW_PRIVATE=true), at most 2 KiB, no credentials.
    url: String,
    description: Option<String>,
    /// Message types to deliver, e.g. `flow.completed`; empty means every type.
    #[graphql(default_with = "Some(Vec::new())")]
    event_types: Option<Vec<String>>,
    /// Keys of the flows to deliver; empty means every flow.
    #[graphql(default_with = "Some(Vec::new())")]
    flows: Option<Vec<String>>,
}

impl From<WebhookEndpointInput> for EndpointInput {
    fn from(input: WebhookEndpointInput) -> Self {
        Self {
            url: input.url,
            description: input.description,
            event_types: input.event_types.unwrap_or_default(),
            flows: input.flows.unwrap_or_default(),
        }
    }
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// Admins only.
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<WebhookEndpoint>> {
        let (webhooks, viewer) = operations(ctx)?;
        let endpoints = webhooks.endpoints(viewer).await;
        endpoints
            .map(|endpoints| endpoints.into_iter().map(Into::into).collect())
            .map_err(|error| client_error(ctx, error))
    }

    /// Admins only. Newest first.
    async fn webhook_messages(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        status: Option<WebhookDeliveryStatus>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<WebhookMessageConnection> {
        let first = first.unwrap_or(20);
        let (webhooks, viewer) = operations(ctx)?;
        let page = webhooks
            .messages(
                viewer,
                &endpoint_id,
                status.map(WebhookDeliveryStatus::as_str),
                i64::from(first),
                after,
            )
            .await;
        page.map(Into::into)
            .map_err(|error| client_error(ctx, error))
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Admins only. The secret is in the answer, once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: WebhookEndpointInput,
    ) -> async_graphql::Result<WebhookEndpointWithSecret> {
        let (webhooks, viewer) = operations(ctx)?;
        let created = webhooks.create(viewer, input.into()).await;
        created
            .map(Into::into)
            .map_err(|error| client_error(ctx, error))
    }

    /// Changes what is given: a left-out input keeps url and filters; a left-out enabled keeps it.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: Option<WebhookEndpointInput>,
        enabled: Option<bool>,
    ) -> async_graphql::Result<WebhookEndpoint> {
        let (webhooks, viewer) = operations(ctx)?;
        let updated = webhooks
            .update(viewer, &id, input.map(Into::into), enabled)
            .await;
        updated
            .map(Into::into)
            .map_err(|error| client_error(ctx, error))
    }

    /// Admins only. Its messages go with it.
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<bool> {
        let (webhooks, viewer) = operations(ctx)?;
        let deleted = webhooks.delete(viewer, &id).await;
        deleted.map_err(|error| client_error(ctx, error))
    }

    /// A new secret; the old one still signs, beside it, for 24 hours.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookEndpointWithSecret> {
        let (webhooks, viewer) = operations(ctx)?;
        let rotated = webhooks.rotate(viewer, &id).await;
        rotated
            .map(Into::into)
            .map_err(|error| client_error(ctx, error))
    }

    /// Sends the message again now, whatever its status.
    async fn resend_webhook_message(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookMessage> {
        let (webhooks, viewer) = operations(ctx)?;
        let sent = webhooks.resend(viewer, &id).await;
        sent.map(Into::into)
            .map_err(|error| client_error(ctx, error))
    }

    /// Sends a `webhook.test` message now.
    async fn test_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookMessage> {
        let (webhooks, viewer) = operations(ctx)?;
        let sent = webhooks.test(viewer, &id).await;
        sent.map(Into::into)
            .map_err(|error| client_error(ctx, error))
    }
}
