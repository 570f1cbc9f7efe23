//! Postgres: a connection pool, and reads and writes that wait together
//! served by one statement each instead of one round trip apiece.
//!
//! Every write is a single upsert, atomic on its own; replicas write side by
//! side, so the statements themselves move `updated_at` past the stored one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;

use super::groups::{self, Queues, Reader, Write, WriteQueue, WriteRequest, gather};
use super::{DbError, FlowStore, Result, Upserts};
use crate::domain::{Change, FlowState, OnboardingState, Step};

/// The rows of a group: `$1` user ids, `$2` steps, `$3` times; then the
/// created and updated times.
macro_rules! rows {
    ($($column:literal),+) => {
        concat!(
            "select ", $($column, ", ",)+ "w.n, w.n from unnest($1::text[], $2::int4[], $3::timestamptz[]) as w(u, s, n)"
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
            ", 1 from unnest($1::text[], $2::int4[], $3::timestamptz[]) as w(u, s, n)"
        )
    };
}

/// An original-API write and its events, in one statement: the upsert, and
/// an event per row it wrote, with `$4` the actors and `$5` the request ids.
macro_rules! logged {
    ($upsert:expr, $type:literal, $data:ident) => {
        concat!(
            "with written as (",
            $upsert,
            "), logged as (",
            event_columns!(),
            "select written.user_id, 'onboarding', written.version, '",
            $type,
            "', w.a, w.r, written.updated_at, ",
            event_data!($data),
            " from written join unnest($1::text[], $4::text[], $5::text[]) as w(u, a, r) \
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
    columns!(),
    ") ",
    rows!("w.u", "false", "0", "null::timestamptz"),
    " on conflict (user_id) do nothing"
);

const UPSERTS: Upserts = upserts!(
    logged,
    written_rows!("true", "w.n", "COMPLETED", "w.n"),
    written_rows!("false", "null::timestamptz", "IN_PROGRESS", "w.n"),
    written_rows!(
        "false",
        "null::timestamptz",
        "NOT_STARTED",
        "null::timestamptz"
    ),
    "greatest(excluded.updated_at, onboarding_state.updated_at + interval '1 microsecond')"
);

/// The Postgres database: its pool, and the queues to the tasks that group
/// reads and writes on it.
#[derive(Debug, Clone)]
pub struct Postgres {
    pool: PgPool,
    queues: Queues,
    flows: FlowStore,
}

impl Postgres {
    /// Starts the writer and the readers on `pool`.
    pub fn start(pool: PgPool, max_connections: u32) -> Self {
        let readers = groups::readers(max_connections);
        let (queues, write_queue, read_queue) = Queues::new(readers);
        queues.started(tokio::spawn(write_groups(pool.clone(), write_queue)));
        for _ in 0..readers {
            queues.started(tokio::spawn(groups::read_groups(
                pool.clone(),
                read_queue.clone(),
            )));
        }
        let flows = FlowStore::postgres(pool.clone(), queues.clone());
        Self {
            pool,
            queues,
            flows,
        }
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

/// The pool answers each kind of read in a group with one statement.
impl Reader for PgPool {
    async fn states(&mut self, user_ids: Vec<&str>) -> Result<Vec<OnboardingState>> {
        Ok(sqlx::query_as(FIND_ANY)
            .bind(user_ids)
            .fetch_all(&*self)
            .await?)
    }

    async fn flow_states(&mut self, keys: Vec<(&str, &str)>) -> Result<Vec<FlowState>> {
        let (user_ids, flows): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
        Ok(sqlx::query_as(FIND_FLOW_STATES)
            .bind(user_ids)
            .bind(flows)
            .fetch_all(&*self)
            .await?)
    }

    async fn onboarding_flow_states(&mut self, user_ids: Vec<&str>) -> Result<Vec<FlowState>> {
        Ok(sqlx::query_as(FIND_ONBOARDING_FLOW_STATES)
            .bind(user_ids)
            .fetch_all(&*self)
            .await?)
    }

    /// The pool is the server's, closed with it.
    async fn finish(self) {}
}

async fn find_any(pool: &PgPool, ids: Vec<String>) -> Result<HashMap<String, OnboardingState>> {
    let states: Vec<OnboardingState> = sqlx::query_as(FIND_ANY).bind(ids).fetch_all(pool).await?;
    Ok(states
        .into_iter()
        .map(|state| (state.user_id.clone(), state))
        .collect())
}

/// The writer: every write waiting, up to a group, in as few statements as
/// the group allows (one for each kind of write, in rounds where a user
/// appears at most once), each answered once its statement has committed.
async fn write_groups(pool: PgPool, mut queue: WriteQueue) {
    while let Some(first) = queue.recv().await {
        let (group, close) = gather(first, || queue.try_recv().ok());
        let mut waiting = group;
        while !waiting.is_empty() {
            let (round, later) = one_round(waiting);
            write_round(&pool, round).await;
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
async fn write_round(pool: &PgPool, round: Vec<WriteRequest>) {
    let mut kinds: HashMap<Kind, Vec<WriteRequest>> = HashMap::new();
    for request in round {
        kinds
            .entry(Kind::of(&request.user.1))
            .or_default()
            .push(request);
    }
    for (kind, requests) in kinds {
        let ids: Vec<String> = requests
            .iter()
            .map(|request| request.user.0.as_str().to_owned())
            .collect();
        let steps: Vec<i32> = requests
            .iter()
            .map(|request| step_of(&request.user.1).get())
            .collect();
        let (actors, request_ids): (Vec<&str>, Vec<Option<&str>>) = requests
            .iter()
            .map(|request| match &request.user.1 {
                Write::Apply(_, provenance) => {
                    (provenance.actor.as_str(), provenance.request_id.as_deref())
                }
                Write::Create => ("", None),
            })
            .unzip();
        let times: Vec<DateTime<Utc>> = requests.iter().map(|request| request.now).collect();
        let written = match kind.statement() {
            Some(upsert) => sqlx::query_as::<_, OnboardingState>(upsert)
                .bind(ids)
                .bind(steps)
                .bind(times)
                .bind(actors)
                .bind(request_ids)
                .fetch_all(pool)
                .await
                .map_err(DbError::from)
                .map(|states| {
                    states
                        .into_iter()
                        .map(|state| (state.user_id.clone(), state))
                        .collect()
                }),
            None => create_missing(pool, ids, steps, times).await,
        };
        for request in requests {
            let state = match &written {
                Ok(states) => Ok(states.get(request.user.0.as_str()).cloned()),
                Err(error) => Err(error.clone()),
            };
            let _ = request.answer.send(state);
        }
    }
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
        sqlx::query(CREATE_MISSING)
            .bind(&ids)
            .bind(steps)
            .bind(times)
            .execute(pool)
            .await?;
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

    fn statement(self) -> Option<&'static str> {
        match self {
            Kind::Create => None,
            Kind::Complete => Some(UPSERTS.complete),
            Kind::SetStep => Some(UPSERTS.set_step),
            Kind::Reset => Some(UPSERTS.reset),
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
