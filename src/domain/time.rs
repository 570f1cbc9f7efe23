//! The clock, at the precision both databases store.

use chrono::{DateTime, SubsecRound, Utc};

/// Timestamps are kept to the microsecond, the precision both databases store,
/// so a value reads back exactly as it was returned.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
