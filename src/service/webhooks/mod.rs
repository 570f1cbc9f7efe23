//! Webhooks: the endpoints admins register and the messages sent to them
//! (the webhooks contract). `delivery` sends them; this is what admins ask.

mod delivery;
mod send;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use crate::db::{EndpointFields, StoredEndpoint, StoredMessage, WebhookStore};
use crate::domain::webhook::{
    self, Filter, MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS, ROTATION_OVERLAP, TEST,
};
use crate::domain::{Error, ONBOARDING, Result, Viewer, check_text, now};

use super::Flows;
use super::flows::admin;
pub use delivery::Deliveries;
use send::Sender;

/// Most messages one page lists.
pub const MAX_MESSAGES_PAGE: i64 = 100;

/// What an admin gives for an endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub flows: Vec<String>,
}

/// A page of messages, newest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
    pub has_next_page: bool,
}

/// The webhooks of one server: what admins ask of them, and their sender.
#[derive(Clone)]
pub struct Webhooks {
    store: WebhookStore,
    flows: Flows,
    sender: Arc<Sender>,
    deliveries: Deliveries,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Webhooks over `flows`' database; `allow_private` lets endpoints be
    /// `http://` and private addresses (WEBHOOK_ALLOW_PRIVATE).
    pub fn new(flows: &Flows, allow_private: bool) -> Self {
        let store = WebhookStore::new(&flows.store);
        let sender = Arc::new(Sender::new(allow_private));
        let deliveries = Deliveries::new(store.clone(), flows.clone(), sender.clone());
        Self {
            store,
            flows: flows.clone(),
            sender,
            deliveries,
        }
    }

