//! The one place that knows SQL: the connections to either backend, the
//! embedded migrations, and the statements that read and write states.
//!
//! Both backends run the same statements: `$N` parameters, `on conflict`
//! upserts and `returning` mean the same in SQLite and Postgres. Only the
//! `updated_at` a write sets, and how a list of user ids is passed, differ
//! per dialect. SQLite's side (one writer that commits writes in groups, and
//! readers that answer reads in groups) is in `sqlite.rs`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgConnectOptions;

use groups::{Queues, Write};
use sqlx::sqlite::SqliteError;

use crate::config::DatabaseArgs;
use crate::domain::{Change, OnboardingState, Step, UserId};

pub use erasure::{Erased, ErasedGroup};
pub use flows::{Decide, FlowStore, FlowWrite, Idempotency, Provenance};
pub use live::{Live, Watch};
pub use migrations::MigrationStatus;
pub use postgres::Postgres;
pub use sqlite::Sqlite;
pub use webhooks::{
    DISABLED_BY_ADMIN, EndpointFields, EndpointHealth, FanOut, NewMessage, Outcome, StoredEndpoint,
    StoredMessage, WebhookStore,
};

/// How long a request waits for a free connection before failing.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns of `onboarding_state` a fresh state is inserted with.
macro_rules! created_columns {
    () => {
        "user_id, is_completed, current_step, completed_at, created_at, updated_at"
    };
}

/// The columns of `onboarding_state`, in the order `OnboardingState` reads them.
macro_rules! columns {
    () => {
        concat!(created_columns!(), ", revision")
    };
}

/// The flows whose states and events are groups' (`user_id` then holds
/// the group's id), for statements about one user's or one group's rows.
macro_rules! group_flows {
    () => {
        "(select flow from flow_version where scope = 'GROUP')"
    };
}

/// The columns of `flow_state`, in the order `FlowState` reads them.
macro_rules! flow_state_columns {
    () => {
        "user_id, flow, version, status, current_step, steps, started_at, completed_at, \
         dismissed_at, snoozed_until, revision, created_at, updated_at"
    };
}

/// The same columns for the built-in flow `onboarding`, whose states are
/// the rows of `onboarding_state`.
macro_rules! onboarding_flow_columns {
    () => {
        "user_id, 'onboarding' as flow, version, status, current_step, steps, started_at, \
         completed_at, dismissed_at, snoozed_until, revision, created_at, updated_at"
    };
}

/// The columns an original-API write inserts: the state's, and the flow
/// state's status, start and revision.
macro_rules! inserted_columns {
    () => {
        concat!(created_columns!(), ", status, started_at, revision")
    };
}

/// One atomic statement that creates the states of `$rows` or, where they
/// exist, updates them with `$set`; it returns the state and its flow
/// version. `$1` holds the user ids, `$2` the steps, `$3` the times: one of
/// each in SQLite, arrays of them in Postgres. `$rows` give every column of
/// `inserted_columns!()`.
macro_rules! upsert {
    ($rows:expr, $($set:tt)+) => {
        concat!(
            "insert into onboarding_state (",
            inserted_columns!(),
            ") ",
            $rows,
            " on conflict (user_id) do update set ",
            $($set)+,
            ", revision = onboarding_state.revision + 1 returning ",
            columns!(),
            ", version, status, steps"
        )
    };
}

/// The upserts of one dialect, given the expression for the time a write sets.
struct Upserts {
    complete: &'static str,
    set_step: &'static str,
    reset: &'static str,
}

/// The three upserts of the original API, given the rows each inserts and
/// the expression for the time a write sets, each wrapped by `$logged!`,
/// the dialect's way to append its event in the same atomic write. Each is
/// also a write of the built-in flow `onboarding`: its status follows, the
/// first write starts it, and its revision goes one up.
macro_rules! upserts {
    ($logged:ident, $completed_rows:expr, $step_rows:expr, $reset_rows:expr, $written_at:literal) => {
        Upserts {
            complete: $logged!(
                upsert!(
                    $completed_rows,
                    "is_completed = true, current_step = excluded.current_step, completed_at = ",
                    $written_at,
                    ", updated_at = ",
                    $written_at,
                    ", status = 'COMPLETED', snoozed_until = null, \
                     started_at = coalesce(onboarding_state.started_at, excluded.started_at)"
                ),
                "FLOW_COMPLETED",
                step
            ),
            set_step: $logged!(
                upsert!(
                    $step_rows,
                    "current_step = excluded.current_step, updated_at = ",
                    $written_at,
                    ", status = case when onboarding_state.status = 'NOT_STARTED' \
                     then 'IN_PROGRESS' else onboarding_state.status end, \
                     started_at = coalesce(onboarding_state.started_at, excluded.started_at)"
                ),
                "STEP_SET",
                step
            ),
            reset: $logged!(
                upsert!(
                    $reset_rows,
                    "is_completed = false, current_step = excluded.current_step, \
                     completed_at = null, updated_at = ",
                    $written_at,
                    ", status = 'NOT_STARTED', started_at = null, dismissed_at = null, \
                     snoozed_until = null, steps = '{}'"
                ),
                "RESET",
                none
            ),
        }
    };
}

