//! The statements: the same code for both backends, each compiled against
//! its own driver, where only the dialect's few statements differ.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::super::DbError;
use super::super::pooler;
use super::rows::{postgres_rows, sqlite_rows};
use super::{
    DISABLED_BY_ADMIN, EndpointFields, EndpointHealth, FanOut, NewMessage, Outcome, StoredEndpoint,
    StoredMessage, json,
};
use crate::domain::webhook::{Filter, OutboxEvent, Snapshot};
use crate::domain::{Error, EventType, Scope};

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, flows, enabled, \
     disabled_reason, secret, previous_secret, previous_secret_until, failing_since, created_at";
const MESSAGE_COLUMNS: &str = "seq, id, endpoint_id, event_type, body, status, tries, attempts, \
     next_attempt_at, lease_until, created_at";
pub(super) const INSERT_MESSAGE: &str = "insert into webhook_message (id, endpoint_id, event_id, user_id, \
     group_id, actor, event_type, body, status, next_attempt_at, lease_until, created_at) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9, $10, $9)";
/// The events a pass reads: with the flow's scope, the state each left,
/// and the position the cursor moves to.
macro_rules! outbox_columns {
    () => {
        "e.id, e.user_id, e.flow, e.version, e.type, e.step, e.actor, e.at, e.revision, e.state, \
         case when e.flow in (select flow from flow_version where scope = 'GROUP') \
         then 'GROUP' else 'USER' end"
    };
}

/// The statements that differ: how a pass takes the cursor and reads
/// events past it, and how a lease is taken.
struct Dialect {
    /// Locks the cursor and reads it, or nothing when another holds it.
    take_cursor: &'static str,
    /// Events past the cursor (`$1`, `$2`), at most `$3`.
    events_after: &'static str,
    /// Moves the cursor to `$1`, `$2`.
    move_cursor: &'static str,
    /// Whether an event waits past the cursor, read without a lock, so
    /// that a pass with nothing to do writes nothing.
    peek: &'static str,
    /// Moves the cursor past every event there is.
    skip_all: &'static str,
    /// Leases, until `$3`, up to `$4` messages of endpoint `$1` due at `$2`.
    claim: &'static str,
}

const SQLITE: Dialect = Dialect {
    take_cursor: "select '', event_id from webhook_cursor",
    events_after: concat!(
        "select ",
        outbox_columns!(),
        ", '' from flow_event e where e.id > $2 and $1 = $1 order by e.id limit $3"
    ),
    move_cursor: "update webhook_cursor set event_id = $2 where $1 = $1",
    peek: "select exists(select 1 from flow_event \
         where id > (select event_id from webhook_cursor))",
    skip_all: "update webhook_cursor set event_id = \
         (select coalesce(max(id), webhook_cursor.event_id) from flow_event)",
    claim: "update webhook_message set lease_until = $3 where seq in (select seq \
         from webhook_message where endpoint_id = $1 and status = 'PENDING' \
         and next_attempt_at <= $2 and (lease_until is null or lease_until <= $2) \
         and exists (select 1 from webhook_endpoint where id = $1 and enabled) \
         order by next_attempt_at, seq limit $4) returning seq, id, endpoint_id, event_type, body, \
         status, tries, attempts, next_attempt_at, lease_until, created_at",
};

const POSTGRES: Dialect = Dialect {
    take_cursor: "select tx::text, event_id from webhook_cursor for update skip locked",
    // Only events of transactions older than every one still running: any
    // event still to commit belongs to a later transaction, so it comes
    // after the cursor however low its id.
    events_after: concat!(
        "select ",
        outbox_columns!(),
        ", e.tx::text from flow_event e where e.tx is not null \
         and (e.tx, e.id) > ($1::text::xid8, $2) \
         and e.tx < pg_snapshot_xmin(pg_current_snapshot()) order by e.tx, e.id limit $3"
    ),
    move_cursor: "update webhook_cursor set tx = $1::text::xid8, event_id = $2",
    peek: "select exists(select 1 from flow_event e, webhook_cursor c \
         where e.tx is not null and (e.tx, e.id) > (c.tx, c.event_id) \
         and e.tx < pg_snapshot_xmin(pg_current_snapshot()))",
    skip_all: "update webhook_cursor set tx = latest.tx, event_id = latest.id from \
         (select tx, id from flow_event where tx is not null \
         and tx < pg_snapshot_xmin(pg_current_snapshot()) order by tx desc, id desc limit 1) \
         as latest where (latest.tx, latest.id) > (webhook_cursor.tx, webhook_cursor.event_id)",
    claim: "update webhook_message set lease_until = $3 where seq in (select seq \
         from webhook_message where endpoint_id = $1 and status = 'PENDING' \
         and next_attempt_at <= $2 and (lease_until is null or lease_until <= $2) \
         and exists (select 1 from webhook_endpoint where id = $1 and enabled) \
         order by next_attempt_at, seq limit $4 for update skip locked) returning seq, id, \
         endpoint_id, event_type, body, status, tries, attempts, next_attempt_at, lease_until, \
         created_at",
};

