//! The SQL of flows: published versions, each user's state per flow, the
//! events, and the answers kept for idempotent retries. Both backends run
//! the same statements (`$N` parameters, `on conflict`, standard casts); a
//! write is one transaction that locks the user's state (SQLite: `begin
//! immediate`; Postgres: `for update`), so concurrent writes apply one after
//! the other and each sees the last.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{FromRow, Row};
use tokio::sync::{mpsc, oneshot};

use super::flow_groups::FlowWriters;
use super::groups::{Queues, closed};
use super::pooler;
use super::{DbError, Live};
use crate::domain::{
    Error, EventType, FlowDeclaration, FlowEvent, FlowState, FlowStatus, FlowVersion, Happened,
    ONBOARDING, Reonboarding, Scope, StepDeclaration, StepRecord, webhook,
};

const SELECT_VERSIONS: &str = "select flow, version, title, steps, reonboarding, scope, \
     published_at from flow_version order by flow, version";
const SELECT_LATEST: &str = "select flow, version, title, steps, reonboarding, scope, \
     published_at from flow_version where flow = $1 order by version desc limit 1";
const INSERT_VERSION: &str = "insert into flow_version \
     (flow, version, title, steps, reonboarding, scope, published_at) \
     values ($1, $2, $3, $4, $5, $6, $7)";
const SELECT_STATE: &str = concat!(
    "select ",
    flow_state_columns!(),
    " from flow_state where user_id = $1 and flow = $2"
);
const SELECT_STATES: &str = concat!(
    "select ",
    flow_state_columns!(),
    " from flow_state where user_id = $1 order by flow"
);
const INSERT_STATE: &str = concat!(
    "insert into flow_state (",
    flow_state_columns!(),
    ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     on conflict (user_id, flow) do nothing"
);
const UPDATE_STATE: &str = "update flow_state set version = $3, status = $4, current_step = $5, \
     steps = $6, started_at = $7, completed_at = $8, dismissed_at = $9, snoozed_until = $10, \
     revision = $11, updated_at = $13 where user_id = $1 and flow = $2";
/// The built-in flow `onboarding` keeps its state in `onboarding_state`:
/// the same columns, no `flow` column, and `is_completed` kept to match.
const SELECT_ONBOARDING: &str = concat!(
    "select ",
    onboarding_flow_columns!(),
    " from onboarding_state where user_id = $1 and cast($2 as text) = 'onboarding'"
);
const INSERT_ONBOARDING: &str = "insert into onboarding_state (user_id, is_completed, version, \
     status, current_step, steps, started_at, completed_at, dismissed_at, snoozed_until, revision, \
     created_at, updated_at) select $1, cast($4 as text) = 'COMPLETED', $3, $4, $5, $6, $7, $8, \
     $9, $10, $11, $12, $13 where cast($2 as text) = 'onboarding' on conflict (user_id) do nothing";
const UPDATE_ONBOARDING: &str = "update onboarding_state set \
     is_completed = (cast($4 as text) = 'COMPLETED'), version = $3, status = $4, \
     current_step = $5, steps = $6, started_at = $7, completed_at = $8, dismissed_at = $9, \
     snoozed_until = $10, revision = $11, updated_at = $13 \
     where user_id = $1 and cast($2 as text) = 'onboarding'";

/// The statements that read, create and update a state of `flow`.
fn statements(flow: &str) -> (&'static str, &'static str, &'static str) {
    if flow == ONBOARDING {
        (SELECT_ONBOARDING, INSERT_ONBOARDING, UPDATE_ONBOARDING)
    } else {
        (SELECT_STATE, INSERT_STATE, UPDATE_STATE)
    }
}

const INSERT_EVENT: &str = "insert into flow_event \
     (user_id, flow, version, type, step, actor, request_id, at, data, revision, state) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// The events of the user or group `$1`, for `select_events`.
macro_rules! select_events {
    ($($condition:expr),*) => {
        concat!(
            "select id, user_id, flow, version, type, step, actor, request_id, at, data \
             from flow_event where user_id = $1 ",
            $($condition,)*
            " order by id desc limit $2"
        )
    };
}

