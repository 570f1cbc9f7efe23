//! Postgres flow writes that wait together, written together: one
//! transaction and a handful of statements for a whole group instead of
//! a transaction of six round trips per write.
//!
//! A group keeps every guarantee of a write on its own: each state is
//! locked before its rule decides, an idempotency key is looked up under
//! its lock, and what one write decides (a stale revision, a step that does
//! not exist) fails that write alone. A group waits for no lock another
//! transaction holds: when one of its states or keys is held elsewhere (a
//! long transaction, a group of another replica), or the database refuses a
//! statement, each of its writes runs alone, in a task of its own, and only
//! those that meet the lock wait for it (up to the lock timeout) while the
//! writer goes on with the next group.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::flows::{
    ERASED_MEANWHILE_RETRIES, FlowWrite, QueuedFlowWrite, decided, erased_meanwhile, internal,
    on_postgres, replay, steps_record_json,
};
use super::groups::{Job, closed, gather, wait_for};
use super::{DbError, pooler};
use crate::domain::{Error, FlowState, ONBOARDING};

/// Takes the idempotency keys' locks, the same a write on its own takes
/// for its key, if none is held elsewhere: whether it took them all.
const LOCK_KEYS: &str = "select coalesce(bool_and(pg_try_advisory_xact_lock(h)), true) from \
     (select distinct hashtextextended(k.u || chr(10) || k.k, 0) as h \
     from unnest($1::text[], $2::text[]) as k(u, k) order by h) as keys";

/// The answers kept for the (owner, key) pairs of `$1` and `$2`.
const SELECT_KEPT: &str = "select user_id, key, request, response from idempotency_key \
     where (user_id, key) in (select * from unnest($1::text[], $2::text[]))";

/// The states of the (user, flow) pairs of `$1` and `$2`, locked in the
/// order of their keys; the statement fails at once when another
/// transaction holds one of them.
const LOCK_STATES: &str = concat!(
    "select ",
    flow_state_columns!(),
    " from flow_state where (user_id, flow) in (select * from unnest($1::text[], $2::text[])) \
     order by user_id, flow for update nowait"
);

/// Fresh states for the writes whose user has none, in the order of their
/// keys, as the locks are taken.
const INSERT_MISSING: &str = concat!(
    "insert into flow_state (",
    flow_state_columns!(),
    ") select * from unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int4[], \
     $6::text[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], \
     $11::int8[], $12::timestamptz[], $13::timestamptz[]) order by 1, 2 \
     on conflict (user_id, flow) do nothing"
);

/// Every change a group decided, in one statement: the states, their
/// events in the order they happened, and the answers kept for the keys.
const WRITE_CHANGES: &str = "with updated as (\
     update flow_state as s set version = w.version, status = w.status, \
     current_step = w.current_step, steps = w.steps, started_at = w.started_at, \
     completed_at = w.completed_at, dismissed_at = w.dismissed_at, \
     snoozed_until = w.snoozed_until, revision = w.revision, updated_at = w.updated_at \
     from unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int4[], $6::text[], \
     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::int8[], \
     $12::timestamptz[]) as w(user_id, flow, version, status, current_step, steps, started_at, \
     completed_at, dismissed_at, snoozed_until, revision, updated_at) \
     where s.user_id = w.user_id and s.flow = w.flow), \
     logged as (insert into flow_event \
     (user_id, flow, version, type, step, actor, request_id, at, data, revision, state) \
     select e.user_id, e.flow, e.version, e.type, e.step, e.actor, e.request_id, e.at, e.data, \
     e.revision, e.state \
     from unnest($13::text[], $14::text[], $15::int4[], $16::text[], $17::text[], $18::text[], \
     $19::text[], $20::timestamptz[], $21::text[], $28::int8[], $29::text[]) with ordinality \
     as e(user_id, flow, version, type, step, actor, request_id, at, data, revision, state, n) \
     order by e.n), \
     kept as (insert into idempotency_key \
     (user_id, key, request, response, created_at, group_id) \
     select * from unnest($22::text[], $23::text[], $24::text[], $25::text[], \
     $26::timestamptz[], $27::text[])) \
     select 1";

/// How long a group waits for a lock after all: `nowait` covers the rows
/// that exist, but inserting a state another transaction is inserting too
/// waits for it. Past this, the group's writes go alone.
const GROUP_LOCK_TIMEOUT: &str = "set local lock_timeout = '50ms'";

/// The most writes one group takes.
const MAX_GROUP: usize = super::groups::MAX_GROUP;

