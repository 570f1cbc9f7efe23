//! Requests that wait together are served together: the queue of a reader or
//! writer task, and how a task takes what waits as one group.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{DbError, Provenance, Result};
use crate::domain::{Change, FlowState, ONBOARDING, OnboardingState, UserId};

/// Most reads or writes taken as one group.
pub const MAX_GROUP: usize = 256;

/// The queues to a database's writer and readers, and their tasks.
#[derive(Debug, Clone)]
pub struct Queues {
    writes: flume::Sender<Job<WriteRequest>>,
    reads: flume::Sender<Job<Read>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    writers: usize,
    readers: usize,
}

/// The receiving ends, for the tasks that serve them.
pub type WriteQueue = flume::Receiver<Job<WriteRequest>>;
pub type ReadQueue = flume::Receiver<Job<Read>>;

impl Queues {
    /// Queues for `writers` writers and `readers` readers, started by the
    /// caller.
    pub fn new(writers: usize, readers: usize) -> (Self, WriteQueue, ReadQueue) {
        let (writes, write_queue) = flume::bounded(4 * MAX_GROUP);
        let (reads, read_queue) = flume::bounded(4 * MAX_GROUP);
        let queues = Self {
            writes,
            reads,
            tasks: Arc::default(),
            writers,
            readers,
        };
        (queues, write_queue, read_queue)
    }

    /// Keeps a serving task, for `close` to wait on.
    pub fn started(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(task);
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.read(Read::Ping).await
    }

    /// A user's state, if stored.
    pub async fn state(&self, user_id: &UserId) -> Result<Option<OnboardingState>> {
        self.read(|answer| Read::State(user_id.clone(), answer))
            .await
    }

    /// A user's state in a flow, if stored.
    pub async fn flow_state(&self, user_id: &str, flow: &str) -> Result<Option<FlowState>> {
        self.read(|answer| Read::FlowState(user_id.to_owned(), flow.to_owned(), answer))
            .await
    }