/// The events of a user's or a group's states, newest first, at most `$2`:
/// of the flow `$3` when `flow`, else of every flow of `scope`; older than
/// the event `$3` (or `$4`) when `before`. One statement per case, so that
/// each reads one range of an index, (user, flow, id) or (user, id),
/// however long the history.
fn select_events(scope: Scope, flow: bool, before: bool) -> &'static str {
    match (scope, flow, before) {
        (_, true, false) => select_events!("and flow = $3"),
        (_, true, true) => select_events!("and flow = $3 and id < $4"),
        (Scope::User, false, false) => select_events!("and flow not in ", group_flows!()),
        (Scope::User, false, true) => {
            select_events!("and flow not in ", group_flows!(), " and id < $3")
        }
        (Scope::Group, false, false) => select_events!("and flow in ", group_flows!()),
        (Scope::Group, false, true) => {
            select_events!("and flow in ", group_flows!(), " and id < $3")
        }
    }
}

/// The events of the user `$1`'s data, newest first, at most `$2` (older
/// than the event `$3` when paging): those of the user's own states, and
/// those the user made in groups' states (`scope` tells which). Each part
/// reads one index range, by user or (`actor <> user_id`: the partial
/// index) by actor; the last is a group whose id is the user's own.
macro_rules! select_user_data_events {
    ($($before:literal)?) => {
        concat!(
            "select * from (select id, user_id, flow, version, type, step, actor, request_id, \
             at, data, 'USER' as scope from flow_event where user_id = $1 and flow not in ",
            group_flows!(),
            $(" ", $before,)?
            " order by id desc limit $2) as own union all \
             select * from (select id, user_id, flow, version, type, step, actor, request_id, \
             at, data, 'GROUP' as scope from flow_event \
             where actor = $1 and actor <> user_id and flow in ",
            group_flows!(),
            $(" ", $before,)?
            " order by id desc limit $2) as made union all \
             select * from (select id, user_id, flow, version, type, step, actor, request_id, \
             at, data, 'GROUP' as scope from flow_event \
             where user_id = $1 and actor = $1 and flow in ",
            group_flows!(),
            $(" ", $before,)?
            " order by id desc limit $2) as made_in_their_name order by id desc limit $2"
        )
    };
}
const SELECT_KEY: &str =
    "select request, response from idempotency_key where user_id = $1 and key = $2";
const INSERT_KEY: &str = "insert into idempotency_key \
     (user_id, key, request, response, created_at, group_id) values ($1, $2, $3, $4, $5, $6)";

/// Who made a change, for its event.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub actor: String,
    pub request_id: Option<String>,
}

/// An idempotency key and the fingerprint of the change it was sent with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key as kept (see `service::flows::idempotency_key`).
    pub key: String,
    /// The key as the client sent it, for messages.
    pub sent: String,
    pub fingerprint: String,
    /// Whose key it is: the user whose state a USER flow's write changes,
    /// or the member who changes a group's state. Keys of two users never
    /// meet.
    pub owner: String,
    /// The group whose state the write changes, so that erasing the group
    /// finds its answers.
    pub group_id: Option<String>,
}

/// How often a write inserts a state again that an erasure deleted between
/// its insert and its lock, before it answers "retry shortly".
pub(super) const ERASED_MEANWHILE_RETRIES: usize = 3;

/// The connections flows use: a pool for writes and listings, and the
/// database's readers, which answer state reads in groups.
#[derive(Debug, Clone)]
pub struct FlowStore {
    pub(super) backend: Backend,
    readers: Queues,
    live: Live,
}

/// The connections of whichever database the server runs on.
#[derive(Debug, Clone)]
pub(super) enum Backend {
    /// SQLite writes one transaction at a time: its writes go to the
    /// server's one writer, which commits them with the group it holds.
    Sqlite {
        pool: SqlitePool,
        writer: mpsc::Sender<QueuedFlowWrite>,
        /// The writer's turn at the write lock, for other writes of this
        /// process to take theirs.
        gate: super::sqlite::WriteGate,
    },
    /// Postgres writes flows in groups, on writers of their own.
    Postgres { pool: PgPool, writers: FlowWriters },
}

/// What a write decides, given the state it locked: the next state and the
/// events that record it, or `None` to leave it as it is.
/// A write whose group the database refused decides again alone.
pub type Decide = Box<
    dyn Fn(&FlowState) -> crate::domain::Result<Option<(FlowState, Vec<Happened>)>> + Send + Sync,
>;