/// The queue to the flow writers of a Postgres pool, and their tasks.
#[derive(Clone)]
pub struct FlowWriters {
    queue: flume::Sender<Job<QueuedFlowWrite>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    writers: usize,
}

impl std::fmt::Debug for FlowWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowWriters")
            .field("writers", &self.writers)
            .finish_non_exhaustive()
    }
}

impl FlowWriters {
    /// Starts `writers` tasks that write groups on `pool`, side by side, so
    /// that a group waiting for a locked row holds up only itself.
    /// Writes run alone take a permit of `alone` each.
    pub fn start(pool: &PgPool, writers: usize, alone: Arc<Semaphore>) -> Self {
        let (queue, waiting) = flume::bounded(4 * MAX_GROUP);
        let begin: Arc<str> = format!("{}; {GROUP_LOCK_TIMEOUT}", pooler::begin_statement()).into();
        let tasks = (0..writers)
            .map(|_| {
                let writer = Writer {
                    pool: pool.clone(),
                    alone: Arc::clone(&alone),
                    begin: Arc::clone(&begin),
                };
                tokio::spawn(write_groups(writer, waiting.clone()))
            })
            .collect();
        Self {
            queue,
            tasks: Arc::new(Mutex::new(tasks)),
            writers,
        }
    }

    /// Queues `write` and waits for its answer, given once its group has
    /// committed.
    pub async fn write(&self, write: FlowWrite) -> Result<FlowState, Error> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send_async(Job::Request((write, answer)))
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    /// Lets the writers finish what is queued, then waits for them.
    pub async fn close(&self) {
        for _ in 0..self.writers {
            let _ = self.queue.send_async(Job::Close).await;
        }
        wait_for(&self.tasks).await;
    }
}

/// A writer's connections: the pool, and the permits of the writes it
/// runs alone, which a held row can make many of, and which must leave
/// connections for everything else.
struct Writer {
    pool: PgPool,
    alone: Arc<Semaphore>,
    /// The statement a group's transaction begins with.
    begin: Arc<str>,
}

/// A writer: every write waiting, up to a group, in rounds where a state
/// and an idempotency key appear at most once each.
async fn write_groups(writer: Writer, queue: flume::Receiver<Job<QueuedFlowWrite>>) {
    while let Ok(first) = queue.recv_async().await {
        let (group, close) = gather(first, || queue.try_recv().ok());
        let mut waiting = group;
        while !waiting.is_empty() {
            let (round, later) = one_round(waiting);
            write_round(&writer, round).await;
            waiting = later;
        }
        if close {
            break;
        }
    }
}

/// The writes of `group` whose state and key no earlier write of it has,
/// and the writes that come after them, in the order they came.
fn one_round(group: Vec<QueuedFlowWrite>) -> (Vec<QueuedFlowWrite>, Vec<QueuedFlowWrite>) {
    let mut states = HashSet::new();
    let mut keys = HashSet::new();
    let mut round = Vec::new();
    let mut later = Vec::new();
    for queued in group {
        let write = &queued.0;
        let state = (write.fresh.user_id.clone(), write.fresh.flow.clone());
        let key = write
            .idempotency
            .as_ref()
            .map(|idempotency| (idempotency.owner.clone(), idempotency.key.clone()));
        let first = !states.contains(&state) && key.as_ref().is_none_or(|key| !keys.contains(key));
        // A write that waits keeps its state and key out of this round, so
        // that no later write of either joins the round ahead of it.
        states.insert(state);
        keys.extend(key);
        if first {
            round.push(queued);
        } else {
            later.push(queued);
        }
    }
    (round, later)
}

/// Writes a round: the states of the built-in flow `onboarding` (rows of
/// the original API's table, which the original API's writer locks in
/// groups of its own) each on its own, the others as one group.
async fn write_round(writer: &Writer, round: Vec<QueuedFlowWrite>) {
    let (onboarding, others): (Vec<_>, Vec<_>) = round
        .into_iter()
        .partition(|(write, _)| write.fresh.flow == ONBOARDING);
    each_alone(writer, onboarding);
    write_group(writer, others).await;
}

/// How a group's transaction failed: before its commit, when nothing was
/// written, or at the commit, when it may have been; or it met a lock held
/// elsewhere, and wrote nothing.
enum Failed {
    Before(DbError),
    AtCommit(DbError),
    Held,
}

