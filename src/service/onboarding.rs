//! The onboarding operations: each checks who asks, then reads or writes
//! the store.

use chrono::{DateTime, Utc};

use crate::db::{Db, Provenance};
use crate::domain::{Change, OnboardingState, Result, Viewer, now};

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
    #[tracing::instrument(level = "debug", skip_all, fields(user_id, change = ?change))]
    pub async fn apply(
        &self,
        viewer: &Viewer,
        requested: Option<String>,
        change: Change,
        request_id: Option<String>,
    ) -> Result<OnboardingState> {
        let user_id = viewer.acting_on(requested)?;
        tracing::Span::current().record("user_id", user_id.as_str());
        let now = now();
        let provenance = Provenance {
            actor: viewer.id().unwrap_or_default().to_owned(),
            request_id,
        };
        let state = self.db.apply(&user_id, change, provenance, now).await?;
        log_creation(&state, now);
        if let Change::Complete(step) = change {
            tracing::info!(user_id = %state.user_id, step = step.get(), "onboarding completed");
        }
        Ok(state)
    }
}

/// A state whose `created_at` is this request's `now` was created by it.
fn log_creation(state: &OnboardingState, now: DateTime<Utc>) {
    if state.created_at == now {
        tracing::info!(user_id = %state.user_id, "onboarding state created");
    }
}
