//! Postgres: a connection pool, and reads and writes that wait together
//! served by one statement each instead of one round trip apiece.
//!
//! Every write is a single upsert, atomic on its own; replicas write side by
//! side, so the statements themselves move `updated_at` past the stored one.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use tokio::sync::Semaphore;

use super::groups::{self, Queues, Reader, Write, WriteQueue, WriteRequest, gather};
use super::{ACQUIRE_TIMEOUT, ConnectError, DbError, FlowStore, Live, Result, Upserts, pooler};
use crate::config::{DatabaseArgs, Pooler};
use crate::domain::{Change, FlowState, OnboardingState, Step};

/// The rows of a group: `$1` user ids, `$2` steps, `$3` times; then the
/// created and updated times. In the order of their user ids, the order in
/// which every statement on every replica locks rows, so that two never
/// wait for each other (a deadlock).
macro_rules! rows {
    ($($column:literal),+) => {
        concat!(
            "select ", $($column, ", ",)+ "w.n, w.n from unnest($1::text[], $2::int4[], $3::timestamptz[]) as w(u, s, n) order by w.u"
        )
    };
}

/// The rows an original-API write inserts: the state's columns, then its
/// status, start time and revision.
macro_rules! written_rows {
    ($completed:literal, $completed_at:literal, $status:literal, $started_at:literal) => {
        concat!(
            "select w.u, ",
            $completed,
            ", w.s, ",
            $completed_at,
            ", w.n, w.n, '",
            $status,
            "', ",
            $started_at,
            ", 1 from unnest($1::text[], $2::int4[], $3::timestamptz[]) as w(u, s, n) \
             where (select count(*) from held) >= 0 order by w.u"
        )
    };
}

/// An original-API write and its events, in one statement: the upsert, and
/// an event per row it wrote, with `$4` the actors and `$5` the request ids.
/// `$held` comes first: for a group, the rows that exist, locked in the
/// order of their user ids, and the statement fails at once if another
/// transaction holds one (its writes are then tried alone, so that only
/// they wait for it); for a write alone, nothing.
macro_rules! logged {
    ($held:expr, $upsert:expr, $type:literal, $data:ident) => {
        concat!(
            "with held as (",
            $held,
            "), written as (",
            $upsert,
            "), logged as (",
            event_columns!(),
            "select written.user_id, 'onboarding', written.version, '",
            $type,
            "', w.a, w.r, written.updated_at, ",
            event_data!($data),
            ", written.revision, json_build_object('status', written.status, \
             'currentStep', written.current_step, 'completedAt', written.completed_at, \
             'done', (select coalesce(json_agg(k), '[]') from json_object_keys(written.steps::json) \
             as k))::text \
             from written join unnest($1::text[], $4::text[], $5::text[]) as w(u, a, r) \
             on w.u = written.user_id) select ",
            columns!(),
            " from written"
        )
    };
}

/// What an original-API event carries: the step written, or nothing.
macro_rules! event_data {
    (step) => {
        "json_build_object('step', written.current_step)::text"
    };
    (none) => {
        "null"
    };
}

/// Every state among the user ids of `$1`.
const FIND_ANY: &str = concat!(
    "select ",
    columns!(),
    " from onboarding_state where user_id = any($1)"
);

/// The states of every (user id, flow) pair of `$1` and `$2`.
const FIND_FLOW_STATES: &str = concat!(
    "select ",
    flow_state_columns!(),
    " from flow_state where (user_id, flow) in (select * from unnest($1::text[], $2::text[]))"
);

/// The states in the built-in flow `onboarding` of the user ids of `$1`.
const FIND_ONBOARDING_FLOW_STATES: &str = concat!(
    "select ",
    onboarding_flow_columns!(),
    " from onboarding_state where user_id = any($1)"
);

/// Fresh states for the users of the group that have none.
const CREATE_MISSING: &str = concat!(
    "insert into onboarding_state (",
    created_columns!(),
    ") ",
    rows!("w.u", "false", "0", "null::timestamptz"),
    " on conflict (user_id) do nothing"
);

