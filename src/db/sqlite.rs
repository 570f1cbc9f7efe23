//! SQLite: one writer connection that commits together every write waiting
//! for it (group commit), and reader connections that answer together every
//! read waiting for them.
//!
//! SQLite runs one write transaction at a time, and `synchronous = full`
//! makes each commit an fsync; sqlx runs each connection on a thread of its
//! own, so every statement is a hop to that thread and back. Taking what
//! waits as one group shares the fsync and the hops among all of it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use tokio::sync::mpsc;

use super::flows::{self, FlowWrite, QueuedFlowWrite};
use super::groups::{self, Job, Queues, Reader, Write, WriteQueue, gather};
use super::{ConnectError, FlowStore, Live, Result, Upserts};
use crate::domain::{Error, FlowState, OnboardingState, Step, UserId};

/// How long SQLite waits for another process's writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a process waits for another's migrations to the same file.
const MIGRATION_WAIT: Duration = Duration::from_secs(300);

/// Every state among the user ids of `$1`, a JSON array.
const FIND_MANY: &str = concat!(
    "select ",
    columns!(),
    " from onboarding_state where user_id in (select value from json_each($1))"
);

/// The states of every (user id, flow) pair of `$1`, a JSON array of pairs.
const FIND_FLOW_STATES: &str = concat!(
    "select ",
    flow_state_columns!(),
    " from flow_state where (user_id, flow) in \
     (select value ->> 0, value ->> 1 from json_each($1))"
);

/// The states in the built-in flow `onboarding` of the user ids of `$1`.
const FIND_ONBOARDING_FLOW_STATES: &str = concat!(
    "select ",
    onboarding_flow_columns!(),
    " from onboarding_state where user_id in (select value from json_each($1))"
);

/// Each write runs inside a savepoint of the group's transaction, in the
/// same round trip, so that one that fails is undone alone.
macro_rules! in_savepoint {
    ($statement:expr) => {
        concat!("savepoint write; ", $statement, "; release write")
    };
}
const UNDO_WRITE: &str = "rollback to write; release write";

/// An original-API write and its event, in one savepoint: `$4` is the actor,
/// `$5` the request id.
macro_rules! logged {
    ($upsert:expr, $type:literal, $data:ident) => {
        in_savepoint!(concat!(
            $upsert,
            "; ",
            event_columns!(),
            "select user_id, 'onboarding', version, '",
            $type,
            "', $4, $5, updated_at, ",
            event_data!($data),
            ", revision, json_object('status', status, 'currentStep', current_step, \
             'completedAt', completed_at, \
             'done', json((select json_group_array(key) from json_each(steps)))) \
             from onboarding_state where user_id = $1"
        ))
    };
}

/// What an original-API event carries: the step written, or nothing.
macro_rules! event_data {
    (step) => {
        "json_object('step', current_step)"
    };
    (none) => {
        "null"
    };
}

/// A fresh state for `$1` at step `$2`, created at `$3`.
const CREATE: &str = in_savepoint!(concat!(
    "insert into onboarding_state (",
    created_columns!(),
    ") values ($1, false, $2, null, $3, $3) returning ",
    columns!()
));

/// SQLite's text timestamps have no microsecond arithmetic: its one writer
/// works out each write's time in Rust from the stored `updated_at`.
const UPSERTS: Upserts = upserts!(
    logged,
    "values ($1, true, $2, $3, $3, $3, 'COMPLETED', $3, 1)",
    "values ($1, false, $2, null, $3, $3, 'IN_PROGRESS', $3, 1)",
    "values ($1, false, $2, null, $3, $3, 'NOT_STARTED', null, 1)",
    "excluded.updated_at"
);

/// This process's turn at SQLite's one write lock: the writer takes it for
/// each group, and the webhooks' transactions for theirs, so that they wait
/// for each other here, in order, rather than in SQLite's busy handler,
/// which sleeps up to 100 ms at a time. Another process on the same file
/// still meets the busy handler.
#[derive(Debug, Clone, Default)]
pub struct WriteGate(pub(super) Arc<tokio::sync::Mutex<()>>);