/// The columns of an event an original-API write appends.
macro_rules! event_columns {
    () => {
        "insert into flow_event \
         (user_id, flow, version, type, actor, request_id, at, data, revision, state) "
    };
}

mod erasure;
mod flow_groups;
mod flows;
mod groups;
mod live;
mod migrations;
mod pooler;
mod postgres;
mod sqlite;
mod webhooks;

impl Upserts {
    /// The statement for `change` and the step it binds as `$2`.
    fn of(&self, change: Change) -> (&'static str, Step) {
        match change {
            Change::Complete(step) => (self.complete, step),
            Change::SetStep(step) => (self.set_step, step),
            Change::Reset => (self.reset, Step::FIRST),
        }
    }
}

/// Reads a row of `columns!()`, by position, from either backend.
impl<'r, R> sqlx::FromRow<'r, R> for OnboardingState
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Self {
            user_id: row.try_get(0)?,
            is_completed: row.try_get(1)?,
            current_step: row.try_get(2)?,
            completed_at: row.try_get(3)?,
            created_at: row.try_get(4)?,
            updated_at: row.try_get(5)?,
            revision: row.try_get(6)?,
        })
    }
}

/// A database failure, shared by every request of a group that it failed.
#[derive(Debug, Clone)]
pub struct DbError(Arc<sqlx::Error>);

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        postgres::note_failover(&error);
        Self(Arc::new(error))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A write that lost to another one (a lock held past the timeout, a
/// deadlock) and a database that cannot serve right now are worth a retry;
/// anything else is a fault, logged and reported as internal.
impl From<DbError> for crate::domain::Error {
    fn from(error: DbError) -> Self {
        if error.is_contended() {
            Self::Busy(Box::new(error))
        } else if error.is_unavailable() {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Internal(Box::new(error))
        }
    }
}

impl DbError {
    /// Whether the database cannot serve right now (down, out of connections,
    /// locked by another process) rather than a fault in the request.
    pub fn is_unavailable(&self) -> bool {
        is_unavailable(&self.0)
    }

    /// Whether Postgres gave up on the statement for another transaction's
    /// sake: a deadlock, a serialization failure, the lock timeout or the
    /// statement timeout.
    pub fn is_contended(&self) -> bool {
        const CONTENDED: [&str; 4] = ["40P01", "40001", "55P03", "57014"];
        self.postgres_code()
            .is_some_and(|code| CONTENDED.contains(&code.as_ref()))
    }

    /// Whether the database refused the statement (a constraint, a lock, a
    /// timeout) while it serves, rather than failing to answer at all.
    pub fn is_refusal(&self) -> bool {
        self.0.as_database_error().is_some() && !self.is_unavailable()
    }

    /// Whether Postgres refused to wait for a lock another transaction
    /// holds (`nowait`, or past the lock timeout).
    pub fn is_lock_not_available(&self) -> bool {
        self.postgres_code().as_deref() == Some("55P03")
    }

    /// Whether Postgres chose this statement's transaction to end a deadlock.
    pub fn is_deadlock(&self) -> bool {
        self.postgres_code().as_deref() == Some("40P01")
    }

    fn postgres_code(&self) -> Option<std::borrow::Cow<'_, str>> {
        let error = self.0.as_database_error()?;
        if error.try_downcast_ref::<SqliteError>().is_some() {
            return None;
        }
        error.code()
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Why the database's migrations could not be applied, or do not fit.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] MigrateError),
    #[error("cannot read which migrations the database has: {0}")]
    Status(#[source] sqlx::Error),
    #[error(
        "the database has migrations of a newer release that this binary cannot run with: {}; \
         deploy that release or a later one",
        .0.join(", ")
    )]
    Incompatible(Vec<String>),
    #[error(
        "the database lacks migrations this binary needs: {}; run `onboarding migrate` (or \
         start `serve` without --no-migrate)",
        .0.join(", ")
    )]
    Pending(Vec<String>),
    #[error(
        "the database lacks migrations this binary needs: {}; they cannot run through a \
         transaction pooler (DATABASE_POOLER=transaction): run `onboarding migrate` with \
         DATABASE_URL naming Postgres itself, not the pooler",
        .0.join(", ")
    )]
    ThroughTransactionPooler(Vec<String>),
}