/// The rows of a group that exist, locked, without waiting for any.
macro_rules! logged_group {
    ($upsert:expr, $type:literal, $data:ident) => {
        logged!(
            "select 1 from onboarding_state where user_id = any($1) order by user_id \
             for update nowait",
            $upsert,
            $type,
            $data
        )
    };
}

/// Nothing held ahead: a write alone waits for its row.
macro_rules! logged_alone {
    ($upsert:expr, $type:literal, $data:ident) => {
        logged!("select 1 where false", $upsert, $type, $data)
    };
}

/// The original API's upserts, each wrapped by `$logged`.
macro_rules! original_upserts {
    ($logged:ident) => {
        upserts!(
            $logged,
            written_rows!("true", "w.n", "COMPLETED", "w.n"),
            written_rows!("false", "null::timestamptz", "IN_PROGRESS", "w.n"),
            written_rows!(
                "false",
                "null::timestamptz",
                "NOT_STARTED",
                "null::timestamptz"
            ),
            "greatest(excluded.updated_at, onboarding_state.updated_at + interval '1 microsecond')"
        )
    };
}

/// The writes of a group.
const UPSERTS: Upserts = original_upserts!(logged_group);

/// The same writes, one at a time.
const UPSERTS_ALONE: Upserts = original_upserts!(logged_alone);

/// The Postgres database: its pool, and the queues to the tasks that group
/// reads and writes on it.
#[derive(Debug, Clone)]
pub struct Postgres {
    pool: PgPool,
    queues: Queues,
    flows: FlowStore,
    /// For connections of their own, without the requests' timeouts.
    options: Option<Arc<PgConnectOptions>>,
}

/// Every statement planned for the parameters it runs with. A prepared
/// statement otherwise keeps, after a few runs, a generic plan made for the
/// table as it was: one made while a table was small (a new database, the
/// first minute of a deployment) scans it whole on every run, however large
/// it grows, until the next `analyze`. The statements are short and run for
/// whole groups, so planning them each time costs little.
const PLANNED_EACH_TIME: (&str, &str) = ("plan_cache_mode", "force_custom_plan");

/// How long a pooled connection lives: after a failover, the last
/// connection to the old server is gone within it, whatever happens.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// When, in milliseconds since `CLOCK_START`, a statement last met a server
/// that cannot take writes or is going away (a standby, a read-only server,
/// one shutting down): connections opened before it are closed rather than
/// used again, so that a failover is followed at once. 0: never.
static FAILOVER_SEEN_AT_MS: AtomicU64 = AtomicU64::new(0);

/// The process's monotonic clock, from its first use.
fn since_start() -> Duration {
    static CLOCK_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    CLOCK_START.get_or_init(Instant::now).elapsed()
}

fn millis_since_start(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Notes `error` when the server said it cannot take writes or is going
/// away: read-only (25006), shutting down or not up (57P01 to 57P03).
pub fn note_failover(error: &sqlx::Error) {
    let failover = error.as_database_error().is_some_and(|error| {
        error
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "25006" | "57P01" | "57P02" | "57P03"))
    });
    if failover {
        note_failover_now();
    }
}

fn note_failover_now() {
    FAILOVER_SEEN_AT_MS.fetch_max(millis_since_start(since_start()), Ordering::Relaxed);
}

/// Whether a connection of `age` was opened before the last failover seen.
fn opened_before_failover(age: Duration) -> bool {
    let seen = FAILOVER_SEEN_AT_MS.load(Ordering::Relaxed);
    seen != 0 && millis_since_start(since_start().saturating_sub(age)) <= seen
}

