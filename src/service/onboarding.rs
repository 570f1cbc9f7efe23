//! The onboarding operations: each checks who asks, then reads or writes
//! the store.

use chrono::{DateTime, Utc};

use super::WriteOptions;
use super::flows::idempotency_key;
use crate::db::{Db, Decide, FlowWrite, Provenance};
use crate::domain::{
    Change, FlowState, FlowVersion, ONBOARDING, OnboardingState, Result, Viewer, now,
};

/// The onboarding operations, each checked against the viewer who asks.
#[derive(Debug, Clone)]
pub struct Onboarding {
    db: Db,
}

impl Onboarding {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The state of `requested` (or the viewer's own), created on first access.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    pub async fn state(
        &self,
        viewer: &Viewer,
        requested: Option<String>,
    ) -> Result<OnboardingState> {
        let user_id = viewer.acting_on(requested)?;
        tracing::Span::current().record("user_id", user_id.as_str());
        let now = now();
        let state = match self.db.find(&user_id).await? {
            Some(state) => state,
            None => self.db.find_or_create(&user_id, now).await?,
        };
        log_creation(&state, now);
        Ok(state)
    }

    /// Applies `change` to the state of `requested` (or the viewer's own).
    /// A write with `expectedRevision` or an `idempotencyKey` locks the
    /// state as a flow write does; the others go to the grouped statements.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id, change = ?change))]
    pub async fn apply(
        &self,
        viewer: &Viewer,
        requested: Option<String>,
        change: Change,
        options: WriteOptions,
    ) -> Result<OnboardingState> {
        let user_id = viewer.acting_on(requested)?;
        tracing::Span::current().record("user_id", user_id.as_str());
        let now = now();
        let provenance = Provenance {
            actor: viewer.id().unwrap_or_default().to_owned(),
            request_id: options.request_id,
        };
        let expected = options.expected_revision;
        let state = match &options.idempotency_key {
            None if expected.is_none() => self.db.apply(&user_id, change, provenance, now).await?,
            key => {
                let fingerprint = format!("{}\n{ONBOARDING}\n{change:?}", user_id.as_str());
                let idempotency = key
                    .as_deref()
                    .map(|key| {
                        let caller = viewer.id().unwrap_or_default();
                        idempotency_key(key, user_id.as_str(), caller, fingerprint, expected)
                    })
                    .transpose()?;
                let fresh =
                    FlowState::new(user_id.as_str(), &FlowVersion::undeclared_onboarding(), now);
                let write = FlowWrite {
                    fresh,
                    provenance,
                    idempotency,
                    now,
                    decide: decide(change, expected, now),
                };
                OnboardingState::from(self.db.flows().write(write).await?)
            }
        };
        log_creation(&state, now);
        if let Change::Complete(step) = change {
            tracing::info!(user_id = %state.user_id, step = step.get(), "onboarding completed");
        }
        Ok(state)
    }
}

/// What a checked write decides, given the state it locked: fails on a
/// stale `expectedRevision`, else applies the change.
fn decide(change: Change, expected_revision: Option<i64>, now: DateTime<Utc>) -> Decide {
    Box::new(move |stored: &FlowState| {
        stored.check_revision(expected_revision)?;
        let mut next = stored.clone().as_of(now);
        let happened = change.apply_to(&mut next, now);
        Ok(Some((next, vec![happened])))
    })
}

/// A state whose `created_at` is this request's `now` was created by it.
fn log_creation(state: &OnboardingState, now: DateTime<Utc>) {
    if state.created_at == now {
        tracing::info!(user_id = %state.user_id, "onboarding state created");
    }
}