/// One write of a user's state in a flow: the state to store when the user
/// has none, who makes the change, its idempotency key, its time, and what
/// it decides.
pub struct FlowWrite {
    pub fresh: FlowState,
    pub provenance: Provenance,
    pub idempotency: Option<Idempotency>,
    pub now: DateTime<Utc>,
    pub decide: Decide,
}

impl FlowWrite {
    /// Stores `fresh` unless the user has a state in its flow, and changes
    /// nothing else.
    fn create(fresh: FlowState) -> Self {
        Self {
            now: fresh.updated_at,
            fresh,
            provenance: Provenance {
                actor: String::new(),
                request_id: None,
            },
            idempotency: None,
            decide: Box::new(|_| Ok(None)),
        }
    }
}

/// What `decide` makes of `stored`. A rule that panics fails its own write
/// as an internal error, and leaves the writer that runs it serving.
pub(super) fn decided(
    decide: &Decide,
    stored: &FlowState,
) -> crate::domain::Result<Option<(FlowState, Vec<Happened>)>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(stored)))
        .unwrap_or_else(|_| Err(Error::Internal("a flow rule panicked".into())))
}

/// A flow write waiting for SQLite's writer, and where its answer goes.
pub(super) type QueuedFlowWrite = (FlowWrite, oneshot::Sender<Result<FlowState, Error>>);

/// Runs `write` in a savepoint of the open transaction of SQLite's writer,
/// so that a write that fails is undone alone. The outer error means the
/// savepoint itself failed, and the whole transaction must be rolled back.
pub async fn write_in_savepoint(
    connection: &mut SqliteConnection,
    write: &FlowWrite,
) -> Result<Result<FlowState, Error>, DbError> {
    sqlx::query("savepoint flow_write")
        .execute(&mut *connection)
        .await?;
    let written = on_sqlite::write_on(connection, write).await;
    let end = match written {
        Ok(_) => "release flow_write",
        Err(_) => "rollback to flow_write; release flow_write",
    };
    sqlx::query(end).execute(&mut *connection).await?;
    Ok(written)
}