async fn write_group(writer: &Writer, group: Vec<QueuedFlowWrite>) {
    if group.is_empty() {
        return;
    }
    let writes: Vec<&FlowWrite> = group.iter().map(|(write, _)| write).collect();
    match try_group(writer, &writes).await {
        Ok(answers) => {
            for ((_, answer), written) in group.into_iter().zip(answers) {
                let _ = answer.send(written);
            }
        }
        // A lock held elsewhere, or a statement the database refused:
        // nothing is written, and each write alone waits for its own lock
        // or tells which of them the database refuses.
        Err(Failed::Held) => each_alone(writer, group),
        Err(Failed::Before(error))
            if group.len() > 1 && (error.is_contended() || error.is_refusal()) =>
        {
            each_alone(writer, group);
        }
        Err(Failed::Before(error) | Failed::AtCommit(error)) => {
            for (_, answer) in group {
                let _ = answer.send(Err(error.clone().into()));
            }
        }
    }
}

/// Each write in a transaction and a task of its own, all at once (as
/// many as the writer's permits allow), each answered when done; one that
/// deadlocks is tried once more. The writer does not wait for them.
fn each_alone(writer: &Writer, writes: Vec<QueuedFlowWrite>) {
    for (write, answer) in writes {
        let pool = writer.pool.clone();
        let alone = Arc::clone(&writer.alone);
        tokio::spawn(async move {
            // The semaphore is never closed.
            let _permit = alone.acquire_owned().await;
            let mut written = write_alone(&pool, &write).await;
            if written.as_ref().is_err_and(is_deadlock) {
                written = write_alone(&pool, &write).await;
            }
            let _ = answer.send(written);
        });
    }
}

fn is_deadlock(error: &Error) -> bool {
    matches!(error, Error::Busy(source)
        if source.downcast_ref::<DbError>().is_some_and(DbError::is_deadlock))
}

async fn write_alone(pool: &PgPool, write: &FlowWrite) -> Result<FlowState, Error> {
    let mut tx = pooler::begin(pool).await.map_err(DbError::from)?;
    let written = on_postgres::write_on(&mut tx, write).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(written)
}

/// The group in one transaction, and each write's answer.
async fn try_group(
    writer: &Writer,
    writes: &[&FlowWrite],
) -> Result<Vec<Result<FlowState, Error>>, Failed> {
    let mut tx = writer
        .pool
        .begin_with(writer.begin.to_string())
        .await
        .map_err(before)?;
    let mut answers: Vec<Option<Result<FlowState, Error>>> = writes.iter().map(|_| None).collect();
    replay_kept(&mut tx, writes, &mut answers).await?;
    let stored = lock_states(&mut tx, writes, &answers).await?;
    let mut changes = Changes::default();
    for (write, answer) in writes.iter().zip(&mut answers) {
        if answer.is_some() {
            continue;
        }
        let key = (write.fresh.user_id.as_str(), write.fresh.flow.as_str());
        let Some(stored) = stored.get(&key) else {
            *answer = Some(Err(erased_meanwhile()));
            continue;
        };
        *answer = Some(match decided(&write.decide, stored) {
            Err(error) => Err(error),
            Ok(None) => Ok(stored.clone()),
            Ok(Some((mut next, happenings))) => {
                next.revision = stored.revision + 1;
                next.updated_at = write
                    .now
                    .max(stored.updated_at + TimeDelta::microseconds(1));
                changes.add(write, &next, &happenings).map(|()| next)
            }
        });
    }
    if !changes.states.user_ids.is_empty() {
        changes.bind().execute(&mut *tx).await.map_err(before)?;
    }
    tx.commit()
        .await
        .map_err(|error| Failed::AtCommit(error.into()))?;
    Ok(answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(closed().into())))
        .collect())
}

/// A statement's failure: a lock held elsewhere (`nowait`), or another.
fn before(error: sqlx::Error) -> Failed {
    let error = DbError::from(error);
    if error.is_lock_not_available() {
        Failed::Held
    } else {
        Failed::Before(error)
    }
}

