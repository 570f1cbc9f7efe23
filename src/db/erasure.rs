//! Erasure: every row of a user, or of a group, in one transaction.
//!
//! A group's states and events are kept under the group's id in `user_id`
//! (a flow has one scope, so the two never share a flow); the statements
//! about one user leave groups' rows alone, and the ones about a group
//! touch only its flows.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqlitePool;

use super::DbError;
use super::flows::{Backend, FlowStore, to_the_end};
use super::pooler;
use crate::domain::{ERASED_ACTOR, Error, webhook};

/// How many rows erasing a user removed, per kind, and how many events of
/// others named them as the actor: an admin acting for a user, or a member
/// changing a group's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub flow_states: u64,
    pub events: u64,
    pub idempotency_keys: u64,
    /// Users' events the user made as an admin, now with the actor `(erased)`.
    pub events_anonymized: u64,
    /// Groups' events the user made, now with the actor `(erased)` and no data.
    pub group_events_anonymized: u64,
}

/// How many rows erasing a group removed, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasedGroup {
    pub flow_states: u64,
    pub events: u64,
    pub idempotency_keys: u64,
}

/// What erasing the user `$1` runs, in order, `$2` being the actor that
/// replaces theirs.
const ERASE_USER: [&str; 7] = [
    concat!(
        "delete from flow_state where user_id = $1 and flow not in ",
        group_flows!()
    ),
    "delete from onboarding_state where user_id = $1",
    concat!(
        "delete from flow_event where user_id = $1 and flow not in ",
        group_flows!()
    ),
    "delete from idempotency_key where user_id = $1",
    // Groups' events the user made: `actor <> user_id` lets the partial
    // index by actor serve; the next statement takes those of a group whose
    // id is the user's own.
    concat!(
        "update flow_event set actor = $2, data = null \
         where actor = $1 and actor <> user_id and flow in ",
        group_flows!()
    ),
    concat!(
        "update flow_event set actor = $2, data = null \
         where user_id = $1 and actor = $1 and flow in ",
        group_flows!()
    ),
    // Other users' events the user made, as an admin acting for them.
    "update flow_event set actor = $2 where actor = $1 and actor <> user_id",
];

/// What erasing the group `$1` runs, in order.
const ERASE_GROUP: [&str; 3] = [
    concat!(
        "delete from flow_state where user_id = $1 and flow in ",
        group_flows!()
    ),
    concat!(
        "delete from flow_event where user_id = $1 and flow in ",
        group_flows!()
    ),
    "delete from idempotency_key where group_id = $1",
];

/// Whose messages an erasure removes, and the message it sends.
#[derive(Debug, Clone, Copy)]
enum Whose {
    User,
    Group,
}

impl Whose {
    /// The messages that tell of the erased one's own states: removed.
    fn removed(self) -> &'static str {
        match self {
            Whose::User => "user_id = $1 and group_id is null",
            Whose::Group => "group_id = $1",
        }
    }

    fn message_type(self) -> &'static str {
        match self {
            Whose::User => webhook::USER_ERASED,
            Whose::Group => webhook::GROUP_ERASED,
        }
    }

    fn data(self, id: &str) -> serde_json::Value {
        match self {
            Whose::User => serde_json::json!({ "userId": id }),
            Whose::Group => serde_json::json!({ "groupId": id }),
        }
    }
}

/// A message's body with `user` as the actor, and as the user, anonymized.
fn anonymized(body: &str, user: &str) -> String {
    let Ok(mut body) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_owned();
    };
    for field in ["actor", "userId"] {
        if body["data"][field] == user {
            body["data"][field] = ERASED_ACTOR.into();
        }
    }
    body.to_string()
}