    /// Queues the read `ask` makes of its answer's sender, and waits for it.
    async fn read<T>(&self, ask: impl FnOnce(Answer<T>) -> Read) -> Result<T> {
        let (answer, answered) = oneshot::channel();
        self.reads
            .send_async(Job::Request(ask(answer)))
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    /// The state after `write`, answered once it is committed.
    pub async fn write(
        &self,
        user_id: &UserId,
        write: Write,
        now: DateTime<Utc>,
    ) -> Result<OnboardingState> {
        let (answer, answered) = oneshot::channel();
        let request = Request {
            user: (user_id.clone(), write),
            now,
            answer,
        };
        self.writes
            .send_async(Job::Request(request))
            .await
            .map_err(|_| closed())?;
        answered
            .await
            .map_err(|_| closed())??
            .ok_or_else(|| sqlx::Error::RowNotFound.into())
    }

    /// Lets the writer and the readers finish what is queued, then waits for
    /// them to close their connections.
    pub async fn close(&self) {
        for _ in 0..self.writers {
            let _ = self.writes.send_async(Job::Close).await;
        }
        for _ in 0..self.readers {
            let _ = self.reads.send_async(Job::Close).await;
        }
        wait_for(&self.tasks).await;
    }
}

/// Waits for every task of `tasks` to end.
pub async fn wait_for(tasks: &Mutex<Vec<JoinHandle<()>>>) {
    let tasks = std::mem::take(
        &mut *tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    for task in tasks {
        let _ = task.await;
    }
}

/// Readers beyond one per core would only split groups.
pub fn readers(max_connections: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    (max_connections as usize).clamp(1, cores)
}

/// A write: the state to create when missing, or a change to apply and who
/// made it, for its event.
#[derive(Debug, Clone)]
pub enum Write {
    Create,
    Apply(Change, Provenance),
}

/// A read, and where its answer goes: a user's state, a user's state in a
/// flow, or only whether the database answers.
pub enum Read {
    Ping(Answer<()>),
    State(UserId, Answer<Option<OnboardingState>>),
    FlowState(String, String, Answer<Option<FlowState>>),
}

pub type Answer<T> = oneshot::Sender<Result<T>>;

/// One queued request, or the word to stop.
pub enum Job<T> {
    Request(T),
    Close,
}

/// A write and where its answer goes.
pub struct Request<T> {
    pub user: T,
    pub now: DateTime<Utc>,
    pub answer: Answer<Option<OnboardingState>>,
}

pub type WriteRequest = Request<(UserId, Write)>;

/// The statements a reader answers a group of reads with, one per kind.
pub trait Reader {
    /// The states of the users.
    fn states(
        &mut self,
        user_ids: Vec<&str>,
    ) -> impl Future<Output = Result<Vec<OnboardingState>>> + Send;

    /// The states of the (user id, flow) pairs, none of them `onboarding`.
    fn flow_states(
        &mut self,
        keys: Vec<(&str, &str)>,
    ) -> impl Future<Output = Result<Vec<FlowState>>> + Send;

    /// The states of the users in the built-in flow `onboarding`.
    fn onboarding_flow_states(
        &mut self,
        user_ids: Vec<&str>,
    ) -> impl Future<Output = Result<Vec<FlowState>>> + Send;

    /// Closes the reader's connection, if it holds one of its own.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// A reader task: takes every read waiting, up to `MAX_GROUP`, and answers
/// them together, until told to close.
pub async fn read_groups(mut reader: impl Reader, queue: ReadQueue) {
    while let Ok(first) = queue.recv_async().await {
        let (group, close) = gather(first, || queue.try_recv().ok());
        answer_reads(&mut reader, group).await;
        if close {
            break;
        }
    }
    reader.finish().await;
}

/// Answers a group of reads with at most one statement of each kind. A
/// group of pings alone runs the states statement with no users, which
/// still needs the database to answer.
async fn answer_reads(reader: &mut impl Reader, group: Vec<Read>) {
    let mut pings = Vec::new();
    let mut states = Vec::new();
    let mut flow_states = Vec::new();
    for read in group {
        match read {
            Read::Ping(answer) => pings.push(answer),
            Read::State(user_id, answer) => states.push((user_id, answer)),
            Read::FlowState(user_id, flow, answer) => flow_states.push((user_id, flow, answer)),
        }
    }
    if !states.is_empty() || (!pings.is_empty() && flow_states.is_empty()) {
        let user_ids = states.iter().map(|(user_id, _)| user_id.as_str()).collect();
        let found = reader.states(user_ids).await;
        for (user_id, answer) in states {
            let state = found.as_ref().map_err(Clone::clone).map(|found| {
                found
                    .iter()
                    .find(|state| state.user_id == user_id.as_str())
                    .cloned()
            });
            let _ = answer.send(state);
        }
        answer_pings(&mut pings, found.map(drop));
    }
    if !flow_states.is_empty() {
        let found = find_flow_states(reader, &flow_states).await;
        for (user_id, flow, answer) in flow_states {
            let state = found.as_ref().map_err(Clone::clone).map(|found| {
                found
                    .iter()
                    .find(|state| state.user_id == user_id && state.flow == flow)
                    .cloned()
            });
            let _ = answer.send(state);
        }
        answer_pings(&mut pings, found.map(drop));
    }
}

/// The states of the users in their flows, from at most one statement per
/// table: `onboarding`'s are in `onboarding_state`, the others in `flow_state`.
async fn find_flow_states<T>(
    reader: &mut impl Reader,
    reads: &[(String, String, T)],
) -> Result<Vec<FlowState>> {
    let (onboarding, others): (Vec<_>, Vec<_>) = reads
        .iter()
        .map(|(user_id, flow, _)| (user_id.as_str(), flow.as_str()))
        .partition(|(_, flow)| *flow == ONBOARDING);
    let mut found = Vec::new();
    if !others.is_empty() {
        found = reader.flow_states(others).await?;
    }
    if !onboarding.is_empty() {
        let user_ids = onboarding.into_iter().map(|(user_id, _)| user_id).collect();
        found.extend(reader.onboarding_flow_states(user_ids).await?);
    }
    Ok(found)
}

/// Answers the pings waiting, with whether a statement just run succeeded.
fn answer_pings(pings: &mut Vec<Answer<()>>, ran: Result<()>) {
    for ping in pings.drain(..) {
        let _ = ping.send(ran.clone());
    }
}

/// What a request gets when the writer or readers have stopped.
pub fn closed() -> DbError {
    sqlx::Error::PoolClosed.into()
}

/// The group that starts with `first`: every request waiting behind it, up
/// to `MAX_GROUP`, and whether a `Close` ended it. Each queue user takes one
/// `Close` at most, so every reader gets one of its own.
pub fn gather<T>(first: Job<T>, mut waiting: impl FnMut() -> Option<Job<T>>) -> (Vec<T>, bool) {
    let mut group = Vec::new();
    let mut next = Some(first);
    while let Some(job) = next {
        match job {
            Job::Request(request) => group.push(request),
            Job::Close => return (group, true),
        }
        if group.len() == MAX_GROUP {
            break;
        }
        next = waiting();
    }
    (group, false)
}