impl Postgres {
    /// Connects as `args` say: one direct connection first, for the reason
    /// if it fails, then the pool, its writers and readers.
    pub async fn connect(args: &DatabaseArgs) -> Result<Self, ConnectError> {
        // No floats are read; a pooler (PgBouncer) refuses the start-up
        // parameter unless told to ignore it, and the timeouts are set once
        // connected for the same reason.
        let options = PgConnectOptions::from_str(&args.database_url)
            .map_err(ConnectError::InvalidUrl)?
            .extra_float_digits(None);
        let settings = [
            ("statement_timeout", millis(args.database_statement_timeout)),
            ("lock_timeout", millis(args.database_lock_timeout)),
            (PLANNED_EACH_TIME.0, PLANNED_EACH_TIME.1.to_owned()),
        ];
        let set = |scope: &str| {
            settings
                .iter()
                .map(|(name, value)| format!("set {scope}{name} = '{value}'; "))
                .collect::<String>()
        };
        // Behind a transaction pooler a session's settings would stay with
        // the server it reached, for whichever client gets it next: each
        // transaction sets them for itself instead.
        let behind_transaction_pooler = args.database_pooler == Pooler::Transaction;
        if behind_transaction_pooler {
            pooler::serve_behind_transaction_pooler(&set("local "));
        }
        let session_settings: Arc<str> = set("").into();
        // The pool retries until its timeout and then reports only that, not
        // why (refused, unknown host, wrong password, no such database).
        tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| ConnectError::NoAnswer(ACQUIRE_TIMEOUT.as_secs()))?
            .map_err(|error| ConnectError::postgres(error, &options))?
            .close()
            .await
            .map_err(ConnectError::Connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(args.database_max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .max_lifetime(CONNECTION_LIFETIME)
            // A broken connection fails the one statement that finds it and
            // is replaced; a ping before every statement would double the
            // round trips of every request. A connection opened before a
            // failover is closed instead of used.
            .test_before_acquire(false)
            .before_acquire(|_, meta| {
                Box::pin(async move { Ok(!opened_before_failover(meta.age)) })
            })
            .after_connect(move |connection, _| {
                let settings = Arc::clone(&session_settings);
                Box::pin(async move {
                    if !behind_transaction_pooler {
                        sqlx::Executor::execute(connection, &*settings).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(ConnectError::Connect)?;
        let listen = match &args.database_listen_url {
            Some(url) => PgConnectOptions::from_str(url)
                .map_err(ConnectError::InvalidUrl)?
                .extra_float_digits(None),
            None => {
                if behind_transaction_pooler {
                    tracing::warn!(
                        "DATABASE_POOLER=transaction without DATABASE_LISTEN_URL: live updates \
                         listen through the pooler, which cannot carry LISTEN; set \
                         DATABASE_LISTEN_URL to a direct connection"
                    );
                }
                options.clone()
            }
        };
        let live = Live::postgres(pool.clone(), listen);
        Ok(Self {
            options: Some(Arc::new(options)),
            ..Self::start(pool, args.database_max_connections, live)
        })
    }

    /// The migrations applied (version, description); none before the first.
    pub async fn applied_migrations(&self) -> Result<Vec<(i64, String)>, sqlx::Error> {
        use super::migrations::{APPLIED, POSTGRES_HAS_TABLE};
        let mut session = pooler::open(&self.pool).await?;
        let migrated: bool = sqlx::query_scalar(POSTGRES_HAS_TABLE)
            .persistent(pooler::keep_prepared())
            .fetch_one(&mut *session)
            .await?;
        let applied = if migrated {
            sqlx::query_as(APPLIED)
                .persistent(pooler::keep_prepared())
                .fetch_all(&mut *session)
                .await?
        } else {
            Vec::new()
        };
        pooler::close(session).await?;
        Ok(applied)
    }

    /// Whether the server takes writes: not a standby, not read-only. A
    /// server that does not counts as a failover seen.
    pub async fn check_writable(&self) -> Result<()> {
        let statement = "select not pg_is_in_recovery() \
             and current_setting('transaction_read_only') = 'off'";
        let mut session = pooler::open(&self.pool).await?;
        let writable: bool = sqlx::query_scalar(statement)
            .persistent(pooler::keep_prepared())
            .fetch_one(&mut *session)
            .await?;
        pooler::close(session).await?;
        if writable {
            return Ok(());
        }
        note_failover_now();
        Err(DbError::from(sqlx::Error::Protocol(
            "the database is read-only (a standby, or in recovery)".to_owned(),
        )))
    }

    /// Starts the writers and the readers on `pool`. Writers work side by
    /// side, so that a group waiting for a locked row holds up only itself.
    pub fn start(pool: PgPool, max_connections: u32, live: Live) -> Self {
        let readers = groups::readers(max_connections);
        let writers = readers;
        // Writes run alone (a group met a held row) take at most half the
        // pool, however many a held row sends alone: the rest stays for
        // groups and reads.
        let alone = Arc::new(Semaphore::new((max_connections as usize / 2).max(1)));
        let (queues, write_queue, read_queue) = Queues::new(writers, readers);
        for _ in 0..writers {
            queues.started(tokio::spawn(write_groups(
                pool.clone(),
                write_queue.clone(),
                Arc::clone(&alone),
            )));
        }
        for _ in 0..readers {
            queues.started(tokio::spawn(groups::read_groups(
                pool.clone(),
                read_queue.clone(),
            )));
        }
        let flows = FlowStore::postgres(pool.clone(), queues.clone(), writers, alone, live);
        Self {
            pool,
            queues,
            flows,
            options: None,
        }
    }

    /// Applies the pending migrations on a connection of their own: with
    /// no statement or lock timeout, which a migration on a large table (an
    /// index built concurrently) or one waiting for another replica's
    /// migration lock would exceed.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let migrator = super::migrations::migrator(super::migrations::POSTGRES);
        let Some(options) = &self.options else {
            return migrator.run(&self.pool).await;
        };
        let mut connection = PgConnection::connect_with(options.as_ref()).await?;
        sqlx::Executor::execute(
            &mut connection,
            "set statement_timeout = 0; set lock_timeout = 0",
        )
        .await?;
        let lock = migration_lock(&mut connection).await?;
        let mut migrator = migrator;
        migrator.set_locking(false);
        let migrated = migrator.run(&mut connection).await;
        let unlocked = sqlx::query("select pg_advisory_unlock($1)")
            .bind(lock)
            .execute(&mut connection)
            .await;
        let _ = connection.close().await;
        migrated?;
        unlocked?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn flows(&self) -> &FlowStore {
        &self.flows
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }
}

/// Takes the lock that serializes migrations of the connection's database,
/// the one sqlx takes (so that older releases wait for it too), and returns
/// its id. It is tried again and again rather than waited for in one
/// statement: `create index concurrently`, in another replica's migration,
/// waits for every statement in progress, and one waiting for the lock it
/// holds would wait forever (a deadlock, which fails the start).
async fn migration_lock(connection: &mut PgConnection) -> Result<i64, sqlx::Error> {
    const CRC_32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut *connection)
        .await?;
    let lock = 0x3d32_ad9e * i64::from(CRC_32.checksum(database.as_bytes()));
    let mut said = false;
    loop {
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(lock)
            .fetch_one(&mut *connection)
            .await?;
        if locked {
            return Ok(lock);
        }
        if !said {
            tracing::info!("waiting for another process's migrations to finish");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A timeout as Postgres reads it, in milliseconds.
fn millis(timeout: Duration) -> String {
    format!("{}ms", timeout.as_millis())
}

/// The pool answers each kind of read in a group with one statement.
impl Reader for PgPool {
    async fn states(&mut self, user_ids: Vec<&str>) -> Result<Vec<OnboardingState>> {
        fetch_all(self, sqlx::query_as(FIND_ANY).bind(user_ids)).await
    }

    async fn flow_states(&mut self, keys: Vec<(&str, &str)>) -> Result<Vec<FlowState>> {
        let (user_ids, flows): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
        fetch_all(
            self,
            sqlx::query_as(FIND_FLOW_STATES).bind(user_ids).bind(flows),
        )
        .await
    }

    async fn onboarding_flow_states(&mut self, user_ids: Vec<&str>) -> Result<Vec<FlowState>> {
        fetch_all(
            self,
            sqlx::query_as(FIND_ONBOARDING_FLOW_STATES).bind(user_ids),
        )
        .await
    }

    /// The pool is the server's, closed with it.
    async fn finish(self) {}
}

type QueryAs<'q, T> = sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>;

/// The rows of `query`, a statement on its own.
async fn fetch_all<'q, T>(pool: &PgPool, query: QueryAs<'q, T>) -> Result<Vec<T>>
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let mut session = pooler::open(pool).await?;
    let rows = query
        .persistent(pooler::keep_prepared())
        .fetch_all(&mut *session)
        .await?;
    pooler::close(session).await?;
    Ok(rows)
}

async fn find_any(pool: &PgPool, ids: Vec<String>) -> Result<HashMap<String, OnboardingState>> {
    let states: Vec<OnboardingState> = fetch_all(pool, sqlx::query_as(FIND_ANY).bind(ids)).await?;
    Ok(states
        .into_iter()
        .map(|state| (state.user_id.clone(), state))
        .collect())
}

/// The writer: every write waiting, up to a group, in as few statements as
/// the group allows (one for each kind of write, in rounds where a user
/// appears at most once), each answered once its statement has committed.
async fn write_groups(pool: PgPool, queue: WriteQueue, alone: Arc<Semaphore>) {
    while let Ok(first) = queue.recv_async().await {
        let (group, close) = gather(first, || queue.try_recv().ok());
        let mut waiting = group;
        while !waiting.is_empty() {
            let (round, later) = one_round(waiting);
            write_round(&pool, &alone, round).await;
            waiting = later;
        }
        if close {
            break;
        }
    }
}

/// The first write of each user in `group`, and the writes that come after.
fn one_round(group: Vec<WriteRequest>) -> (Vec<WriteRequest>, Vec<WriteRequest>) {
    let mut seen = std::collections::HashSet::new();
    group
        .into_iter()
        .partition(|request| seen.insert(request.user.0.as_str().to_owned()))
}

/// Writes a round: users are distinct, so one statement per kind of write.
/// When a statement loses to another transaction (a row held elsewhere,
/// which a group does not wait for; a deadlock), each of its rows is written
/// alone, side by side and in tasks of their own, so that only the requests
/// whose rows are held wait for them while the writer goes on.
async fn write_round(pool: &PgPool, alone: &Arc<Semaphore>, round: Vec<WriteRequest>) {
    let mut kinds: HashMap<Kind, Vec<WriteRequest>> = HashMap::new();
    for request in round {
        kinds
            .entry(Kind::of(&request.user.1))
            .or_default()
            .push(request);
    }
    for (kind, requests) in kinds {
        let rows: Vec<Row> = requests.iter().map(Row::of).collect();
        match write_rows(pool, kind, &rows, true).await {
            // Only when the statement lost to another transaction: after any
            // other error (a connection lost mid-commit) a row may be written.
            Err(error) if error.is_contended() => {
                let (pool, permits) = (pool.clone(), Arc::clone(alone));
                tokio::spawn(async move {
                    let alone = each_alone(&pool, &permits, kind, rows).await;
                    for (request, written) in requests.into_iter().zip(&alone) {
                        answer(request, written.as_ref());
                    }
                });
            }
            written => {
                for request in requests {
                    answer(request, written.as_ref());
                }
            }
        }
    }
}

/// Answers `request` with its state among those `written` left.
fn answer(request: WriteRequest, written: Result<&HashMap<String, OnboardingState>, &DbError>) {
    let state = written
        .map(|states| states.get(request.user.0.as_str()).cloned())
        .map_err(Clone::clone);
    let _ = request.answer.send(state);
}

/// One write's row: the user, the step, the time, the actor, the request id.
#[derive(Debug)]
struct Row {
    user_id: String,
    step: i32,
    now: DateTime<Utc>,
    actor: String,
    request_id: Option<String>,
}

impl Row {
    fn of(request: &WriteRequest) -> Self {
        let (actor, request_id) = match &request.user.1 {
            Write::Apply(_, provenance) => {
                (provenance.actor.clone(), provenance.request_id.clone())
            }
            Write::Create => (String::new(), None),
        };
        Self {
            user_id: request.user.0.as_str().to_owned(),
            step: step_of(&request.user.1).get(),
            now: request.now,
            actor,
            request_id,
        }
    }
}

/// The states `rows` of one kind of write leave, by user id: one statement,
/// for a group (`together`: it waits for no row held elsewhere) or alone.
async fn write_rows(
    pool: &PgPool,
    kind: Kind,
    rows: &[Row],
    together: bool,
) -> Result<HashMap<String, OnboardingState>> {
    let steps: Vec<i32> = rows.iter().map(|row| row.step).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|row| row.now).collect();
    let Some(upsert) = kind.statement(together) else {
        let ids = rows.iter().map(|row| row.user_id.clone()).collect();
        return create_missing(pool, ids, steps, times).await;
    };
    let ids: Vec<&str> = rows.iter().map(|row| row.user_id.as_str()).collect();
    let actors: Vec<&str> = rows.iter().map(|row| row.actor.as_str()).collect();
    let request_ids: Vec<Option<&str>> = rows.iter().map(|row| row.request_id.as_deref()).collect();
    let states: Vec<OnboardingState> = fetch_all(
        pool,
        sqlx::query_as(upsert)
            .bind(ids)
            .bind(steps)
            .bind(times)
            .bind(actors)
            .bind(request_ids),
    )
    .await?;
    Ok(states
        .into_iter()
        .map(|state| (state.user_id.clone(), state))
        .collect())
}

/// Each of `rows` in a statement of its own, all at once (as many as
/// `alone` has permits); a deadlock is retried once. The results in the
/// order of `rows`.
async fn each_alone(
    pool: &PgPool,
    alone: &Arc<Semaphore>,
    kind: Kind,
    rows: Vec<Row>,
) -> Vec<Result<HashMap<String, OnboardingState>>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, row) in rows.into_iter().enumerate() {
        let (pool, alone) = (pool.clone(), Arc::clone(alone));
        tasks.spawn(async move {
            // The semaphore is never closed.
            let _permit = alone.acquire_owned().await;
            let row = [row];
            let mut written = write_rows(&pool, kind, &row, false).await;
            if written.as_ref().is_err_and(DbError::is_deadlock) {
                written = write_rows(&pool, kind, &row, false).await;
            }
            (index, written)
        });
    }
    let mut results = tasks.join_all().await;
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, written)| written).collect()
}

/// Creates the states that are missing, then reads them all. A state an
/// erasure deleted between the two statements is created again.
async fn create_missing(
    pool: &PgPool,
    ids: Vec<String>,
    steps: Vec<i32>,
    times: Vec<DateTime<Utc>>,
) -> Result<HashMap<String, OnboardingState>> {
    let mut found = HashMap::new();
    let mut missing: Vec<_> = ids.into_iter().zip(steps).zip(times).collect();
    for _ in 0..3 {
        let ((ids, steps), times): ((Vec<_>, Vec<_>), Vec<_>) = missing.iter().cloned().unzip();
        let mut session = pooler::open(pool).await?;
        sqlx::query(CREATE_MISSING)
            .persistent(pooler::keep_prepared())
            .bind(&ids)
            .bind(steps)
            .bind(times)
            .execute(&mut *session)
            .await?;
        pooler::close(session).await?;
        found.extend(find_any(pool, ids).await?);
        missing.retain(|((id, _), _)| !found.contains_key(id));
        if missing.is_empty() {
            break;
        }
    }
    Ok(found)
}

/// The kinds of write, each one statement for a whole round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Create,
    Complete,
    SetStep,
    Reset,
}

impl Kind {
    fn of(write: &Write) -> Self {
        match write {
            Write::Create => Kind::Create,
            Write::Apply(Change::Complete(_), _) => Kind::Complete,
            Write::Apply(Change::SetStep(_), _) => Kind::SetStep,
            Write::Apply(Change::Reset, _) => Kind::Reset,
        }
    }

    /// The statement for a group (`together`), or for a write alone.
    fn statement(self, together: bool) -> Option<&'static str> {
        let upserts = if together { &UPSERTS } else { &UPSERTS_ALONE };
        match self {
            Kind::Create => None,
            Kind::Complete => Some(upserts.complete),
            Kind::SetStep => Some(upserts.set_step),
            Kind::Reset => Some(upserts.reset),
        }
    }
}

/// The step a write binds: its change's, or the first for a new state.
fn step_of(write: &Write) -> Step {
    match write {
        Write::Apply(change, _) => UPSERTS.of(*change).1,
        Write::Create => Step::FIRST,
    }
}
