//! What every request handler shares: the schema, the token verifier, the
//! database and the parsed-document cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::auth::Verifier;
use crate::db::Db;
use crate::graphql::OnboardingSchema;
use crate::http::document_cache::DocumentCache;

/// What every handler shares. Behind one `Arc`: axum clones the state into
/// every request, whether its handler reads it or not.
pub type AppState = Arc<Shared>;

/// The contents of `AppState`.
pub struct Shared {
    pub schema: OnboardingSchema,
    /// The schema for documents known to pass its validation.
    pub schema_for_valid_documents: OnboardingSchema,
    pub verifier: Verifier,
    pub db: Db,
    /// Documents already parsed and checked, by their text.
    pub documents: DocumentCache,
    /// The `--dev` demo token, shown in GraphiQL's headers.
    pub dev_token: Option<Arc<str>>,
    /// Set once the server is told to stop: `/readyz` answers 503 so that
    /// load balancers stop sending requests before it stops accepting them.
    pub draining: AtomicBool,
    /// The live subscriptions held, against MAX_SUBSCRIPTIONS.
    pub subscriptions: SubscriptionSlots,
}

/// The subscriptions this process holds, each by a slot it gives back when
/// it ends.
#[derive(Debug)]
pub struct SubscriptionSlots {
    held: Arc<AtomicUsize>,
    max: usize,
}

impl SubscriptionSlots {
    pub fn new(max: usize) -> Self {
        Self {
            held: Arc::default(),
            max,
        }
    }

    /// A slot, unless all are held.
    pub fn take(&self) -> Option<SubscriptionSlot> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .ok()
            .map(|_| SubscriptionSlot(Arc::clone(&self.held)))
    }
}

/// One subscription's place; dropping it frees the place.
#[derive(Debug)]
pub struct SubscriptionSlot(Arc<AtomicUsize>);

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