    /// The sender of messages, to start with the server.
    pub fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }

    pub async fn endpoints(&self, viewer: &Viewer) -> Result<Vec<StoredEndpoint>> {
        admin(viewer, "read webhook endpoints")?;
        Ok(self.store.endpoints().await?)
    }

    /// Registers an endpoint: its secret is in the answer, and nowhere else.
    pub async fn create(&self, viewer: &Viewer, input: EndpointInput) -> Result<StoredEndpoint> {
        admin(viewer, "register webhook endpoints")?;
        let endpoint = self.checked(input).await?;
        if !self
            .store
            .create_endpoint(endpoint.clone(), MAX_ENDPOINTS)
            .await?
        {
            return Err(Error::BadUserInput(format!(
                "There are already {MAX_ENDPOINTS} webhook endpoints, the most there may be: \
                 delete one you no longer use (deleteWebhookEndpoint), or send several \
                 event types to one endpoint."
            )));
        }
        tracing::info!(endpoint = %endpoint.id, "webhook endpoint created");
        self.deliveries.wake();
        Ok(endpoint)
    }

    /// Changes what is given: `input` replaces url and filters, `enabled`
    /// the switch.
    pub async fn update(
        &self,
        viewer: &Viewer,
        id: &str,
        input: Option<EndpointInput>,
        enabled: Option<bool>,
    ) -> Result<StoredEndpoint> {
        admin(viewer, "change webhook endpoints")?;
        self.endpoint(id).await?;
        let fields = match input {
            Some(input) => Some(self.fields(input).await?),
            None => None,
        };
        if !self
            .store
            .change_endpoint(id, fields, enabled, now())
            .await?
        {
            return Err(unknown_endpoint(id));
        }
        let endpoint = self.endpoint(id).await?;
        tracing::info!(endpoint = %id, enabled = endpoint.enabled, "webhook endpoint changed");
        self.deliveries.wake();
        Ok(endpoint)
    }

    pub async fn delete(&self, viewer: &Viewer, id: &str) -> Result<bool> {
        admin(viewer, "delete webhook endpoints")?;
        self.endpoint(id).await?;
        if !self.store.delete_endpoint(id).await? {
            return Err(unknown_endpoint(id));
        }
        tracing::info!(endpoint = %id, "webhook endpoint deleted");
        Ok(true)
    }

    /// A new secret; the old one signs beside it for `ROTATION_OVERLAP`.
    pub async fn rotate(&self, viewer: &Viewer, id: &str) -> Result<StoredEndpoint> {
        admin(viewer, "rotate webhook secrets")?;
        self.endpoint(id).await?;
        let until = now() + delta(ROTATION_OVERLAP);
        if !self.store.rotate(id, &new_secret(), until).await? {
            return Err(unknown_endpoint(id));
        }
        tracing::info!(endpoint = %id, "webhook secret rotated");
        self.endpoint(id).await
    }

    /// The messages of an endpoint, newest first.
    pub async fn messages(
        &self,
        viewer: &Viewer,
        endpoint: &str,
        status: Option<&str>,
        first: i64,
        after: Option<String>,
    ) -> Result<MessagePage> {
        admin(viewer, "read webhook messages")?;
        let after = after
            .map(|cursor| {
                cursor.parse::<i64>().map_err(|_| {
                    Error::BadUserInput(format!(
                        "`after` is not a cursor this API gave: {}; pass a `pageInfo.endCursor` \
                         or `cursor` as it came.",
                        shown(&cursor)
                    ))
                })
            })
            .transpose()?;
        if !(0..=MAX_MESSAGES_PAGE).contains(&first) {
            return Err(Error::BadUserInput(format!(
                "`first` must be between 0 and {MAX_MESSAGES_PAGE}; got {first}."
            )));
        }
        self.endpoint(endpoint).await?;
        let mut messages = self
            .store
            .messages(endpoint, status, after, first + 1)
            .await?;
        let has_next_page = messages.len() as i64 > first;
        messages.truncate(usize::try_from(first).unwrap_or_default());
        Ok(MessagePage {
            messages,
            has_next_page,
        })
    }

    /// Sends the message again now, whatever its status, as the first
    /// attempt of a fresh series: the message with that attempt.
    pub async fn resend(&self, viewer: &Viewer, id: &str) -> Result<StoredMessage> {
        admin(viewer, "resend webhook messages")?;
        let stored = if is_id(id) {
            self.store.message(id).await?
        } else {
            None
        };
        let Some(message) = stored else {
            return Err(Error::BadUserInput(format!(
                "There is no webhook message {}: pass the `id` of a message \
                 `webhookMessages` lists.",
                shown(id)
            )));
        };
        let endpoint = self.endpoint(&message.endpoint_id).await?;
        let (lease, deadline) = self.deliveries.lease();
        let Some(claimed) = self.store.claim_for_resend(id, now(), lease).await? else {
            return Err(Error::BadUserInput(format!(
                "Webhook message {id:?} is being sent right now; see how it went in \
                 `webhookMessages`, and resend it after that if it failed."
            )));
        };
        self.deliveries.send_now(&endpoint, claimed, deadline).await
    }

    /// Sends a `webhook.test` message now: the message with its attempt.
    pub async fn test(&self, viewer: &Viewer, id: &str) -> Result<StoredMessage> {
        admin(viewer, "test webhook endpoints")?;
        let endpoint = self.endpoint(id).await?;
        let (lease, deadline) = self.deliveries.lease();
        let now = now();
        let message = crate::db::NewMessage {
            id: webhook::new_id("msg"),
            endpoint_id: endpoint.id.clone(),
            event_id: None,
            user_id: None,
            group_id: None,
            actor: None,
            event_type: TEST.to_owned(),
            body: webhook::body(TEST, now, json!({ "endpointId": endpoint.id })),
        };
        let message_id = message.id.clone();
        self.store.insert_leased(message, now, lease).await?;
        let stored = self
            .store
            .message(&message_id)
            .await?
            .ok_or_else(|| Error::Internal("a test message is missing".into()))?;
        self.deliveries.send_now(&endpoint, stored, deadline).await
    }

    async fn endpoint(&self, id: &str) -> Result<StoredEndpoint> {
        if !is_id(id) {
            return Err(unknown_endpoint(id));
        }
        self.store
            .endpoint(id)
            .await?
            .ok_or_else(|| unknown_endpoint(id))
    }

    /// `input` checked: a URL messages may go to, a description, filters
    /// of known types and flows.
    async fn fields(&self, input: EndpointInput) -> Result<EndpointFields> {
        let url = webhook::check_url(&input.url, self.sender.allow_private())?;
        self.sender.check_resolves_public(&url).await?;
        let description = input
            .description
            .map(|text| check_description(&text).map(|()| text))
            .transpose()?;
        let filter = Filter::check(input.event_types, input.flows)?;
        let mut published = self.flows.published_keys().await?;
        if filter.flows.iter().any(|flow| !is_known(&published, flow)) {
            // Published on another replica since this one read its flows.
            published = self.flows.published_keys_now().await?;
        }
        if let Some(unknown) = filter.flows.iter().find(|flow| !is_known(&published, flow)) {
            return Err(Error::BadUserInput(format!(
                "`flows` holds {unknown:?}, which is not a published flow; use the keys of \
                 published flows ({}), or leave it empty for every flow.",
                published.join(", ")
            )));
        }
        Ok(EndpointFields {
            url: url.to_string(),
            description,
            event_types: filter.types,
            flows: filter.flows,
        })
    }

    /// A new endpoint of `input`, enabled, with a fresh secret.
    async fn checked(&self, input: EndpointInput) -> Result<StoredEndpoint> {
        let fields = self.fields(input).await?;
        Ok(StoredEndpoint {
            id: webhook::new_id("ep"),
            url: fields.url,
            description: fields.description,
            event_types: fields.event_types,
            flows: fields.flows,
            enabled: true,
            disabled_reason: None,
            secret: new_secret(),
            previous_secret: None,
            previous_secret_until: None,
            failing_since: None,
            created_at: now(),
        })
    }
}