/// The statements of one backend, as functions over its pool: the same code
/// for both, each compiled against its own driver. `$begin` opens a write
/// transaction that serializes writers; `$row_lock` locks the state read in
/// it; `$flow_lock` serializes publishers of one flow; `$key_lock` writers
/// of one user's idempotency key, so that a retry racing the first sending
/// finds its answer.
macro_rules! backend {
    (
        $module:ident, $db:ty, $session:ident, $begin:expr, $keep_prepared:expr,
        $row_lock:literal, $flow_lock:expr, $key_lock:expr
    ) => {
        pub(super) mod $module {
            use super::*;

            type Pool = sqlx::Pool<$db>;
            type Tx = sqlx::Transaction<'static, $db>;
            type DbRow = <$db as sqlx::Database>::Row;

            type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>;

            async fn begin(pool: &Pool) -> Result<Tx, DbError> {
                Ok(pool.begin_with($begin).await?)
            }

            /// A statement, kept prepared on its connection where that is safe.
            fn query(statement: &str) -> Query<'_> {
                sqlx::query(statement).persistent($keep_prepared)
            }

            pub async fn versions(pool: &Pool) -> Result<Vec<FlowVersion>, DbError> {
                let mut session = $session::open(pool).await?;
                let rows = query(SELECT_VERSIONS).fetch_all(&mut *session).await?;
                $session::close(session).await?;
                rows.iter().map(read_version).collect()
            }

            pub async fn is_published(pool: &Pool, flow: &str) -> Result<bool, DbError> {
                let statement = "select 1 from flow_version where flow = $1 limit 1";
                let mut session = $session::open(pool).await?;
                let found = query(statement)
                    .bind(flow)
                    .fetch_optional(&mut *session)
                    .await?;
                $session::close(session).await?;
                Ok(found.is_some())
            }

            pub async fn publish(
                pool: &Pool,
                declarations: &[FlowDeclaration],
                now: DateTime<Utc>,
            ) -> Result<Vec<(FlowVersion, bool)>, Error> {
                let mut tx = begin(pool).await?;
                let mut published = Vec::with_capacity(declarations.len());
                for declaration in declarations {
                    let flow_lock: Option<&str> = $flow_lock;
                    if let Some(statement) = flow_lock {
                        query(statement)
                            .bind(&declaration.key)
                            .execute(&mut *tx)
                            .await
                            .map_err(DbError::from)?;
                    }
                    let latest = query(SELECT_LATEST)
                        .bind(&declaration.key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(DbError::from)?;
                    let latest = latest.as_ref().map(read_version).transpose()?;
                    let scope = declaration.scope_after(latest.as_ref())?;
                    if let Some(latest) = &latest
                        && latest.declares_the_same(declaration)
                    {
                        published.push((latest.clone(), false));
                        continue;
                    }
                    let version = FlowVersion {
                        flow: declaration.key.clone(),
                        version: latest.map_or(1, |latest| latest.version + 1),
                        title: declaration.title.clone(),
                        steps: declaration.steps.clone(),
                        reonboarding: declaration.reonboarding,
                        scope,
                        published_at: now,
                    };
                    query(INSERT_VERSION)
                        .bind(&version.flow)
                        .bind(version.version)
                        .bind(&version.title)
                        .bind(steps_json(&version.steps))
                        .bind(version.reonboarding.as_str())
                        .bind(version.scope.as_str())
                        .bind(version.published_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(DbError::from)?;
                    published.push((version, true));
                }
                tx.commit().await.map_err(DbError::from)?;
                Ok(published)
            }

            pub async fn states(pool: &Pool, user_id: &str) -> Result<Vec<FlowState>, DbError> {
                let mut session = $session::open(pool).await?;
                let onboarding = query(SELECT_ONBOARDING)
                    .bind(user_id)
                    .bind(ONBOARDING)
                    .fetch_optional(&mut *session)
                    .await?;
                let rows = query(SELECT_STATES)
                    .bind(user_id)
                    .fetch_all(&mut *session)
                    .await?;
                $session::close(session).await?;
                onboarding.iter().chain(&rows).map(read_state).collect()
            }

            /// The statements of a write, in the caller's transaction, which
            /// holds the write lock (SQLite) and commits or rolls back.
            pub(in crate::db) async fn write_on(
                connection: &mut <$db as sqlx::Database>::Connection,
                write: &FlowWrite,
            ) -> Result<FlowState, Error> {
                let FlowWrite {
                    fresh,
                    provenance,
                    idempotency,
                    now,
                    decide,
                } = write;
                if let Some(idempotency) = &idempotency {
                    let key_lock: Option<&str> = $key_lock;
                    if let Some(statement) = key_lock {
                        query(statement)
                            .bind(&idempotency.owner)
                            .bind(&idempotency.key)
                            .execute(&mut *connection)
                            .await
                            .map_err(DbError::from)?;
                    }
                    let kept = query(SELECT_KEY)
                        .bind(&idempotency.owner)
                        .bind(&idempotency.key)
                        .fetch_optional(&mut *connection)
                        .await
                        .map_err(DbError::from)?;
                    if let Some(kept) = kept {
                        let request: String = kept.try_get("request").map_err(DbError::from)?;
                        let response: String = kept.try_get("response").map_err(DbError::from)?;
                        return replay(&request, &response, idempotency);
                    }
                }
                let (select, insert, update) = statements(&fresh.flow);
                let statement = format!("{select}{}", $row_lock);
                let mut locked = None;
                for _ in 0..ERASED_MEANWHILE_RETRIES {
                    bind_state(query(insert), &fresh)
                        .execute(&mut *connection)
                        .await
                        .map_err(DbError::from)?;
                    // None when an erasure deleted the row after the insert
                    // found it: the next round inserts it afresh.
                    locked = query(&statement)
                        .bind(&fresh.user_id)
                        .bind(&fresh.flow)
                        .fetch_optional(&mut *connection)
                        .await
                        .map_err(DbError::from)?;
                    if locked.is_some() {
                        break;
                    }
                }
                let stored = read_state(&locked.ok_or_else(erased_meanwhile)?)?;
                let Some((mut next, happenings)) = decided(decide, &stored)? else {
                    return Ok(stored);
                };
                next.revision = stored.revision + 1;
                next.updated_at = (*now).max(stored.updated_at + TimeDelta::microseconds(1));
                bind_state(query(update), &next)
                    .execute(&mut *connection)
                    .await
                    .map_err(DbError::from)?;
                let snapshot = webhook::snapshot_of(&next);
                for happened in &happenings {
                    query(INSERT_EVENT)
                        .bind(&next.user_id)
                        .bind(&next.flow)
                        .bind(next.version)
                        .bind(happened.kind.as_str())
                        .bind(happened.step.as_deref())
                        .bind(&provenance.actor)
                        .bind(provenance.request_id.as_deref())
                        .bind(next.updated_at)
                        .bind(happened.data.as_ref().map(ToString::to_string))
                        .bind(next.revision)
                        .bind(&snapshot)
                        .execute(&mut *connection)
                        .await
                        .map_err(DbError::from)?;
                }
                if let Some(idempotency) = &idempotency {
                    query(INSERT_KEY)
                        .bind(&idempotency.owner)
                        .bind(&idempotency.key)
                        .bind(&idempotency.fingerprint)
                        .bind(serde_json::to_string(&next).map_err(internal)?)
                        .bind(now)
                        .bind(idempotency.group_id.as_deref())
                        .execute(&mut *connection)
                        .await
                        .map_err(DbError::from)?;
                }
                Ok(next)
            }

            pub async fn events(
                pool: &Pool,
                user_id: &str,
                scope: Scope,
                flow: Option<&str>,
                before: Option<i64>,
                limit: i64,
            ) -> Result<Vec<FlowEvent>, DbError> {
                let mut query = query(select_events(scope, flow.is_some(), before.is_some()))
                    .bind(user_id)
                    .bind(limit);
                if let Some(flow) = flow {
                    query = query.bind(flow);
                }
                if let Some(before) = before {
                    query = query.bind(before);
                }
                let mut session = $session::open(pool).await?;
                let rows = query.fetch_all(&mut *session).await?;
                $session::close(session).await?;
                rows.iter().map(read_event).collect()
            }

            pub async fn user_data_events(
                pool: &Pool,
                user_id: &str,
                before: Option<i64>,
                limit: i64,
            ) -> Result<Vec<FlowEvent>, DbError> {
                let statement = match before {
                    None => select_user_data_events!(),
                    Some(_) => select_user_data_events!("and id < $3"),
                };
                let mut query = query(statement).bind(user_id).bind(limit);
                if let Some(before) = before {
                    query = query.bind(before);
                }
                let mut session = $session::open(pool).await?;
                let rows = query.fetch_all(&mut *session).await?;
                $session::close(session).await?;
                rows.iter()
                    .map(|row| {
                        let event = read_event(row)?;
                        let scope: String = row.try_get("scope")?;
                        Ok(if scope == Scope::Group.as_str() {
                            event.of_group()
                        } else {
                            event
                        })
                    })
                    .collect()
            }

            pub async fn forget_keys_before(
                pool: &Pool,
                before: DateTime<Utc>,
            ) -> Result<u64, DbError> {
                let statement = "delete from idempotency_key where created_at < $1";
                let mut session = $session::open(pool).await?;
                let forgotten = query(statement)
                    .bind(before)
                    .execute(&mut *session)
                    .await?
                    .rows_affected();
                $session::close(session).await?;
                Ok(forgotten)
            }

            fn bind_state<'q>(query: Query<'q>, state: &'q FlowState) -> Query<'q> {
                query
                    .bind(&state.user_id)
                    .bind(&state.flow)
                    .bind(state.version)
                    .bind(state.status.as_str())
                    .bind(state.current_step)
                    .bind(steps_record_json(&state.steps))
                    .bind(state.started_at)
                    .bind(state.completed_at)
                    .bind(state.dismissed_at)
                    .bind(state.snoozed_until)
                    .bind(state.revision)
                    .bind(state.created_at)
                    .bind(state.updated_at)
            }

            fn read_state(row: &DbRow) -> Result<FlowState, DbError> {
                Ok(FlowState::from_row(row)?)
            }

            fn read_version(row: &DbRow) -> Result<FlowVersion, DbError> {
                let steps: String = row.try_get("steps")?;
                let policy: String = row.try_get("reonboarding")?;
                let scope: String = row.try_get("scope")?;
                Ok(FlowVersion {
                    flow: row.try_get("flow")?,
                    version: row.try_get("version")?,
                    title: row.try_get("title")?,
                    steps: serde_json::from_str(&steps).map_err(|_| corrupt("steps", &steps))?,
                    reonboarding: Reonboarding::parse(&policy)
                        .ok_or_else(|| corrupt("reonboarding", &policy))?,
                    scope: Scope::parse(&scope).ok_or_else(|| corrupt("scope", &scope))?,
                    published_at: row.try_get("published_at")?,
                })
            }

            fn read_event(row: &DbRow) -> Result<FlowEvent, DbError> {
                let kind: String = row.try_get("type")?;
                let data: Option<String> = row.try_get("data")?;
                Ok(FlowEvent {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    group_id: None,
                    flow: row.try_get("flow")?,
                    version: row.try_get("version")?,
                    kind: EventType::parse(&kind).ok_or_else(|| corrupt("type", &kind))?,
                    step: row.try_get("step")?,
                    actor: row.try_get("actor")?,
                    request_id: row.try_get("request_id")?,
                    at: row.try_get("at")?,
                    data: data
                        .map(|data| serde_json::from_str(&data).map_err(|_| corrupt("data", &data)))
                        .transpose()?,
                })
            }
        }
    };
}

backend!(
    on_sqlite,
    sqlx::Sqlite,
    sqlite_session,
    "begin immediate",
    true,
    "",
    None,
    None
);
backend!(
    on_postgres,
    sqlx::Postgres,
    pooler,
    pooler::begin_statement(),
    pooler::keep_prepared(),
    " for update",
    Some("select pg_advisory_xact_lock(hashtext('flow_version:' || $1))"),
    Some("select pg_advisory_xact_lock(hashtextextended($1 || chr(10) || $2, 0))")
);

/// SQLite's connections for reads: the pool's own, as they are.
mod sqlite_session {
    use sqlx::Sqlite;
    use sqlx::pool::PoolConnection;
    use sqlx::sqlite::SqlitePool;

    pub async fn open(pool: &SqlitePool) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        pool.acquire().await
    }

    pub async fn close(_: PoolConnection<Sqlite>) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// The answer kept for an idempotency key, given the fingerprint of the
/// change it was first sent with; a conflict when sent with another.
pub(super) fn replay(
    request: &str,
    response: &str,
    idempotency: &Idempotency,
) -> Result<FlowState, Error> {
    if request != idempotency.fingerprint {
        return Err(Error::Conflict {
            message: format!(
                "The idempotency key `{}` was used for another change; use a new key for each \
                 change, and the same key only to retry it.",
                idempotency.sent
            ),
            current_revision: None,
            current_state: None,
        });
    }
    serde_json::from_str(response).map_err(internal)
}

/// Runs the same call on whichever backend the store holds.
macro_rules! dispatch {
    ($store:expr, $function:ident($($argument:expr),*)) => {
        match &$store.backend {
            Backend::Sqlite { pool, .. } => on_sqlite::$function(pool, $($argument),*).await,
            Backend::Postgres { pool, .. } => on_postgres::$function(pool, $($argument),*).await,
        }
    };
}

impl FlowStore {
    pub fn sqlite(
        pool: SqlitePool,
        writer: mpsc::Sender<QueuedFlowWrite>,
        readers: Queues,
        gate: super::sqlite::WriteGate,
        live: Live,
    ) -> Self {
        Self {
            backend: Backend::Sqlite { pool, writer, gate },
            readers,
            live,
        }
    }

    /// Flows on Postgres, with `writers` tasks that write them in groups,
    /// and the permits of the writes they run alone.
    pub fn postgres(
        pool: PgPool,
        readers: Queues,
        writers: usize,
        alone: Arc<tokio::sync::Semaphore>,
        live: Live,
    ) -> Self {
        let writers = FlowWriters::start(&pool, writers, alone);
        Self {
            backend: Backend::Postgres { pool, writers },
            readers,
            live,
        }
    }

    /// Word of committed changes to the states subscriptions watch.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Every published version of every flow, by flow then version.
    pub async fn versions(&self) -> Result<Vec<FlowVersion>, DbError> {
        dispatch!(self, versions())
    }

    /// Whether `flow` has a published version.
    pub async fn is_published(&self, flow: &str) -> Result<bool, DbError> {
        dispatch!(self, is_published(flow))
    }

    /// Publishes each declaration that differs from its flow's latest
    /// version, all or none; returns each flow's latest version and whether
    /// this call created it.
    pub async fn publish(
        &self,
        declarations: Vec<FlowDeclaration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(FlowVersion, bool)>, Error> {
        let store = self.clone();
        to_the_end(async move { dispatch!(&store, publish(&declarations, now)) }).await
    }

    /// The user's stored state in `flow`, if any.
    pub async fn state(&self, user_id: &str, flow: &str) -> Result<Option<FlowState>, DbError> {
        self.readers.flow_state(user_id, flow).await
    }

    /// Every stored state of the user (flows other than `onboarding`).
    pub async fn states(&self, user_id: &str) -> Result<Vec<FlowState>, DbError> {
        dispatch!(self, states(user_id))
    }

    /// Stores `fresh` unless the user already has a state in its flow, and
    /// returns the one stored: concurrent first accesses all get the same.
    pub async fn create(&self, fresh: FlowState) -> Result<FlowState, Error> {
        self.write(FlowWrite::create(fresh)).await
    }

    /// One write, in one transaction: replays an idempotent retry; or locks
    /// the user's state (stored from `fresh` if missing), lets `decide` work
    /// out the next state and its event, and stores both, the revision one
    /// up and `updated_at` past the stored one.
    pub async fn write(&self, write: FlowWrite) -> Result<FlowState, Error> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let (answer, answered) = oneshot::channel();
                writer.send((write, answer)).await.map_err(|_| closed())?;
                answered.await.map_err(|_| closed())?
            }
            Backend::Postgres { writers, .. } => writers.write(write).await,
        }
    }

    /// The user's events, newest first: of one flow or all, older than the
    /// event `before` when given, at most `limit`.
    pub async fn events(
        &self,
        user_id: &str,
        scope: Scope,
        flow: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<FlowEvent>, DbError> {
        dispatch!(self, events(user_id, scope, flow, before, limit))
    }

    /// The events of the user's data, newest first, older than the event
    /// `before` when given, at most `limit`: those of the user's own states,
    /// and those the user made in groups' states.
    pub async fn user_data_events(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<FlowEvent>, DbError> {
        dispatch!(self, user_data_events(user_id, before, limit))
    }

    /// Lets the queued writes finish and closes the store's connections
    /// (Postgres's pool is the server's own, closed with it).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { pool, .. } => pool.close().await,
            Backend::Postgres { writers, .. } => writers.close().await,
        }
    }

    /// Forgets idempotency keys stored before `before`.
    pub async fn forget_keys_before(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        dispatch!(self, forget_keys_before(before))
    }
}

