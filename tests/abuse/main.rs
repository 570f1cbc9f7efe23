//! Hostile input: documents built to cost exponential time or memory, and
//! connections that send slowly, sit idle or flood headers. Each is answered
//! quickly with a clear error while `/healthz` keeps answering. A test binary
//! of its own, so that the rest of the suite's load does not blur its timings;
//! its tests also take turns (`one_at_a_time`).

#[path = "../api/helpers.rs"]
#[expect(
    dead_code,
    reason = "the helpers are tests/api's, which uses all of them"
)]
mod helpers;

mod connections;
mod hostile_documents;

/// Held by each test for its whole run: timings mean something only when the
/// tests do not share the two cores with each other.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