/// Whether `flow` is one a filter may name: a published flow, or the
/// built-in `onboarding`, which the original API's writes change.
fn is_known(published: &[String], flow: &str) -> bool {
    flow == ONBOARDING || published.iter().any(|key| key == flow)
}

fn check_description(text: &str) -> Result<()> {
    check_text("`description`", text)?;
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(Error::BadUserInput(format!(
            "`description` is {chars} characters long; the most is {MAX_DESCRIPTION_CHARS}."
        )));
    }
    Ok(())
}

/// Whether `id` may be an id this API gave: anything else (empty, long, a
/// NUL the database would refuse) is unknown without asking the database.
fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.contains('\0')
}

fn unknown_endpoint(id: &str) -> Error {
    Error::BadUserInput(format!(
        "There is no webhook endpoint {}: pass the `id` of one `webhookEndpoints` lists.",
        shown(id)
    ))
}

/// An id as an error repeats it: quoted, or described when it could not be one.
fn shown(id: &str) -> String {
    if is_id(id) {
        format!("{id:?}")
    } else {
        format!("with the id given ({} bytes)", id.len())
    }
}

/// A signing secret as Standard Webhooks writes them: `whsec_` and the
/// base64 of 32 random bytes.
fn new_secret() -> String {
    let mut key = [0u8; 32];
    webhook::fill_random(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

fn delta(duration: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// The secrets that sign a message sent at `now`: the current one, and the
/// one it replaced while the rotation's overlap lasts.
fn signing_secrets(endpoint: &StoredEndpoint, now: DateTime<Utc>) -> Vec<String> {
    let mut secrets = vec![endpoint.secret.clone()];
    if let (Some(previous), Some(until)) =
        (&endpoint.previous_secret, endpoint.previous_secret_until)
        && until > now
    {
        secrets.push(previous.clone());
    }
    secrets
}