/// Takes the locks of the writes' idempotency keys, and answers the writes
/// whose key is kept with the answer kept (or a conflict, for a key used
/// for another change).
async fn replay_kept(
    tx: &mut PgConnection,
    writes: &[&FlowWrite],
    answers: &mut [Option<Result<FlowState, Error>>],
) -> Result<(), Failed> {
    let (user_ids, keys): (Vec<&str>, Vec<&str>) = writes
        .iter()
        .filter_map(|write| {
            let idempotency = write.idempotency.as_ref()?;
            Some((idempotency.owner.as_str(), idempotency.key.as_str()))
        })
        .unzip();
    if keys.is_empty() {
        return Ok(());
    }
    let all_taken: bool = sqlx::query_scalar(LOCK_KEYS)
        .persistent(pooler::keep_prepared())
        .bind(&user_ids)
        .bind(&keys)
        .fetch_one(&mut *tx)
        .await
        .map_err(before)?;
    if !all_taken {
        return Err(Failed::Held);
    }
    let kept: Vec<(String, String, String, String)> = sqlx::query_as(SELECT_KEPT)
        .persistent(pooler::keep_prepared())
        .bind(&user_ids)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(before)?;
    let kept: HashMap<(&str, &str), (&str, &str)> = kept
        .iter()
        .map(|(user_id, key, request, response)| {
            (
                (user_id.as_str(), key.as_str()),
                (request.as_str(), response.as_str()),
            )
        })
        .collect();
    for (write, answer) in writes.iter().zip(answers) {
        let Some(idempotency) = &write.idempotency else {
            continue;
        };
        let pair = (idempotency.owner.as_str(), idempotency.key.as_str());
        if let Some((request, response)) = kept.get(&pair) {
            *answer = Some(replay(request, response, idempotency));
        }
    }
    Ok(())
}

/// The stored states of the writes not answered yet, locked: the missing
/// ones created first from the writes' fresh states. A state an erasure
/// deletes between its insert and its lock is created again, a few times.
async fn lock_states<'w>(
    tx: &mut PgConnection,
    writes: &[&'w FlowWrite],
    answers: &[Option<Result<FlowState, Error>>],
) -> Result<HashMap<(&'w str, &'w str), FlowState>, Failed> {
    let pending: Vec<&FlowWrite> = writes
        .iter()
        .zip(answers)
        .filter(|(_, answer)| answer.is_none())
        .map(|(write, _)| *write)
        .collect();
    let mut stored = HashMap::new();
    let mut missing = pending;
    let mut rounds = 0;
    while !missing.is_empty() {
        if rounds > 0 {
            insert_missing(tx, &missing).await?;
        }
        let (user_ids, flows): (Vec<&str>, Vec<&str>) = missing
            .iter()
            .map(|write| (write.fresh.user_id.as_str(), write.fresh.flow.as_str()))
            .unzip();
        let locked: Vec<FlowState> = sqlx::query_as(LOCK_STATES)
            .persistent(pooler::keep_prepared())
            .bind(&user_ids)
            .bind(&flows)
            .fetch_all(&mut *tx)
            .await
            .map_err(before)?;
        let locked: HashMap<(&str, &str), FlowState> = locked
            .into_iter()
            .filter_map(|state| {
                // Keyed by the write's own strings, which outlive the rows.
                let write = missing.iter().find(|write| {
                    write.fresh.user_id == state.user_id && write.fresh.flow == state.flow
                })?;
                Some((
                    (write.fresh.user_id.as_str(), write.fresh.flow.as_str()),
                    state,
                ))
            })
            .collect();
        missing.retain(|write| {
            !locked.contains_key(&(write.fresh.user_id.as_str(), write.fresh.flow.as_str()))
        });
        stored.extend(locked);
        rounds += 1;
        if rounds > ERASED_MEANWHILE_RETRIES {
            break;
        }
    }
    Ok(stored)
}

/// Inserts the fresh states of `writes` that have none stored.
async fn insert_missing(tx: &mut PgConnection, writes: &[&FlowWrite]) -> Result<(), Failed> {
    let mut rows = StateRows::default();
    for write in writes {
        rows.push(&write.fresh);
    }
    rows.bind_all(query(INSERT_MISSING))
        .execute(&mut *tx)
        .await
        .map_err(before)?;
    Ok(())
}

/// States as columns, for `unnest`.
#[derive(Default)]
struct StateRows {
    user_ids: Vec<String>,
    flows: Vec<String>,
    versions: Vec<i32>,
    statuses: Vec<&'static str>,
    current_steps: Vec<i32>,
    steps: Vec<String>,
    started_at: Vec<Option<DateTime<Utc>>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    dismissed_at: Vec<Option<DateTime<Utc>>>,
    snoozed_until: Vec<Option<DateTime<Utc>>>,
    revisions: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A statement, kept prepared on its connection where that is safe.
fn query(statement: &str) -> PgQuery<'_> {
    sqlx::query(statement).persistent(pooler::keep_prepared())
}

