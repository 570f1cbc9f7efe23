//! The SQL of webhooks: endpoints, the messages made from the event history
//! (the outbox), who sends which, and what each attempt gave.
//!
//! Messages are made by whoever holds the cursor's row: one replica at a
//! time on Postgres (`for update skip locked`), one writer at a time in
//! SQLite. A message is sent by whoever leased it: the lease is taken in
//! one statement (`for update skip locked` on Postgres), so no two replicas
//! send the same attempt, and it runs out soon after the attempt's timeout,
//! so a replica that dies mid-attempt leaves the message to another.

use chrono::{DateTime, Utc};

use super::DbError;
use super::flows::{Backend, FlowStore, to_the_end};
use crate::domain::Error;
use crate::domain::webhook::{Filter, OutboxEvent};

mod rows;
mod statements;

use statements::{on_postgres, on_sqlite};

/// An endpoint as stored.
#[derive(Debug, Clone)]
pub struct StoredEndpoint {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub flows: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What an admin changes of an endpoint: its URL and filters.
#[derive(Debug, Clone)]
pub struct EndpointFields {
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub flows: Vec<String>,
}

/// Why an endpoint an admin disabled is disabled.
pub const DISABLED_BY_ADMIN: &str = "Disabled by an admin.";

/// A message as stored.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub seq: i64,
    pub id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub body: String,
    pub status: String,
    pub tries: i32,
    /// The attempts, as a JSON array.
    pub attempts: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A message to store: made from an event, or an erasure's or a test.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: Option<i64>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub actor: Option<String>,
    pub event_type: String,
    pub body: String,
}

/// What an attempt, or a message's last attempt, leaves.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub message_id: String,
    pub lease_until: DateTime<Utc>,
    pub status: &'static str,
    pub tries: i32,
    pub attempts: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What a batch of attempts to one endpoint says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHealth {
    /// An attempt succeeded.
    Answering,
    /// Every attempt failed.
    Failing,
    /// Disabled, with the reason.
    Disable(String),
}

/// How many events one pass made into messages, and whether more wait.
#[derive(Debug, Clone, Default)]
pub struct FanOut {
    pub events: usize,
    /// The endpoints that got messages.
    pub endpoints: Vec<String>,
    pub more: bool,
    /// Events that record no state (written by a release before webhooks),
    /// passed over.
    pub unrecorded: usize,
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

/// Webhooks' statements, over the flows' connections.
#[derive(Debug, Clone)]
pub struct WebhookStore {
    backend: Backend,
}

/// Runs the same call on whichever backend the store holds; on SQLite in
/// this process's turn at the write lock.
macro_rules! dispatch {
    ($store:expr, $function:ident($($argument:expr),*)) => {
        match &$store.backend {
            Backend::Sqlite { pool, gate, .. } => {
                let _turn = gate.0.lock().await;
                on_sqlite::$function(pool, $($argument),*).await
            }
            Backend::Postgres { pool, .. } => on_postgres::$function(pool, $($argument),*).await,
        }
    };
}

impl WebhookStore {
    pub fn new(flows: &FlowStore) -> Self {
        Self {
            backend: flows.backend.clone(),
        }
    }

    pub async fn endpoints(&self) -> Result<Vec<StoredEndpoint>, DbError> {
        dispatch!(self, endpoints())
    }

    pub async fn create_endpoint(
        &self,
        endpoint: StoredEndpoint,
        max: i64,
    ) -> Result<bool, DbError> {
        dispatch!(self, create_endpoint(endpoint, max))
    }

    pub async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, DbError> {
        dispatch!(self, endpoint(id))
    }

    pub async fn change_endpoint(
        &self,
        id: &str,
        fields: Option<EndpointFields>,
        enabled: Option<bool>,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        dispatch!(self, change_endpoint(id, fields, enabled, now))
    }

    pub async fn rotate(
        &self,
        id: &str,
        secret: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        dispatch!(self, rotate(id, secret, until))
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<bool, DbError> {
        dispatch!(self, delete_endpoint(id))
    }

    pub async fn messages(
        &self,
        endpoint: &str,
        status: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, DbError> {
        dispatch!(self, messages(endpoint, status, before, limit))
    }

    pub async fn message(&self, id: &str) -> Result<Option<StoredMessage>, DbError> {
        dispatch!(self, message_by_id(id))
    }

    /// One pass of making events into messages, in a task that runs to the
    /// end whatever its caller does.
    pub async fn fan_out(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        render: impl Fn(&OutboxEvent, &[(String, Filter)]) -> Result<Vec<NewMessage>, Error>
        + Send
        + Sync
        + 'static,
    ) -> Result<FanOut, Error> {
        let backend = self.backend.clone();
        to_the_end(async move {
            match &backend {
                Backend::Sqlite { pool, gate, .. } => {
                    let _turn = gate.0.lock().await;
                    on_sqlite::fan_out(pool, limit, now, &render).await
                }
                Backend::Postgres { pool, .. } => {
                    on_postgres::fan_out(pool, limit, now, &render).await
                }
            }
        })
        .await
    }

    pub async fn insert_leased(
        &self,
        message: NewMessage,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<(), DbError> {
        dispatch!(self, insert_leased(message, now, lease_until))
    }

    pub async fn next_due(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, DbError> {
        dispatch!(self, next_due(endpoint, now))
    }

    pub async fn claim(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, DbError> {
        dispatch!(self, claim(endpoint, now, lease_until, limit))
    }

    pub async fn claim_for_resend(
        &self,
        id: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<StoredMessage>, DbError> {
        dispatch!(self, claim_for_resend(id, now, lease_until))
    }

    pub async fn record(
        &self,
        endpoint: &str,
        outcomes: &[Outcome],
        health: &EndpointHealth,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        dispatch!(self, record(endpoint, outcomes, health, now))
    }

    pub async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        dispatch!(self, forget_before(before))
    }
}
