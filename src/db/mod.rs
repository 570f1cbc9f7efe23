//! The one place that knows SQL: the connections to either backend, the
//! embedded migrations, and the statements that read and write states.
//!
//! Both backends run the same statements: `$N` parameters, `on conflict`
//! upserts and `returning` mean the same in SQLite and Postgres. Only the
//! `updated_at` a write sets, and how a list of user ids is passed, differ
//! per dialect. SQLite's side (one writer that commits writes in groups, and
//! readers that answer reads in groups) is in `sqlite.rs`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::SqliteError;

use crate::config::DatabaseArgs;
use crate::onboarding::{Change, OnboardingState, Step, UserId};

pub use sqlite::Sqlite;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a request waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns of `onboarding_state`, in the order `OnboardingState` reads them.
macro_rules! columns {
    () => {
        "user_id, is_completed, current_step, completed_at, created_at, updated_at"
    };
}

const FIND: &str = concat!(
    "select ",
    columns!(),
    " from onboarding_state where user_id = $1"
);

const CREATE_IF_MISSING: &str = concat!(
    "insert into onboarding_state (",
    columns!(),
    ") values ($1, false, 0, null, $2, $2) on conflict (user_id) do nothing"
);

/// One atomic statement that creates the state with `$values` or, when it
/// exists, updates it with `$set`. `$1` is the user id, `$2` the step, `$3` now.
macro_rules! upsert {
    ($values:literal, $($set:tt)+) => {
        concat!(
            "insert into onboarding_state (",
            columns!(),
            ") values ",
            $values,
            " on conflict (user_id) do update set ",
            $($set)+,
            " returning ",
            columns!()
        )
    };
}

/// The upserts of one dialect, given the expression for the time a write sets.
struct Upserts {
    complete: &'static str,
    set_step: &'static str,
    reset: &'static str,
}

macro_rules! upserts {
    ($written_at:literal) => {
        Upserts {
            complete: upsert!(
                "($1, true, $2, $3, $3, $3)",
                "is_completed = true, current_step = excluded.current_step, completed_at = ",
                $written_at,
                ", updated_at = ",
                $written_at
            ),
            set_step: upsert!(
                "($1, false, $2, null, $3, $3)",
                "current_step = excluded.current_step, updated_at = ",
                $written_at
            ),
            reset: upsert!(
                "($1, false, $2, null, $3, $3)",
                "is_completed = false, current_step = excluded.current_step, \
                 completed_at = null, updated_at = ",
                $written_at
            ),
        }
    };
}

mod sqlite;

/// Postgres writers run side by side (and on replicas whose clocks differ), so
/// the statement itself moves the write's time past the stored one.
const POSTGRES_UPSERTS: Upserts = upserts!(
    "greatest(excluded.updated_at, onboarding_state.updated_at + interval '1 microsecond')"
);

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

/// A database failure, shared by every request of a group that it failed.
#[derive(Debug, Clone)]
pub struct DbError(Arc<sqlx::Error>);

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
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

impl DbError {
    /// Whether the database cannot serve right now (down, out of connections,
    /// locked by another process) rather than a fault in the request.
    pub fn is_unavailable(&self) -> bool {
        is_unavailable(&self.0)
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Connections to whichever database `DATABASE_URL` names.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(Sqlite),
    Postgres(PgPool),
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
    #[error("cannot connect to the database: no answer within {0} s")]
    NoAnswer(u64),
    #[error(
        "cannot open the SQLite database in DATABASE_URL: {0}; its directory must exist and be \
         writable by this user"
    )]
    OpenSqlite(#[source] sqlx::Error),
}

/// Whether `error` means the database cannot serve right now (down, out of
/// connections, locked by another process) rather than a fault in the request.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
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
    /// Opens the database: SQLite's writer and readers, or a Postgres pool.
    pub async fn connect(args: &DatabaseArgs) -> Result<Self, ConnectError> {
        let url = args.database_url.as_str();
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Db::Sqlite(
                Sqlite::open(url, args.database_max_connections).await?,
            )),
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url).map_err(ConnectError::InvalidUrl)?;
                // One direct connection first: the pool retries until its
                // timeout and then reports only that, not why (refused,
                // unknown host, wrong password, no such database).
                tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| ConnectError::NoAnswer(ACQUIRE_TIMEOUT.as_secs()))?
                    .map_err(ConnectError::Connect)?
                    .close()
                    .await
                    .map_err(ConnectError::Connect)?;
                let pool = PgPoolOptions::new()
                    .max_connections(args.database_max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // A broken connection fails the one statement that finds
                    // it and is replaced; a ping before every statement would
                    // double the round trips of every request.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .map_err(ConnectError::Connect)?;
                Ok(Db::Postgres(pool))
            }
            other => Err(ConnectError::UnsupportedScheme(other.to_owned())),
        }
    }

    /// Applies the migrations this database has not seen yet.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match self {
            Db::Sqlite(sqlite) => sqlite.migrate().await,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Db::Sqlite(sqlite) => sqlite.ping().await,
            Db::Postgres(pool) => Ok(sqlx::query("select 1").execute(pool).await.map(drop)?),
        }
    }

    /// Closes every connection once the requests using them are done.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(sqlite) => sqlite.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }

    /// The stored state, if there is one.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn find(&self, user_id: &UserId) -> Result<Option<OnboardingState>> {
        match self {
            Db::Sqlite(sqlite) => sqlite.find(user_id).await,
            Db::Postgres(pool) => Ok(sqlx::query_as(FIND)
                .bind(user_id.as_str())
                .fetch_optional(pool)
                .await?),
        }
    }

    /// Inserts a fresh state unless one exists, then reads it. Concurrent
    /// callers all succeed and all see the one row that won.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn find_or_create(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> Result<OnboardingState> {
        match self {
            Db::Sqlite(sqlite) => sqlite.find_or_create(user_id, now).await,
            Db::Postgres(pool) => {
                sqlx::query(CREATE_IF_MISSING)
                    .bind(user_id.as_str())
                    .bind(now)
                    .execute(pool)
                    .await?;
                Ok(sqlx::query_as(FIND)
                    .bind(user_id.as_str())
                    .fetch_one(pool)
                    .await?)
            }
        }
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
        now: DateTime<Utc>,
    ) -> Result<OnboardingState> {
        match self {
            Db::Sqlite(sqlite) => sqlite.apply(user_id, change, now).await,
            Db::Postgres(pool) => {
                let (statement, step) = POSTGRES_UPSERTS.of(change);
                Ok(sqlx::query_as(statement)
                    .bind(user_id.as_str())
                    .bind(step.get())
                    .bind(now)
                    .fetch_one(pool)
                    .await?)
            }
        }
    }
}