impl StateRows {
    fn push(&mut self, state: &FlowState) {
        self.user_ids.push(state.user_id.clone());
        self.flows.push(state.flow.clone());
        self.versions.push(state.version);
        self.statuses.push(state.status.as_str());
        self.current_steps.push(state.current_step);
        self.steps.push(steps_record_json(&state.steps));
        self.started_at.push(state.started_at);
        self.completed_at.push(state.completed_at);
        self.dismissed_at.push(state.dismissed_at);
        self.snoozed_until.push(state.snoozed_until);
        self.revisions.push(state.revision);
        self.created_at.push(state.created_at);
        self.updated_at.push(state.updated_at);
    }

    /// Every column but `created_at`, which a change leaves as it is.
    fn bind_changed(mut self, query: PgQuery<'_>) -> PgQuery<'_> {
        let updated_at = std::mem::take(&mut self.updated_at);
        self.bind_before_times(query).bind(updated_at)
    }

    fn bind_all(mut self, query: PgQuery<'_>) -> PgQuery<'_> {
        let created_at = std::mem::take(&mut self.created_at);
        let updated_at = std::mem::take(&mut self.updated_at);
        self.bind_before_times(query)
            .bind(created_at)
            .bind(updated_at)
    }

    /// The columns up to `revision`, in `flow_state_columns!()` order.
    fn bind_before_times(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.user_ids)
            .bind(self.flows)
            .bind(self.versions)
            .bind(self.statuses)
            .bind(self.current_steps)
            .bind(self.steps)
            .bind(self.started_at)
            .bind(self.completed_at)
            .bind(self.dismissed_at)
            .bind(self.snoozed_until)
            .bind(self.revisions)
    }
}

/// What a group decided to write: states, events and kept answers, as
/// columns.
#[derive(Default)]
struct Changes {
    states: StateRows,
    events: EventRows,
    keys: KeyRows,
}

#[derive(Default)]
struct EventRows {
    user_ids: Vec<String>,
    flows: Vec<String>,
    versions: Vec<i32>,
    kinds: Vec<&'static str>,
    steps: Vec<Option<String>>,
    actors: Vec<String>,
    request_ids: Vec<Option<String>>,
    at: Vec<DateTime<Utc>>,
    data: Vec<Option<String>>,
    revisions: Vec<i64>,
    snapshots: Vec<String>,
}

#[derive(Default)]
struct KeyRows {
    user_ids: Vec<String>,
    keys: Vec<String>,
    requests: Vec<String>,
    responses: Vec<String>,
    created_at: Vec<DateTime<Utc>>,
    group_ids: Vec<Option<String>>,
}

impl Changes {
    /// Adds `next`, the state `write` decided, with its events and the
    /// answer kept for its key.
    fn add(
        &mut self,
        write: &FlowWrite,
        next: &FlowState,
        happenings: &[crate::domain::Happened],
    ) -> Result<(), Error> {
        if let Some(idempotency) = &write.idempotency {
            self.keys
                .responses
                .push(serde_json::to_string(next).map_err(internal)?);
            self.keys.user_ids.push(idempotency.owner.clone());
            self.keys.group_ids.push(idempotency.group_id.clone());
            self.keys.keys.push(idempotency.key.clone());
            self.keys.requests.push(idempotency.fingerprint.clone());
            self.keys.created_at.push(write.now);
        }
        self.states.push(next);
        let snapshot = crate::domain::webhook::snapshot_of(next);
        for happened in happenings {
            let events = &mut self.events;
            events.user_ids.push(next.user_id.clone());
            events.flows.push(next.flow.clone());
            events.versions.push(next.version);
            events.kinds.push(happened.kind.as_str());
            events.steps.push(happened.step.clone());
            events.actors.push(write.provenance.actor.clone());
            events.request_ids.push(write.provenance.request_id.clone());
            events.at.push(next.updated_at);
            events
                .data
                .push(happened.data.as_ref().map(ToString::to_string));
            events.revisions.push(next.revision);
            events.snapshots.push(snapshot.clone());
        }
        Ok(())
    }

    fn bind(self) -> PgQuery<'static> {
        let Self {
            states,
            events,
            keys,
        } = self;
        states
            .bind_changed(query(WRITE_CHANGES))
            .bind(events.user_ids)
            .bind(events.flows)
            .bind(events.versions)
            .bind(events.kinds)
            .bind(events.steps)
            .bind(events.actors)
            .bind(events.request_ids)
            .bind(events.at)
            .bind(events.data)
            .bind(keys.user_ids)
            .bind(keys.keys)
            .bind(keys.requests)
            .bind(keys.responses)
            .bind(keys.created_at)
            .bind(keys.group_ids)
            .bind(events.revisions)
            .bind(events.snapshots)
    }
}
