//! Where log lines go: a buffer in memory that a thread of its own writes to
//! stderr every few milliseconds, or sooner once it fills.
//!
//! A request never waits for a write system call, nor wakes another thread:
//! a line costs a lock and a copy. Nothing is dropped; a line is at most
//! `FLUSH_EVERY` late, and `Flusher`'s drop writes the rest at exit.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this full is written at once rather than at the next tick.
const FLUSH_AT_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<u8>,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writer the subscriber formats lines into.
#[derive(Debug, Clone)]
pub struct BatchedStderr(Arc<Shared>);

/// Keeps the thread that writes the buffer out; dropping it writes the rest,
/// and lines logged after that go straight to stderr.
#[derive(Debug)]
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer to stderr in batches, and the flusher that must outlive its use.
pub fn batched_stderr() -> (BatchedStderr, Flusher) {
    let shared = Arc::new(Shared::default());
    let flushing = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || write_out(&flushing))
        .ok();
    // Without the thread, lines go straight to stderr.
    shared.lock().closing = thread.is_none();
    (BatchedStderr(shared.clone()), Flusher { shared, thread })
}

/// Writes the buffer to stderr each tick, or when woken, until closing.
fn write_out(shared: &Shared) {
    let mut pending = Vec::new();
    loop {
        let closing = {
            let state = shared.lock();
            let (mut state, _) = shared
                .wake
                .wait_timeout(state, FLUSH_EVERY)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::swap(&mut state.lines, &mut pending);
            state.closing
        };
        if !pending.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&pending);
            let _ = stderr.flush();
            pending.clear();
        }
        if closing {
            return;
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line's write: appended to the buffer. A warning or an error is
/// written at once, with every line before it, since it may be the last
/// thing the process says before it is killed.
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.closing {
            return std::io::stderr().write(bytes);
        }
        state.lines.extend_from_slice(bytes);
        if self.urgent {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&state.lines);
            let _ = stderr.flush();
            state.lines.clear();
        } else if state.lines.len() >= FLUSH_AT_BYTES {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.0,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            shared: &self.0,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}