/// The SQLite database: queues to its writer and to its readers.
#[derive(Debug, Clone)]
pub struct Sqlite {
    options: Arc<SqliteConnectOptions>,
    queues: Queues,
    flows: FlowStore,
}

impl Sqlite {
    /// Opens the writer and the readers. The file is created if missing, WAL
    /// lets readers run beside the writer, `synchronous = full` makes every
    /// acknowledged commit durable, and a writer that finds the file locked
    /// (by another process) waits for it.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, ConnectError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(ConnectError::InvalidUrl)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Deleted content is overwritten, so that an erased user's bytes
            // leave the file.
            .pragma("secure_delete", "on");
        let cannot_open = |source| ConnectError::OpenSqlite {
            // Relative to the working directory, which may not be the one expected.
            path: std::path::absolute(options.get_filename())
                .unwrap_or_else(|_| options.get_filename().to_owned()),
            source,
        };
        // The writer first: it creates the file and switches it to WAL.
        let writer = options.connect().await.map_err(cannot_open)?;
        let readers = groups::readers(max_connections);
        let (queues, write_queue, read_queue) = Queues::new(1, readers);
        let (flow_writes, flow_write_queue) = mpsc::channel(4 * groups::MAX_GROUP);
        let gate = WriteGate::default();
        let live = Live::in_process();
        queues.started(tokio::spawn(write_groups(
            writer,
            options.clone(),
            write_queue,
            flow_write_queue,
            gate.clone(),
            live.clone(),
        )));
        for _ in 0..readers {
            let reader = options.connect().await.map_err(cannot_open)?;
            queues.started(tokio::spawn(groups::read_groups(
                reader,
                read_queue.clone(),
            )));
        }
        // Flows write through the writer above, read through the readers,
        // and list, publish and erase through a pool of their own.
        let flows = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(cannot_open)?;
        Ok(Self {
            options: Arc::new(options),
            flows: FlowStore::sqlite(flows, flow_writes, queues.clone(), gate, live),
            queues,
        })
    }

    pub fn flows(&self) -> &FlowStore {
        &self.flows
    }

    /// Applies the migrations this database has not seen yet, on a connection
    /// of their own.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        // Processes started together on one file apply each migration once:
        // the migrations run in one write transaction, which a second
        // process waits for (up to `MIGRATION_WAIT`) and then finds them
        // applied. Not a lock on the file from outside SQLite: closing
        // another descriptor of the file would drop SQLite's own locks.
        let mut connection = self
            .options
            .as_ref()
            .clone()
            .busy_timeout(MIGRATION_WAIT)
            .connect()
            .await?;
        let migrated = async {
            let mut transaction = connection.begin_with("begin immediate").await?;
            super::migrations::migrator(super::migrations::SQLITE)
                .run(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(())
        }
        .await;
        let _ = connection.close().await;
        migrated
    }

    /// The migrations applied (version, description), on a connection of
    /// their own; none before the first.
    pub async fn applied_migrations(&self) -> Result<Vec<(i64, String)>, sqlx::Error> {
        use super::migrations::{APPLIED, SQLITE_HAS_TABLE};
        let mut connection = self.options.connect().await?;
        let migrated: bool = sqlx::query_scalar(SQLITE_HAS_TABLE)
            .fetch_one(&mut connection)
            .await?;
        let applied = if migrated {
            sqlx::query_as(APPLIED).fetch_all(&mut connection).await?
        } else {
            Vec::new()
        };
        let _ = connection.close().await;
        Ok(applied)
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }
}