/// The statements, as functions over one backend's pool. `$for_update`
/// locks the rows a select reads, where the backend can.
macro_rules! backend {
    ($module:ident, $db:ty, $begin:expr, $for_update:literal) => {
        mod $module {
            use super::*;

            fn query(statement: &str) -> sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments<'_>> {
                sqlx::query(statement).persistent(false)
            }

            /// Runs `statements` with `$1` and `$2` in one transaction, with
            /// the webhook messages that carry the erased one's data: those
            /// of their own states removed, those of others' states they
            /// changed anonymized, and the erasure's own message for every
            /// endpoint whose types admit it (a disabled one gets it once
            /// enabled again). Returns the rows each statement changed, and
            /// until when a message of theirs taken for sending before the
            /// erasure may still be on its way.
            pub async fn run<const N: usize>(
                pool: &sqlx::Pool<$db>,
                statements: [&'static str; N],
                first: &str,
                second: &str,
                whose: Whose,
            ) -> Result<([u64; N], Option<DateTime<Utc>>), Error> {
                let now = crate::domain::now();
                let mut tx = pool.begin_with($begin).await.map_err(DbError::from)?;
                // Waits for a pass making messages to commit, and keeps the
                // next from reading the rows before this erasure commits.
                query("update webhook_cursor set event_id = event_id")
                    .execute(&mut *tx)
                    .await
                    .map_err(DbError::from)?;
                // Before the events go (their messages go with them), so
                // that the leases of those being sent are seen, a lease
                // taken meanwhile included.
                let mut leases: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar(&format!(
                    "delete from webhook_message where {} returning lease_until",
                    whose.removed()
                ))
                .persistent(false)
                .bind(first)
                .fetch_all(&mut *tx)
                .await
                .map_err(DbError::from)?;
                if let Whose::User = whose {
                    let changed: Vec<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(concat!(
                        "select id, body, lease_until from webhook_message where actor = $1",
                        $for_update
                    ))
                    .persistent(false)
                    .bind(first)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(DbError::from)?;
                    for (id, body, lease) in changed {
                        query(
                            "update webhook_message set body = $2, actor = $3, \
                             user_id = case when user_id = $4 then $3 else user_id end where id = $1",
                        )
                        .bind(&id)
                        .bind(anonymized(&body, first))
                        .bind(ERASED_ACTOR)
                        .bind(first)
                        .execute(&mut *tx)
                        .await
                        .map_err(DbError::from)?;
                        leases.push(lease);
                    }
                }
                let mut counts = [0; N];
                for (statement, count) in statements.into_iter().zip(&mut counts) {
                    *count = query(statement)
                        .bind(first)
                        .bind(second)
                        .execute(&mut *tx)
                        .await
                        .map_err(DbError::from)?
                        .rows_affected();
                }
                let endpoints: Vec<(String, String)> =
                    sqlx::query_as("select id, event_types from webhook_endpoint")
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(DbError::from)?;
                let message_type = whose.message_type();
                let body = webhook::body(message_type, now, whose.data(first));
                for (endpoint, types) in endpoints {
                    let types: Vec<String> = serde_json::from_str(&types).unwrap_or_default();
                    if !types.is_empty() && !types.iter().any(|t| t == message_type) {
                        continue;
                    }
                    query(
                        "insert into webhook_message (id, endpoint_id, event_type, body, status, \
                         next_attempt_at, created_at) values ($1, $2, $3, $4, 'PENDING', $5, $5)",
                    )
                    .bind(webhook::new_id("msg"))
                    .bind(&endpoint)
                    .bind(message_type)
                    .bind(&body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(DbError::from)?;
                }
                tx.commit().await.map_err(DbError::from)?;
                let in_flight = leases.into_iter().flatten().filter(|lease| *lease > now).max();
                Ok((counts, in_flight))
            }
        }
    };
}

backend!(on_sqlite, sqlx::Sqlite, "begin immediate", "");
backend!(
    on_postgres,
    sqlx::Postgres,
    pooler::begin_statement(),
    " for update"
);

impl FlowStore {
    /// Every row of the user in every table that holds users' data, and the
    /// user as the actor of others' and groups' events, in one transaction.
    /// SQLite's connections overwrite deleted content (`secure_delete`);
    /// the write-ahead log, which still holds the pages as they were, is
    /// then checkpointed and emptied.
    pub async fn erase(&self, user_id: &str) -> Result<Erased, Error> {
        let [
            flow_states,
            onboarding_states,
            events,
            idempotency_keys,
            group_events,
            own_group_events,
            events_anonymized,
        ] = self.erase_rows(ERASE_USER, user_id, Whose::User).await?;
        Ok(Erased {
            flow_states: flow_states + onboarding_states,
            events,
            idempotency_keys,
            events_anonymized,
            group_events_anonymized: group_events + own_group_events,
        })
    }

    /// Every state, event and idempotency record of the group, in one
    /// transaction.
    pub async fn erase_group(&self, group_id: &str) -> Result<ErasedGroup, Error> {
        let [flow_states, events, idempotency_keys] =
            self.erase_rows(ERASE_GROUP, group_id, Whose::Group).await?;
        Ok(ErasedGroup {
            flow_states,
            events,
            idempotency_keys,
        })
    }

    async fn erase_rows<const N: usize>(
        &self,
        statements: [&'static str; N],
        id: &str,
        whose: Whose,
    ) -> Result<[u64; N], Error> {
        let (backend, id) = (self.backend.clone(), id.to_owned());
        let live = self.live().clone();
        // In the task that runs to the end: a client that goes away after
        // the commit does not leave the log unemptied.
        let (counts, in_flight) = to_the_end(async move {
            match &backend {
                Backend::Sqlite { pool, gate, .. } => {
                    let erased = {
                        let _turn = gate.0.lock().await;
                        on_sqlite::run(pool, statements, &id, ERASED_ACTOR, whose).await?
                    };
                    empty_the_log(pool).await;
                    live.committed(&id);
                    Ok(erased)
                }
                Backend::Postgres { pool, .. } => {
                    on_postgres::run(pool, statements, &id, ERASED_ACTOR, whose).await
                }
            }
        })
        .await?;
        // A message of theirs taken for sending before the erasure ends its
        // attempt by its lease: the erasure answers after that, so that
        // nothing of theirs leaves once it has.
        if let Some(until) = in_flight
            && let Ok(wait) = (until - crate::domain::now()).to_std()
        {
            tokio::time::sleep(wait).await;
        }
        Ok(counts)
    }
}

/// Copies every page of SQLite's write-ahead log into the database and
/// truncates the log. It waits for readers of older snapshots, up to the
/// busy timeout, and tries again a few times; a log that stays in use is
/// emptied by a later erasure or checkpoint.
async fn empty_the_log(pool: &SqlitePool) {
    for _ in 0..5 {
        let checkpoint = sqlx::query_as::<_, (i64, i64, i64)>("pragma wal_checkpoint(truncate)")
            .fetch_one(pool)
            .await;
        match checkpoint {
            Ok((0, _, _)) => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(error) => {
                tracing::warn!(%error, "cannot checkpoint the SQLite log after an erasure");
                return;
            }
        }
    }
    tracing::warn!("the SQLite log stayed in use after an erasure; a later checkpoint empties it");
}