/// A write whose row an erasure deleted again and again between insert and
/// lock: rare, and worth a retry.
pub(super) fn erased_meanwhile() -> Error {
    Error::Unavailable("the user's state was erased while it was written".into())
}

/// Runs a transaction to its commit or rollback in a task of its own. A
/// client that goes away drops its request's future; dropped in the middle
/// of `begin`, sqlx can hand the connection back to the pool inside a
/// transaction it no longer knows of, and the next statement on it would
/// never commit.
pub(super) async fn to_the_end<T: Send + 'static>(
    transaction: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(transaction)
        .await
        .map_err(|error| Error::Internal(Box::new(error)))?
}

fn steps_json(steps: &[StepDeclaration]) -> String {
    serde_json::to_string(steps).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn steps_record_json(steps: &BTreeMap<String, StepRecord>) -> String {
    serde_json::to_string(steps).unwrap_or_else(|_| "{}".to_owned())
}

/// Reads a row of `flow_state_columns!()`, by position, from either backend.
impl<'r, R> sqlx::FromRow<'r, R> for FlowState
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        let status: &str = row.try_get(3)?;
        let steps: &str = row.try_get(5)?;
        Ok(Self {
            user_id: row.try_get(0)?,
            flow: row.try_get(1)?,
            version: row.try_get(2)?,
            status: FlowStatus::parse(status).ok_or_else(|| corrupt("status", status))?,
            current_step: row.try_get(4)?,
            steps: serde_json::from_str(steps).map_err(|_| corrupt("steps", steps))?,
            started_at: row.try_get(6)?,
            completed_at: row.try_get(7)?,
            dismissed_at: row.try_get(8)?,
            snoozed_until: row.try_get(9)?,
            revision: row.try_get(10)?,
            created_at: row.try_get(11)?,
            updated_at: row.try_get(12)?,
        })
    }
}

/// A stored value this code did not write: reported as a fault.
fn corrupt(column: &str, value: &str) -> sqlx::Error {
    let shown: String = value.chars().take(64).collect();
    sqlx::Error::Decode(format!("unexpected {column} in the database: {shown:?}").into())
}

pub(super) fn internal(error: serde_json::Error) -> Error {
    Error::Internal(Box::new(error))
}
