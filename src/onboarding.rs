//! The onboarding state and its rules: what a valid step is, who may act on
//! whose state, and what each change does.

use chrono::{DateTime, SubsecRound, Utc};

use crate::auth::Viewer;
use crate::db::Db;
use crate::error::{Error, Result};

/// A user id as the auth provider gives it in `sub`: 1 to 255 bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(value: String) -> Result<Self> {
        if value.is_empty() || value.len() > Self::MAX_BYTES {
            return Err(Error::BadUserInput(format!(
                "userId must be 1 to {} bytes long; got {} bytes.",
                Self::MAX_BYTES,
                value.len()
            )));
        }
        // Postgres text cannot hold NUL; SQLite could, so both refuse it alike.
        if value.contains('\0') {
            return Err(Error::BadUserInput(
                "userId must not contain NUL characters.".to_owned(),
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An onboarding step: never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(i32);

impl Step {
    pub const FIRST: Step = Step(0);

    pub fn parse(value: i32) -> Result<Self> {
        if value < 0 {
            return Err(Error::BadUserInput(format!(
                "step must be 0 or greater; got {value}."
            )));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// One user's onboarding progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingState {
    pub user_id: String,
    pub is_completed: bool,
    pub current_step: i32,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A write to a state; each one creates the state first if it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Finished: `is_completed`, `current_step = step`, `completed_at = now`.
    Complete(Step),
    /// Moves to `step`; completion is left as it is.
    SetStep(Step),
    /// Back to the start: not completed, step 0, no completion time.
    Reset,
}

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
        let user_id = subject(viewer, requested)?;
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
    ) -> Result<OnboardingState> {
        let user_id = subject(viewer, requested)?;
        tracing::Span::current().record("user_id", user_id.as_str());
        let now = now();
        let state = self.db.apply(&user_id, change, now).await?;
        log_creation(&state, now);
        if let Change::Complete(step) = change {
            tracing::info!(user_id = %state.user_id, step = step.get(), "onboarding completed");
        }
        Ok(state)
    }
}

/// Whose state the viewer acts on: its own, or anyone's for an admin.
fn subject(viewer: &Viewer, requested: Option<String>) -> Result<UserId> {
    let Viewer::User { id, admin } = viewer else {
        return Err(Error::Unauthenticated);
    };
    match requested {
        None => Ok(id.clone()),
        Some(requested) if requested == id.as_str() => Ok(id.clone()),
        Some(_) if !admin => Err(Error::Forbidden),
        Some(requested) => UserId::parse(requested),
    }
}

/// Timestamps are kept to the microsecond, the precision both databases store,
/// so a value reads back exactly as it was returned.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A state whose `created_at` is this request's `now` was created by it.
fn log_creation(state: &OnboardingState, now: DateTime<Utc>) {
    if state.created_at == now {
        tracing::info!(user_id = %state.user_id, "onboarding state created");
    }
}