/// Connections to whichever database `DATABASE_URL` names.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "DATABASE_URL must start with `sqlite://` or `postgres://`; got a URL starting with `{0}`"
    )]
    UnsupportedScheme(String),
    #[error("DATABASE_URL is not a valid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot connect to the database: {source}; create it with: {createdb}")]
    NoSuchDatabase {
        source: sqlx::Error,
        /// The `createdb` command line that creates the database the URL names.
        createdb: String,
    },
    #[error("cannot connect to the database: no answer within {0} s")]
    NoAnswer(u64),
    #[error(
        "cannot open the SQLite database file {} named by DATABASE_URL: {source}; its directory \
         must exist and be writable by this user",
        path.display()
    )]
    OpenSqlite { path: PathBuf, source: sqlx::Error },
}

impl ConnectError {
    /// Whether the database may accept connections shortly: refused, no
    /// answer, starting up or shutting down.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::NoAnswer(_) => true,
            ConnectError::Connect(error) => is_unavailable(error),
            _ => false,
        }
    }

    /// The failure of a first connection to Postgres; a database that does
    /// not exist (SQLSTATE 3D000) gets the command that creates it.
    pub(crate) fn postgres(error: sqlx::Error, options: &PgConnectOptions) -> Self {
        let missing = error
            .as_database_error()
            .is_some_and(|error| error.code().as_deref() == Some("3D000"));
        if !missing {
            return ConnectError::Connect(error);
        }
        let host = options.get_socket().map_or_else(
            || options.get_host().to_owned(),
            |dir| dir.display().to_string(),
        );
        let user = options.get_username();
        // Without a database in the URL, Postgres takes the user's name.
        let database = options.get_database().unwrap_or(user);
        let createdb = format!(
            "createdb -h {} -p {} -U {} {}",
            shell_word(&host),
            options.get_port(),
            shell_word(user),
            shell_word(database)
        );
        ConnectError::NoSuchDatabase {
            source: error,
            createdb,
        }
    }
}

/// Where a `DATABASE_URL` points, for the log, without its credentials:
/// `host:port/database`, or the SQLite file.
pub fn describe(url: &str) -> String {
    match url.split_once("://") {
        Some(("postgres" | "postgresql", _)) => PgConnectOptions::from_str(url).map_or_else(
            |_| "an unreadable Postgres URL".to_owned(),
            |options| {
                let database = options.get_database().unwrap_or(options.get_username());
                format!("{}:{}/{database}", options.get_host(), options.get_port())
            },
        ),
        Some((_, path)) => path.split('?').next().unwrap_or(path).to_owned(),
        None => url.to_owned(),
    }
}

/// `word` as one shell word: quoted when it holds anything but plain characters.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether `error` means the database cannot serve right now (down, out of
/// connections, locked by another process) rather than a fault in the request.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // A proxy or balancer in front of a failing over server may answer
        // with anything, or close the connection mid-handshake.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => {
            let code = error.code().unwrap_or_default();
            if error.try_downcast_ref::<SqliteError>().is_some() {
                // SQLITE_BUSY and SQLITE_LOCKED, with any extended code.
                code.parse::<i32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
            } else {
                postgres_unavailable(&code)
            }
        }
        _ => false,
    }
}

/// The SQLSTATEs of a Postgres that cannot serve now but may shortly: lost
/// connections (class 08, but a protocol violation is a fault), insufficient
/// resources (53), shutting down or starting up, a cancelled statement, a
/// read-only server (a failover, or a pooler pointing at a replica), and
/// serialization failures and deadlocks.
fn postgres_unavailable(code: &str) -> bool {
    const RETRYABLE: [&str; 7] = [
        "57P01", "57P02", "57P03", "57014", "25006", "40001", "40P01",
    ];
    (code.starts_with("08") && code != "08P01")
        || code.starts_with("53")
        || RETRYABLE.contains(&code)
}