/// The writer: takes every write waiting, up to `MAX_GROUP` of each kind
/// (the original API's and flows'), commits them in one transaction, and
/// only then answers each.
async fn write_groups(
    mut connection: SqliteConnection,
    options: SqliteConnectOptions,
    queue: WriteQueue,
    mut flow_queue: mpsc::Receiver<QueuedFlowWrite>,
    gate: WriteGate,
    live: Live,
) {
    loop {
        let mut flow_writes = Vec::new();
        let (group, close) = tokio::select! {
            job = queue.recv_async() => gather(job.unwrap_or(Job::Close), || queue.try_recv().ok()),
            Some(first) = flow_queue.recv() => {
                flow_writes.push(first);
                match queue.try_recv() {
                    Ok(job) => gather(job, || queue.try_recv().ok()),
                    Err(_) => (Vec::new(), false),
                }
            }
        };
        while flow_writes.len() < groups::MAX_GROUP
            && let Ok(write) = flow_queue.try_recv()
        {
            flow_writes.push(write);
        }
        if !group.is_empty() || !flow_writes.is_empty() {
            let writes = group
                .iter()
                .map(|request| (request.user.0.clone(), request.user.1.clone(), request.now))
                .collect();
            let (flow_writes, flow_answers): (Vec<_>, Vec<_>) = flow_writes.into_iter().unzip();
            let count = group.len() + flow_writes.len();
            let committed = {
                let _turn = gate.0.lock().await;
                commit_group(&mut connection, writes, flow_writes).await
            };
            match committed {
                Ok((results, flow_results)) => {
                    tracing::debug!(writes = count, "group committed");
                    for (request, result) in group.into_iter().zip(results) {
                        live.committed(request.user.0.as_str());
                        let _ = request.answer.send(result.map(Some));
                    }
                    for (answer, result) in flow_answers.into_iter().zip(flow_results) {
                        if let Ok(state) = &result {
                            live.committed(&state.user_id);
                        }
                        let _ = answer.send(result);
                    }
                }
                Err(error) => {
                    tracing::debug!(writes = count, %error, "group failed");
                    for request in group {
                        let _ = request.answer.send(Err(error.clone()));
                    }
                    for answer in flow_answers {
                        let _ = answer.send(Err(error.clone().into()));
                    }
                    connection = reopened(connection, options.clone()).await;
                }
            }
        }
        if close {
            break;
        }
    }
    let _ = connection.close().await;
}

/// The connection, or a new one when it no longer answers (the file was
/// replaced, the disk failed); the next group tries again if that fails too.
async fn reopened(
    mut connection: SqliteConnection,
    options: SqliteConnectOptions,
) -> SqliteConnection {
    if connection.ping().await.is_ok() {
        return connection;
    }
    match options.connect().await {
        Ok(fresh) => fresh,
        Err(error) => {
            tracing::warn!(%error, "cannot reopen the SQLite database");
            connection
        }
    }
}

/// One transaction for the whole group. `begin immediate` takes the write lock
/// before anything is read, so no writer, not even another process, comes
/// between the stored times read here and the writes that move past them.
///
async fn commit_group(
    connection: &mut SqliteConnection,
    group: Vec<(UserId, Write, DateTime<Utc>)>,
    flow_writes: Vec<FlowWrite>,
) -> Result<(Vec<Result<OnboardingState>>, Vec<Result<FlowState, Error>>)> {
    sqlx::query("begin immediate")
        .execute(&mut *connection)
        .await?;
    let written = write_group(connection, group, flow_writes).await;
    let finished = match &written {
        Ok(_) => sqlx::query("commit").execute(&mut *connection).await,
        Err(_) => sqlx::query("rollback").execute(&mut *connection).await,
    };
    match (written, finished) {
        (Ok(results), Ok(_)) => Ok(results),
        (Err(error), _) => Err(error),
        (Ok(_), Err(error)) => {
            // A commit that failed may leave the transaction open.
            let _ = sqlx::query("rollback").execute(&mut *connection).await;
            Err(error.into())
        }
    }
}