/// The statements of one backend, the same code for both.
macro_rules! backend {
    (
        $module:ident, $db:ty, $dialect:expr, $begin:expr, $keep:expr,
        $insert_many:path, $record_many:path
    ) => {
        pub(super) mod $module {
            use super::*;

            type Pool = sqlx::Pool<$db>;
            type Tx = sqlx::Transaction<'static, $db>;
            type DbRow = <$db as sqlx::Database>::Row;
            type Query<'q> =
                sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>;

            fn query(statement: &str) -> Query<'_> {
                sqlx::query(statement).persistent($keep)
            }

            async fn begin(pool: &Pool) -> Result<Tx, DbError> {
                Ok(pool.begin_with($begin).await?)
            }

            fn read_endpoint(row: &DbRow) -> Result<StoredEndpoint, DbError> {
                let list = |index: usize| -> Result<Vec<String>, DbError> {
                    let text: String = row.try_get(index)?;
                    Ok(serde_json::from_str(&text).unwrap_or_default())
                };
                Ok(StoredEndpoint {
                    id: row.try_get(0)?,
                    url: row.try_get(1)?,
                    description: row.try_get(2)?,
                    event_types: list(3)?,
                    flows: list(4)?,
                    enabled: row.try_get(5)?,
                    disabled_reason: row.try_get(6)?,
                    secret: row.try_get(7)?,
                    previous_secret: row.try_get(8)?,
                    previous_secret_until: row.try_get(9)?,
                    failing_since: row.try_get(10)?,
                    created_at: row.try_get(11)?,
                })
            }

            fn message(row: &DbRow) -> Result<StoredMessage, DbError> {
                Ok(StoredMessage {
                    seq: row.try_get(0)?,
                    id: row.try_get(1)?,
                    endpoint_id: row.try_get(2)?,
                    event_type: row.try_get(3)?,
                    body: row.try_get(4)?,
                    status: row.try_get(5)?,
                    tries: row.try_get(6)?,
                    attempts: row.try_get(7)?,
                    next_attempt_at: row.try_get(8)?,
                    lease_until: row.try_get(9)?,
                    created_at: row.try_get(10)?,
                })
            }

            fn outbox_event(row: &DbRow) -> Result<Option<OutboxEvent>, DbError> {
                let revision: Option<i64> = row.try_get(8)?;
                let state: Option<String> = row.try_get(9)?;
                let kind: String = row.try_get(4)?;
                let scope: String = row.try_get(10)?;
                let (Some(revision), Some(state), Some(kind)) =
                    (revision, state, EventType::parse(&kind))
                else {
                    return Ok(None);
                };
                let Some(snapshot) = Snapshot::parse(revision, &state) else {
                    return Ok(None);
                };
                Ok(Some(OutboxEvent {
                    id: row.try_get(0)?,
                    owner: row.try_get(1)?,
                    flow: row.try_get(2)?,
                    version: row.try_get(3)?,
                    kind,
                    step: row.try_get(5)?,
                    actor: row.try_get(6)?,
                    at: row.try_get(7)?,
                    snapshot,
                    scope: if scope == "GROUP" { Scope::Group } else { Scope::User },
                }))
            }

            pub async fn endpoints(pool: &Pool) -> Result<Vec<StoredEndpoint>, DbError> {
                let statement =
                    format!("select {ENDPOINT_COLUMNS} from webhook_endpoint order by created_at, id");
                let mut tx = begin(pool).await?;
                let rows = query(&statement).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter().map(read_endpoint).collect()
            }

            /// Inserts `endpoint` unless `max` exist: whether it did.
            pub async fn create_endpoint(
                pool: &Pool,
                endpoint: StoredEndpoint,
                max: i64,
            ) -> Result<bool, DbError> {
                let mut tx = begin(pool).await?;
                // The cursor's row serializes creators, so that two at once
                // cannot pass the limit together.
                query("update webhook_cursor set event_id = event_id")
                    .execute(&mut *tx)
                    .await?;
                let count: i64 = query("select count(*) from webhook_endpoint")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if count >= max {
                    return Ok(false);
                }
                query(
                    "insert into webhook_endpoint (id, url, description, event_types, flows, \
                     enabled, secret, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&endpoint.id)
                .bind(&endpoint.url)
                .bind(&endpoint.description)
                .bind(json(&endpoint.event_types))
                .bind(json(&endpoint.flows))
                .bind(endpoint.enabled)
                .bind(&endpoint.secret)
                .bind(endpoint.created_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            pub async fn endpoint(pool: &Pool, id: &str) -> Result<Option<StoredEndpoint>, DbError> {
                let statement =
                    format!("select {ENDPOINT_COLUMNS} from webhook_endpoint where id = $1");
                let mut tx = begin(pool).await?;
                let row = query(&statement).bind(id).fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row.as_ref().map(read_endpoint).transpose()
            }

            /// Changes what is given, and nothing else, so that a change
            /// racing another (a 410 disabling the endpoint, a rotation)
            /// undoes neither. Enabling it clears why it was disabled and
            /// makes what is pending due now: under the cursor's lock, so
            /// that a pass sees the endpoint enabled or runs before it is.
            pub async fn change_endpoint(
                pool: &Pool,
                id: &str,
                fields: Option<EndpointFields>,
                enabled: Option<bool>,
                now: DateTime<Utc>,
            ) -> Result<bool, DbError> {
                let mut tx = begin(pool).await?;
                query("update webhook_cursor set event_id = event_id")
                    .execute(&mut *tx)
                    .await?;
                let exists = query("select 1 from webhook_endpoint where id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if !exists {
                    return Ok(false);
                }
                if let Some(fields) = fields {
                    query(
                        "update webhook_endpoint set url = $2, description = $3, \
                         event_types = $4, flows = $5 where id = $1",
                    )
                    .bind(id)
                    .bind(&fields.url)
                    .bind(&fields.description)
                    .bind(json(&fields.event_types))
                    .bind(json(&fields.flows))
                    .execute(&mut *tx)
                    .await?;
                }
                match enabled {
                    Some(true) => {
                        let enabled = query(
                            "update webhook_endpoint set enabled = true, disabled_reason = null, \
                             failing_since = null where id = $1 and not enabled",
                        )
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if enabled > 0 {
                            query(
                                "update webhook_message set next_attempt_at = $2 \
                                 where endpoint_id = $1 and status = 'PENDING'",
                            )
                            .bind(id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    Some(false) => {
                        query(
                            "update webhook_endpoint set enabled = false, disabled_reason = $2 \
                             where id = $1 and enabled",
                        )
                        .bind(id)
                        .bind(DISABLED_BY_ADMIN)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {}
                }
                tx.commit().await?;
                Ok(true)
            }

            /// Makes `secret` the endpoint's, the one it replaces signing
            /// beside it until `until`.
            pub async fn rotate(
                pool: &Pool,
                id: &str,
                secret: &str,
                until: DateTime<Utc>,
            ) -> Result<bool, DbError> {
                let mut tx = begin(pool).await?;
                let rotated = query(
                    "update webhook_endpoint set previous_secret = secret, secret = $2, \
                     previous_secret_until = $3 where id = $1",
                )
                .bind(id)
                .bind(secret)
                .bind(until)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(rotated > 0)
            }

            pub async fn delete_endpoint(pool: &Pool, id: &str) -> Result<bool, DbError> {
                let mut tx = begin(pool).await?;
                let deleted = query("delete from webhook_endpoint where id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(deleted > 0)
            }

            /// The messages of `endpoint`, newest first, of `status` when
            /// given, older than `before` when given: at most `limit`.
            pub async fn messages(
                pool: &Pool,
                endpoint: &str,
                status: Option<&str>,
                before: Option<i64>,
                limit: i64,
            ) -> Result<Vec<StoredMessage>, DbError> {
                let statement = format!(
                    "select {MESSAGE_COLUMNS} from webhook_message where endpoint_id = $1 \
                     and ($2 is null or status = $2) and seq < $3 order by seq desc limit $4"
                );
                let mut tx = begin(pool).await?;
                let rows = query(&statement)
                    .bind(endpoint)
                    .bind(status)
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter().map(message).collect()
            }

            pub async fn message_by_id(
                pool: &Pool,
                id: &str,
            ) -> Result<Option<StoredMessage>, DbError> {
                let statement = format!("select {MESSAGE_COLUMNS} from webhook_message where id = $1");
                let mut tx = begin(pool).await?;
                let row = query(&statement).bind(id).fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row.as_ref().map(message).transpose()
            }

            /// One pass of making events into messages: takes the cursor
            /// (or returns at once when another holds it), reads the
            /// enabled endpoints and up to `limit` events past it, stores
            /// the messages `render` makes of each for those endpoints, and
            /// moves the cursor past them, all in one transaction. With no
            /// endpoint enabled, the cursor moves past every event there is.
            /// `render` failing leaves everything as it was.
            pub async fn fan_out(
                pool: &Pool,
                limit: i64,
                now: DateTime<Utc>,
                render: &(dyn Fn(&OutboxEvent, &[(String, Filter)]) -> Result<Vec<NewMessage>, Error>
                      + Sync),
            ) -> Result<FanOut, Error> {
                let dialect = dialect();
                if !waiting(pool).await? {
                    return Ok(FanOut::default());
                }
                let mut tx = begin(pool).await?;
                let Some(cursor) = query(dialect.take_cursor)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(DbError::from)?
                else {
                    return Ok(FanOut::default());
                };
                // Read under the cursor's lock, which creating and enabling
                // an endpoint take too: an endpoint is in a pass or commits
                // after it.
                let endpoints = query(
                    "select id, event_types, flows from webhook_endpoint where enabled order by id",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(DbError::from)?
                .iter()
                .map(|row| {
                    let list = |index: usize| -> Result<Vec<String>, DbError> {
                        let text: String = row.try_get(index)?;
                        Ok(serde_json::from_str(&text).unwrap_or_default())
                    };
                    Ok((row.try_get(0)?, Filter { types: list(1)?, flows: list(2)? }))
                })
                .collect::<Result<Vec<(String, Filter)>, DbError>>()?;
                if endpoints.is_empty() {
                    query(dialect.skip_all).execute(&mut *tx).await.map_err(DbError::from)?;
                    tx.commit().await.map_err(DbError::from)?;
                    return Ok(FanOut::default());
                }
                let (position, event_id): (String, i64) = (
                    cursor.try_get(0).map_err(DbError::from)?,
                    cursor.try_get(1).map_err(DbError::from)?,
                );
                // At most about `limit` messages a pass, however many
                // endpoints: a pass holds SQLite's one write lock.
                let events = (limit / endpoints.len() as i64).max(1);
                let rows = query(dialect.events_after)
                    .bind(&position)
                    .bind(event_id)
                    .bind(events)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(DbError::from)?;
                let Some(last) = rows.last() else {
                    return Ok(FanOut::default());
                };
                let last_position: String = last.try_get(11).map_err(DbError::from)?;
                let last_id: i64 = last.try_get(0).map_err(DbError::from)?;
                let mut fanned = FanOut {
                    events: rows.len(),
                    more: rows.len() as i64 >= events,
                    ..FanOut::default()
                };
                let mut made = Vec::new();
                for row in &rows {
                    let Some(event) = outbox_event(row)? else {
                        fanned.unrecorded += 1;
                        continue;
                    };
                    for message in render(&event, &endpoints)? {
                        if !fanned.endpoints.contains(&message.endpoint_id) {
                            fanned.endpoints.push(message.endpoint_id.clone());
                        }
                        made.push(message);
                    }
                }
                $insert_many(&mut tx, &made, now).await?;
                query(dialect.move_cursor)
                    .bind(&last_position)
                    .bind(last_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(DbError::from)?;
                tx.commit().await.map_err(DbError::from)?;
                Ok(fanned)
            }

            fn dialect() -> &'static Dialect {
                &$dialect
            }

            /// Whether an event waits past the cursor.
            async fn waiting(pool: &Pool) -> Result<bool, DbError> {
                let mut tx = begin(pool).await?;
                let row = query(dialect().peek).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                Ok(row.try_get(0)?)
            }

            async fn insert(
                tx: &mut Tx,
                message: &NewMessage,
                now: DateTime<Utc>,
                lease_until: Option<DateTime<Utc>>,
            ) -> Result<(), DbError> {
                query(INSERT_MESSAGE)
                    .bind(&message.id)
                    .bind(&message.endpoint_id)
                    .bind(message.event_id)
                    .bind(&message.user_id)
                    .bind(&message.group_id)
                    .bind(&message.actor)
                    .bind(&message.event_type)
                    .bind(&message.body)
                    .bind(now)
                    .bind(lease_until)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Stores `message` leased until `lease_until`, to be sent now.
            pub async fn insert_leased(
                pool: &Pool,
                message: NewMessage,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
            ) -> Result<(), DbError> {
                let mut tx = begin(pool).await?;
                insert(&mut tx, &message, now, Some(lease_until)).await?;
                tx.commit().await?;
                Ok(())
            }

            /// When the next message of `endpoint` not leased is due.
            pub async fn next_due(
                pool: &Pool,
                endpoint: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<DateTime<Utc>>, DbError> {
                let mut tx = begin(pool).await?;
                let row = query(
                    "select next_attempt_at from webhook_message where endpoint_id = $1 \
                     and status = 'PENDING' and (lease_until is null or lease_until <= $2) \
                     order by next_attempt_at limit 1",
                )
                .bind(endpoint)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.map(|row| row.try_get(0)).transpose()?)
            }

            /// Leases up to `limit` due messages of `endpoint`.
            pub async fn claim(
                pool: &Pool,
                endpoint: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<StoredMessage>, DbError> {
                let mut tx = begin(pool).await?;
                let rows = query(dialect().claim)
                    .bind(endpoint)
                    .bind(now)
                    .bind(lease_until)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut claimed = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
                tx.commit().await?;
                claimed.sort_by_key(|message| message.seq);
                Ok(claimed)
            }

            /// Leases the message `id` whatever its status, as a fresh
            /// series of attempts; none when it is unknown or being sent.
            pub async fn claim_for_resend(
                pool: &Pool,
                id: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
            ) -> Result<Option<StoredMessage>, DbError> {
                let statement = format!(
                    "update webhook_message set status = 'PENDING', tries = 0, \
                     next_attempt_at = $2, lease_until = $3 \
                     where id = $1 and (lease_until is null or lease_until <= $2) \
                     returning {MESSAGE_COLUMNS}"
                );
                let mut tx = begin(pool).await?;
                let row = query(&statement)
                    .bind(id)
                    .bind(now)
                    .bind(lease_until)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.as_ref().map(message).transpose()
            }

            /// Stores what attempts gave, for messages still leased as
            /// taken (an erased one is gone), and what they say of the
            /// endpoint.
            pub async fn record(
                pool: &Pool,
                endpoint: &str,
                outcomes: &[Outcome],
                health: &EndpointHealth,
                now: DateTime<Utc>,
            ) -> Result<(), DbError> {
                let mut tx = begin(pool).await?;
                $record_many(&mut tx, outcomes).await?;
                let statement = match health {
                    EndpointHealth::Answering => {
                        "update webhook_endpoint set failing_since = null \
                         where id = $1 and failing_since is not null and $2 = $2 and $3 = $3"
                    }
                    EndpointHealth::Failing => {
                        "update webhook_endpoint set failing_since = $2 \
                         where id = $1 and failing_since is null and $3 = $3"
                    }
                    EndpointHealth::Disable(_) => {
                        "update webhook_endpoint set enabled = false, disabled_reason = $3, \
                         failing_since = coalesce(failing_since, $2) where id = $1 and enabled"
                    }
                };
                let reason = match health {
                    EndpointHealth::Disable(reason) => reason.as_str(),
                    _ => "",
                };
                query(statement)
                    .bind(endpoint)
                    .bind(now)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            /// Removes delivered and failed messages made before `before`,
            /// a thousand at a time, so that no transaction holds the
            /// tables (SQLite's one write lock) for long.
            pub async fn forget_before(pool: &Pool, before: DateTime<Utc>) -> Result<u64, DbError> {
                let mut forgotten = 0;
                loop {
                    let mut tx = begin(pool).await?;
                    let deleted = query(
                        "delete from webhook_message where seq in (select seq \
                         from webhook_message where status <> 'PENDING' and created_at < $1 \
                         limit 1000)",
                    )
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    tx.commit().await?;
                    forgotten += deleted;
                    if deleted < 1000 {
                        return Ok(forgotten);
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    };
}

backend!(
    on_sqlite,
    sqlx::Sqlite,
    SQLITE,
    "begin immediate",
    true,
    sqlite_rows::insert_many,
    sqlite_rows::record_many
);
backend!(
    on_postgres,
    sqlx::Postgres,
    POSTGRES,
    pooler::begin_statement(),
    pooler::keep_prepared(),
    postgres_rows::insert_many,
    postgres_rows::record_many
);