impl Db {
    /// Opens the database: SQLite's writer and readers, or a Postgres pool
    /// with its writer and readers.
    pub async fn connect(args: &DatabaseArgs) -> Result<Self, ConnectError> {
        let url = args.database_url.as_str();
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Db::Sqlite(
                Sqlite::open(url, args.database_max_connections).await?,
            )),
            "postgres" | "postgresql" => Ok(Db::Postgres(Postgres::connect(args).await?)),
            other => Err(ConnectError::UnsupportedScheme(other.to_owned())),
        }
    }

    /// What the database has applied, next to what this binary embeds.
    pub async fn migration_status(&self) -> Result<MigrationStatus, MigrationError> {
        let (files, applied) = match self {
            Db::Sqlite(sqlite) => (migrations::SQLITE, sqlite.applied_migrations().await),
            Db::Postgres(postgres) => (migrations::POSTGRES, postgres.applied_migrations().await),
        };
        let applied = applied.map_err(MigrationError::Status)?;
        Ok(MigrationStatus::of(files, &applied))
    }

    /// Applies the migrations this database has not seen yet, and returns
    /// them. Migrations a newer release applied are logged and run without,
    /// unless one is breaking: then nothing is applied and the error says so.
    pub async fn migrate(&self) -> Result<Vec<String>, MigrationError> {
        let status = self.compatible_status().await?;
        if pooler::behind_transaction_pooler() && matches!(self, Db::Postgres(_)) {
            // Migrations hold a session's lock and build indexes outside
            // any transaction: neither works through such a pooler.
            if status.pending.is_empty() {
                return Ok(Vec::new());
            }
            return Err(MigrationError::ThroughTransactionPooler(status.pending));
        }
        match self {
            Db::Sqlite(sqlite) => sqlite.migrate().await?,
            Db::Postgres(postgres) => postgres.migrate().await?,
        }
        Ok(status.pending)
    }

    /// Checks, applying nothing, that the database has every migration this
    /// binary needs (`serve --no-migrate`).
    pub async fn check_migrated(&self) -> Result<(), MigrationError> {
        let status = self.compatible_status().await?;
        if status.pending.is_empty() {
            Ok(())
        } else {
            Err(MigrationError::Pending(status.pending))
        }
    }

    /// The migration status, refused when a newer release applied a
    /// breaking migration; other migrations of a newer release are logged.
    async fn compatible_status(&self) -> Result<MigrationStatus, MigrationError> {
        let status = self.migration_status().await?;
        let incompatible = status.incompatible();
        if !incompatible.is_empty() {
            let incompatible = incompatible.into_iter().map(str::to_owned).collect();
            return Err(MigrationError::Incompatible(incompatible));
        }
        if !status.unknown.is_empty() {
            tracing::warn!(
                migrations = ?status.unknown,
                "the database has migrations of a newer release; they only add, so this binary \
                 runs without them"
            );
        }
        Ok(status)
    }

    /// The statements of flows.
    pub fn flows(&self) -> &FlowStore {
        match self {
            Db::Sqlite(sqlite) => sqlite.flows(),
            Db::Postgres(postgres) => postgres.flows(),
        }
    }

    fn queues(&self) -> &Queues {
        match self {
            Db::Sqlite(sqlite) => sqlite.queues(),
            Db::Postgres(postgres) => postgres.queues(),
        }
    }

    /// Checks that the database answers, and on Postgres that it takes
    /// writes (not a standby, nor read-only).
    pub async fn ping(&self) -> Result<()> {
        self.queues().ping().await?;
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(postgres) => postgres.check_writable().await,
        }
    }

    /// Lets the queued requests finish, then closes every connection.
    pub async fn close(&self) {
        self.queues().close().await;
        self.flows().close().await;
        if let Db::Postgres(postgres) = self {
            postgres.pool().close().await;
        }
    }

    /// The stored state, if there is one.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn find(&self, user_id: &UserId) -> Result<Option<OnboardingState>> {
        self.queues().state(user_id).await
    }

    /// Inserts a fresh state unless one exists, then reads it. Concurrent
    /// callers all succeed and all see the one row that won.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn find_or_create(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> Result<OnboardingState> {
        self.queues().write(user_id, Write::Create, now).await
    }

    /// Applies `change` in one atomic write that also creates a missing state.
    /// The time it writes is `now`, or a microsecond past the stored
    /// `updated_at` when the clock has not moved beyond it, so the write that
    /// lands last always carries the latest `updated_at`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn apply(
        &self,
        user_id: &UserId,
        change: Change,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<OnboardingState> {
        self.queues()
            .write(user_id, Write::Apply(change, provenance), now)
            .await
    }
}