/// The writes of a group, in the open transaction: each one's result.
/// The original API's writes go first: they work from the states read at
/// the start, which a flow write of `onboarding` would make stale.
async fn write_group(
    connection: &mut SqliteConnection,
    group: Vec<(UserId, Write, DateTime<Utc>)>,
    flow_writes: Vec<FlowWrite>,
) -> Result<(Vec<Result<OnboardingState>>, Vec<Result<FlowState, Error>>)> {
    let ids: Vec<&str> = group
        .iter()
        .map(|(user_id, _, _)| user_id.as_str())
        .collect();
    let stored = sqlx::query_as::<_, OnboardingState>(FIND_MANY)
        .bind(json(&ids))
        .fetch_all(&mut *connection)
        .await;
    let stored = stored?;
    let mut current: HashMap<String, OnboardingState> = stored
        .into_iter()
        .map(|state| (state.user_id.clone(), state))
        .collect();
    let mut results = Vec::with_capacity(group.len());
    for (user_id, write, now) in group {
        let stored = current.get(user_id.as_str());
        let query = match (&write, stored) {
            (Write::Create, Some(state)) => {
                results.push(Ok(state.clone()));
                continue;
            }
            (Write::Create, None) => sqlx::query_as::<_, OnboardingState>(CREATE)
                .bind(user_id.as_str())
                .bind(Step::FIRST.get())
                .bind(now),
            (Write::Apply(change, provenance), stored) => {
                let (statement, step) = UPSERTS.of(*change);
                sqlx::query_as::<_, OnboardingState>(statement)
                    .bind(user_id.as_str())
                    .bind(step.get())
                    .bind(written_at(stored, now))
                    .bind(provenance.actor.as_str())
                    .bind(provenance.request_id.as_deref())
            }
        };
        let written = query.fetch_all(&mut *connection).await;
        let result = match written {
            Ok(rows) => rows
                .into_iter()
                .next()
                .ok_or_else(|| sqlx::Error::RowNotFound.into()),
            Err(error) => {
                // Undo the failed write alone; the group goes on.
                if let Err(undo) = sqlx::query(UNDO_WRITE).execute(&mut *connection).await {
                    tracing::warn!(%undo, "cannot undo a failed write");
                }
                Err(error.into())
            }
        };
        if let Ok(state) = &result {
            current.insert(state.user_id.clone(), state.clone());
        }
        results.push(result);
    }
    let mut flow_results = Vec::with_capacity(flow_writes.len());
    for write in flow_writes {
        flow_results.push(flows::write_in_savepoint(connection, &write).await?);
    }
    Ok((results, flow_results))
}

/// `now`, or a microsecond past the stored `updated_at` when the clock has
/// not moved beyond it, so the write that lands last carries the latest time.
fn written_at(stored: Option<&OnboardingState>, now: DateTime<Utc>) -> DateTime<Utc> {
    stored
        .map(|state| state.updated_at + TimeDelta::microseconds(1))
        .filter(|next| *next > now)
        .unwrap_or(now)
}

/// A reader connection answers each kind of read in a group with one
/// statement.
impl Reader for SqliteConnection {
    async fn states(&mut self, user_ids: Vec<&str>) -> Result<Vec<OnboardingState>> {
        Ok(sqlx::query_as(FIND_MANY)
            .bind(json(&user_ids))
            .fetch_all(self)
            .await?)
    }

    async fn flow_states(&mut self, keys: Vec<(&str, &str)>) -> Result<Vec<FlowState>> {
        Ok(sqlx::query_as(FIND_FLOW_STATES)
            .bind(json(&keys))
            .fetch_all(self)
            .await?)
    }

    async fn onboarding_flow_states(&mut self, user_ids: Vec<&str>) -> Result<Vec<FlowState>> {
        Ok(sqlx::query_as(FIND_ONBOARDING_FLOW_STATES)
            .bind(json(&user_ids))
            .fetch_all(self)
            .await?)
    }

    async fn finish(self) {
        let _ = self.close().await;
    }
}

/// A statement's list of values as the JSON array `json_each` reads.
fn json(values: &impl serde::Serialize) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}
