//! The sender: makes the event history into messages, and sends each
//! endpoint's due messages on a task of its own, so that a slow or dead
//! receiver holds up only its own messages, never the API's writes nor the
//! other endpoints.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::send::{Attempt, Sender};
use super::{delta, signing_secrets};
use crate::db::{EndpointHealth, NewMessage, Outcome, StoredEndpoint, StoredMessage, WebhookStore};
use crate::domain::webhook::{
    self, ATTEMPT_TIMEOUT, FAILING_FOR, Filter, MAX_ATTEMPTS_KEPT, OutboxEvent, message_type,
};
use crate::domain::{Error, Result, now};
use crate::service::Flows;

/// Messages one pass makes, about: a pass holds SQLite's one write lock.
const MESSAGES_PER_PASS: i64 = 2000;
/// Passes in a row before the sender looks at what is due.
const PASSES_IN_A_ROW: usize = 20;
/// Messages of one endpoint sent at once.
const MESSAGES_AT_ONCE: i64 = 64;
/// How often the sender looks for new events while an endpoint is enabled,
/// and while none is.
const POLL: Duration = Duration::from_millis(100);
const POLL_IDLE: Duration = Duration::from_secs(1);
/// How often it looks for messages due that another replica made or that
/// wait for a retry.
const SCAN_DUE: Duration = Duration::from_secs(1);
/// How long a lease outlasts the attempt's timeout: the time between
/// taking a message and starting to send it.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// How long a sender gathers ended attempts to record them together.
const GATHER_FOR: Duration = Duration::from_millis(20);
/// How long a sender trusts the endpoint it read (URL, secrets, enabled).
const ENDPOINT_FRESH_FOR: Duration = Duration::from_secs(1);
/// The shortest wait a `Retry-After` sets.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long delivered and failed messages are kept.
const KEEP_MESSAGES: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const FORGET_EVERY: Duration = Duration::from_secs(60 * 60);

/// The sender of one server.
#[derive(Clone)]
pub struct Deliveries {
    inner: Arc<Inner>,
}

struct Inner {
    store: WebhookStore,
    flows: Flows,
    sender: Arc<Sender>,
    wake: Notify,
    /// The endpoints this server is sending to now.
    sending: Mutex<HashSet<String>>,
}

