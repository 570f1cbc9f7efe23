//! Requests that wait together are served together: the queue of a reader or
//! writer task, and how a task takes what waits as one group.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{DbError, Provenance, Result};
use crate::domain::{Change, OnboardingState, UserId};

/// Most reads or writes taken as one group.
pub const MAX_GROUP: usize = 256;

/// The queues to a database's writer and readers, and their tasks.
#[derive(Debug, Clone)]
pub struct Queues {
    writes: mpsc::Sender<Job<(UserId, Write)>>,
    reads: flume::Sender<Job<Read>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    readers: usize,
}

/// The receiving ends, for the tasks that serve them.
pub type WriteQueue = mpsc::Receiver<Job<(UserId, Write)>>;
pub type ReadQueue = flume::Receiver<Job<Read>>;

impl Queues {
    /// Queues for one writer and `readers` readers, started by `start`.
    pub fn new(readers: usize) -> (Self, WriteQueue, ReadQueue) {
        let (writes, write_queue) = mpsc::channel(4 * MAX_GROUP);
        let (reads, read_queue) = flume::bounded(4 * MAX_GROUP);
        let queues = Self {
            writes,
            reads,
            tasks: Arc::default(),
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

    /// A user's state (`None` only checks that the database answers).
    pub async fn read(&self, user: Read) -> Result<Option<OnboardingState>> {
        let (answer, answered) = oneshot::channel();
        let job = Job::Request(Request {
            user,
            now: Utc::now(),
            answer,
        });
        self.reads.send_async(job).await.map_err(|_| closed())?;
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
            .send(Job::Request(request))
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
        let _ = self.writes.send(Job::Close).await;
        for _ in 0..self.readers {
            let _ = self.reads.send_async(Job::Close).await;
        }
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for task in tasks {
            let _ = task.await;
        }
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

/// What a read asks: one user's state, or (`None`) only that the database answers.
pub type Read = Option<UserId>;

/// One queued request and where its answer goes, or the word to stop.
pub enum Job<T> {
    Request(Request<T>),
    Close,
}

pub struct Request<T> {
    pub user: T,
    pub now: DateTime<Utc>,
    pub answer: oneshot::Sender<Result<Option<OnboardingState>>>,
}

/// What a request gets when the writer or readers have stopped.
pub fn closed() -> DbError {
    sqlx::Error::PoolClosed.into()
}

/// The group that starts with `first`: every request waiting behind it, up
/// to `MAX_GROUP`, and whether a `Close` ended it. Each queue user takes one
/// `Close` at most, so every reader gets one of its own.
pub fn gather<T>(
    first: Job<T>,
    mut waiting: impl FnMut() -> Option<Job<T>>,
) -> (Vec<Request<T>>, bool) {
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