impl Deliveries {
    pub(super) fn new(store: WebhookStore, flows: Flows, sender: Arc<Sender>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                flows,
                sender,
                wake: Notify::new(),
                sending: Mutex::default(),
            }),
        }
    }

    /// Looks for work now rather than at the next poll.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// A lease taken now: until when a message taken now may be on its
    /// way, and by when its attempt must end, from the same moment, so that
    /// however long taking it lasts, the attempt ends before the lease.
    pub fn lease(&self) -> (DateTime<Utc>, Instant) {
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        (now() + delta(ATTEMPT_TIMEOUT + LEASE_MARGIN), deadline)
    }

    /// Runs the sender until the server stops.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let deliveries = self.clone();
        tokio::spawn(async move { deliveries.run().await })
    }

    async fn run(&self) {
        let mut scanned = Instant::now().checked_sub(SCAN_DUE);
        let mut forgotten = Instant::now();
        let mut reread_flows = false;
        loop {
            let poll = match self.round(&mut scanned, &mut reread_flows).await {
                Ok(true) => POLL,
                Ok(false) => POLL_IDLE,
                Err(error) => {
                    tracing::warn!(%error, "webhooks: cannot make or send messages; trying again");
                    POLL_IDLE
                }
            };
            if forgotten.elapsed() >= FORGET_EVERY {
                forgotten = Instant::now();
                self.forget_old_messages().await;
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Makes new events into messages and starts sending what is due:
    /// whether an endpoint is enabled.
    async fn round(&self, scanned: &mut Option<Instant>, reread_flows: &mut bool) -> Result<bool> {
        let store = &self.inner.store;
        let enabled: Vec<StoredEndpoint> = store
            .endpoints()
            .await?
            .into_iter()
            .filter(|endpoint| endpoint.enabled)
            .collect();
        let steps = Arc::new(self.inner.flows.version_steps(*reread_flows).await?);
        *reread_flows = false;
        for _ in 0..PASSES_IN_A_ROW {
            let steps = steps.clone();
            let render = move |event: &OutboxEvent, endpoints: &[(String, Filter)]| {
                render(event, endpoints, &steps)
            };
            let made = match store.fan_out(MESSAGES_PER_PASS, now(), render).await {
                Ok(made) => made,
                Err(Error::Internal(source)) if source.to_string() == UNKNOWN_VERSION => {
                    *reread_flows = true;
                    break;
                }
                Err(error) => return Err(error),
            };
            if made.unrecorded > 0 {
                tracing::warn!(
                    events = made.unrecorded,
                    "webhooks: events written by a release without webhooks record no state; \
                     no message is sent for them"
                );
            }
            for endpoint in &made.endpoints {
                match enabled.iter().find(|e| &e.id == endpoint) {
                    Some(endpoint) => self.send_to(endpoint.clone()),
                    // Enabled since this round read the endpoints.
                    None => *scanned = None,
                }
            }
            if !made.more {
                break;
            }
            // Between passes, SQLite's writer takes its turn.
            tokio::task::yield_now().await;
        }
        let due_scan = scanned.is_none_or(|at| at.elapsed() >= SCAN_DUE);
        if due_scan {
            *scanned = Some(Instant::now());
            let now = now();
            for endpoint in &enabled {
                if self.is_sending(&endpoint.id) {
                    continue;
                }
                if store
                    .next_due(&endpoint.id, now)
                    .await?
                    .is_some_and(|due| due <= now)
                {
                    self.send_to(endpoint.clone());
                }
            }
        }
        Ok(!enabled.is_empty())
    }

    fn is_sending(&self, endpoint: &str) -> bool {
        self.inner
            .sending
            .lock()
            .is_ok_and(|sending| sending.contains(endpoint))
    }

    /// Sends `endpoint`'s due messages on a task of its own, unless one
    /// already does.
    fn send_to(&self, endpoint: StoredEndpoint) {
        let Ok(mut sending) = self.inner.sending.lock() else {
            return;
        };
        if !sending.insert(endpoint.id.clone()) {
            return;
        }
        drop(sending);
        let deliveries = self.clone();
        tokio::spawn(async move {
            let id = endpoint.id.clone();
            if let Err(error) = deliveries.send_due(endpoint).await {
                tracing::warn!(endpoint = %id, %error, "webhooks: cannot send to an endpoint");
            }
            if let Ok(mut sending) = deliveries.inner.sending.lock() {
                sending.remove(&id);
            }
        });
    }

    /// Sends the endpoint's due messages, `MESSAGES_AT_ONCE` on their way
    /// at a time, until none is due or the endpoint is disabled. Messages
    /// are taken as room frees up and what attempts gave is recorded as
    /// they end, a batch at a time: a slow answer holds up one place, not
    /// a whole batch.
    async fn send_due(&self, endpoint: StoredEndpoint) -> Result<()> {
        let store = &self.inner.store;
        let id = endpoint.id;
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let mut on_their_way = 0;
        let mut taking = true;
        let mut endpoint: Option<(StoredEndpoint, Instant)> = None;
        loop {
            let room = MESSAGES_AT_ONCE - on_their_way;
            if taking && (on_their_way == 0 || room >= MESSAGES_AT_ONCE / 2) {
                // Read again now and then: an admin may have disabled it,
                // changed its URL or rotated its secret meanwhile.
                if endpoint
                    .as_ref()
                    .is_none_or(|(_, read)| read.elapsed() >= ENDPOINT_FRESH_FOR)
                {
                    endpoint = store
                        .endpoint(&id)
                        .await?
                        .filter(|endpoint| endpoint.enabled)
                        .map(|endpoint| (endpoint, Instant::now()));
                }
                let claimed = match &endpoint {
                    Some((endpoint, _)) => {
                        let (lease, deadline) = self.lease();
                        let claimed = store.claim(&endpoint.id, now(), lease, room).await?;
                        let secrets = Arc::new(signing_secrets(endpoint, now()));
                        for message in &claimed {
                            let (sender, url, secrets, done, message) = (
                                self.inner.sender.clone(),
                                endpoint.url.clone(),
                                secrets.clone(),
                                done.clone(),
                                message.clone(),
                            );
                            tokio::spawn(async move {
                                let attempt = sender
                                    .attempt(&url, &message.id, &message.body, &secrets, deadline)
                                    .await;
                                let _ = done.send((message, attempt));
                            });
                        }
                        claimed.len()
                    }
                    None => 0,
                };
                on_their_way += claimed as i64;
                // None due now: send what is on its way, then look again.
                taking = claimed as i64 == room;
            }
            if on_their_way == 0 {
                return Ok(());
            }
            let Some(first) = finished.recv().await else {
                return Ok(());
            };
            // Gathered for a moment, so that one statement records many.
            let mut results = vec![first];
            let gathering = tokio::time::Instant::now() + GATHER_FOR;
            while (results.len() as i64) < on_their_way {
                match tokio::time::timeout_at(gathering, finished.recv()).await {
                    Ok(Some(result)) => results.push(result),
                    Ok(None) | Err(_) => break,
                }
            }
            on_their_way -= results.len() as i64;
            let Some((current, _)) = endpoint.as_mut() else {
                continue;
            };
            if self.record(current, &results).await? {
                taking = false;
            } else if !taking && on_their_way == 0 {
                // What the next pass made may be due by now.
                taking = true;
            }
        }
    }

    /// Sends one message now (a resend, a test) and returns it as stored
    /// after the attempt.
    pub async fn send_now(
        &self,
        endpoint: &StoredEndpoint,
        message: StoredMessage,
        deadline: Instant,
    ) -> Result<StoredMessage> {
        let secrets = signing_secrets(endpoint, now());
        let attempt = self
            .inner
            .sender
            .attempt(
                &endpoint.url,
                &message.id,
                &message.body,
                &secrets,
                deadline,
            )
            .await;
        let id = message.id.clone();
        let mut endpoint = endpoint.clone();
        self.record(&mut endpoint, &[(message, attempt)]).await?;
        self.inner
            .store
            .message(&id)
            .await?
            .ok_or_else(|| Error::BadUserInput(format!("Webhook message {id:?} was erased.")))
    }

    /// Stores what `results` gave and what they say of the endpoint:
    /// whether it is now disabled.
    async fn record(
        &self,
        endpoint: &mut StoredEndpoint,
        results: &[(StoredMessage, Attempt)],
    ) -> Result<bool> {
        let now = now();
        let outcomes: Vec<Outcome> = results
            .iter()
            .map(|(message, attempt)| outcome(message, attempt, now))
            .collect();
        for ((message, attempt), outcome) in results.iter().zip(&outcomes) {
            if !attempt.succeeded() {
                tracing::warn!(
                    endpoint = %endpoint.id,
                    message = %message.id,
                    status = attempt.status,
                    error = attempt.error.as_deref().unwrap_or_default(),
                    next_attempt = ?outcome.next_attempt_at.filter(|_| outcome.status == "PENDING"),
                    "webhook attempt failed"
                );
            }
        }
        let health = health(endpoint, results, now);
        if let EndpointHealth::Disable(reason) = &health {
            tracing::warn!(endpoint = %endpoint.id, reason, "webhook endpoint disabled");
            endpoint.enabled = false;
        }
        self.inner
            .store
            .record(&endpoint.id, &outcomes, &health, now)
            .await?;
        Ok(!endpoint.enabled)
    }

    async fn forget_old_messages(&self) {
        match self
            .inner
            .store
            .forget_before(now() - delta(KEEP_MESSAGES))
            .await
        {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "old webhook messages removed"),
            Err(error) => tracing::warn!(%error, "cannot remove old webhook messages"),
        }
    }
}

/// The mark of a pass that met a version this replica has not read yet.
const UNKNOWN_VERSION: &str = "a flow version the catalog lacks";

/// The messages of `event`, one per endpoint whose filter admits it.
fn render(
    event: &OutboxEvent,
    filters: &[(String, Filter)],
    steps: &crate::service::flows::VersionSteps,
) -> Result<Vec<NewMessage>> {
    let kind = message_type(event.kind);
    let admitted: Vec<&String> = filters
        .iter()
        .filter(|(_, filter)| filter.admits(kind, Some(&event.flow)))
        .map(|(id, _)| id)
        .collect();
    if admitted.is_empty() {
        return Ok(Vec::new());
    }
    let keys = steps
        .get(&(event.flow.clone(), event.version))
        .ok_or_else(|| Error::Internal(UNKNOWN_VERSION.into()))?;
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let body = event.body(&keys);
    Ok(admitted
        .into_iter()
        .map(|endpoint| NewMessage {
            id: webhook::new_id("msg"),
            endpoint_id: endpoint.clone(),
            event_id: Some(event.id),
            user_id: Some(event.user_id().to_owned()),
            group_id: event.group_id().map(str::to_owned),
            actor: Some(event.actor.clone()),
            event_type: kind.to_owned(),
            body: body.clone(),
        })
        .collect())
}

/// What `attempt` leaves of `message`: its status, its history, its next
/// attempt.
fn outcome(message: &StoredMessage, attempt: &Attempt, now: DateTime<Utc>) -> Outcome {
    let tries = message.tries.saturating_add(1);
    let mut attempts: Vec<Value> = serde_json::from_str(&message.attempts).unwrap_or_default();
    attempts.push(json!({
        "at": webhook::rfc3339(attempt.at),
        "responseStatus": attempt.status,
        "error": attempt.error,
        "durationMs": u64::try_from(attempt.duration.as_millis()).unwrap_or(u64::MAX),
    }));
    let excess = attempts.len().saturating_sub(MAX_ATTEMPTS_KEPT);
    attempts.drain(..excess);
    let attempts = Value::Array(attempts).to_string();
    let (status, next_attempt_at) = if attempt.succeeded() {
        ("SUCCEEDED", None)
    } else if attempt.gone() {
        // Kept for when an admin enables the endpoint again.
        ("PENDING", Some(now))
    } else {
        let mut jitter = [0u8; 2];
        webhook::fill_random(&mut jitter);
        let jitter = f64::from(u16::from_le_bytes(jitter)) / f64::from(u16::MAX);
        // The schedule bounds the attempts; a `Retry-After` sets the wait
        // before the next one, a second at least.
        match webhook::backoff(tries, jitter) {
            Some(wait) => {
                let wait = attempt
                    .retry_after
                    .map_or(wait, |asked| asked.max(MIN_RETRY_AFTER));
                ("PENDING", Some(now + delta(wait)))
            }
            None => ("FAILED", None),
        }
    };
    Outcome {
        message_id: message.id.clone(),
        // As taken: recorded only if no one took it since (an erasure
        // removed it, a lease ran out).
        lease_until: message.lease_until.unwrap_or(now),
        status,
        tries,
        attempts,
        next_attempt_at,
    }
}

/// What a batch of attempts says of their endpoint.
fn health(
    endpoint: &StoredEndpoint,
    results: &[(StoredMessage, Attempt)],
    now: DateTime<Utc>,
) -> EndpointHealth {
    if results.iter().any(|(_, attempt)| attempt.gone()) {
        return EndpointHealth::Disable(
            "The receiver answered 410 Gone: it no longer takes messages.".to_owned(),
        );
    }
    if results.iter().any(|(_, attempt)| attempt.succeeded()) {
        return EndpointHealth::Answering;
    }
    let failing_for = endpoint
        .failing_since
        .map_or(TimeDelta::zero(), |since| now - since);
    if failing_for >= delta(FAILING_FOR) {
        return EndpointHealth::Disable(format!(
            "Every attempt failed for {} days.",
            FAILING_FOR.as_secs() / 86_400
        ));
    }
    EndpointHealth::Failing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(failing_since: Option<DateTime<Utc>>) -> StoredEndpoint {
        StoredEndpoint {
            id: "ep_1".into(),
            url: "https://example.com/".into(),
            description: None,
            event_types: Vec::new(),
            flows: Vec::new(),
            enabled: true,
            disabled_reason: None,
            secret: "whsec_AAAA".into(),
            previous_secret: None,
            previous_secret_until: None,
            failing_since,
            created_at: now(),
        }
    }

    fn message(tries: i32) -> StoredMessage {
        StoredMessage {
            seq: 1,
            id: "msg_1".into(),
            endpoint_id: "ep_1".into(),
            event_type: "flow.started".into(),
            body: "{}".into(),
            status: "PENDING".into(),
            tries,
            attempts: "[]".into(),
            next_attempt_at: None,
            lease_until: None,
            created_at: now(),
        }
    }

    fn attempt(status: Option<u16>) -> Attempt {
        Attempt {
            at: now(),
            status,
            error: (status != Some(200)).then(|| "failed".to_owned()),
            duration: Duration::from_millis(3),
            retry_after: None,
        }
    }

    #[test]
    fn an_endpoint_failing_for_five_days_is_disabled() {
        let now = now();
        let failed = [(message(1), attempt(Some(500)))];
        let recent = endpoint(Some(now - TimeDelta::days(4)));
        assert_eq!(health(&recent, &failed, now), EndpointHealth::Failing);
        let old = endpoint(Some(now - TimeDelta::days(5)));
        assert!(matches!(
            health(&old, &failed, now),
            EndpointHealth::Disable(_)
        ));
        let answered = [(message(1), attempt(Some(200)))];
        assert_eq!(health(&old, &answered, now), EndpointHealth::Answering);
        let gone = [(message(1), attempt(Some(410)))];
        assert!(
            matches!(health(&recent, &gone, now), EndpointHealth::Disable(r) if r.contains("410"))
        );
    }

    #[test]
    fn the_last_attempt_of_the_schedule_fails_the_message() {
        let now = now();
        let retried = outcome(&message(6), &attempt(Some(500)), now);
        assert_eq!(retried.status, "PENDING");
        assert_eq!(retried.tries, 7);
        let last = outcome(&message(7), &attempt(None), now);
        assert_eq!((last.status, last.next_attempt_at), ("FAILED", None));
        let mut busy = attempt(Some(503));
        busy.retry_after = Some(Duration::ZERO);
        let soon = outcome(&message(1), &busy, now);
        assert_eq!(
            soon.next_attempt_at,
            Some(now + TimeDelta::seconds(1)),
            "a second at least"
        );
        let last = outcome(&message(7), &busy, now);
        assert_eq!(
            last.status, "FAILED",
            "Retry-After does not lengthen the schedule"
        );
        let succeeded = outcome(&message(3), &attempt(Some(200)), now);
        assert_eq!(
            (succeeded.status, succeeded.next_attempt_at),
            ("SUCCEEDED", None)
        );
        let mut long = message(1);
        long.attempts =
            serde_json::to_string(&vec![json!({}); MAX_ATTEMPTS_KEPT]).unwrap_or_default();
        let kept: Vec<Value> =
            serde_json::from_str(&outcome(&long, &attempt(Some(500)), now).attempts)
                .unwrap_or_default();
        assert_eq!(
            kept.len(),
            MAX_ATTEMPTS_KEPT,
            "the oldest attempt is dropped"
        );
    }
}
