//! Client connections: the accept loop, a cap on how many are open, a
//! deadline for a request's head from its first byte, an idle timeout between
//! requests, and the bounds on a request's head.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::http::graphql_over_http;

/// Longest request target (path and query string) answered with more than a
/// refusal; a GraphQL query sent with GET fits in far less.
pub const MAX_URI_BYTES: usize = 32 * 1024;
/// Most bytes of request header fields (names, values and separators).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most request header fields.
pub const MAX_HEADERS: usize = 100;
/// What the HTTP library itself reads of a request head before it answers a
/// bare 431 and closes: room for the limits above, which are answered with a
/// JSON error and a request id, and no more.
const HARD_HEAD_BYTES: usize = MAX_URI_BYTES + MAX_HEADER_BYTES + 1024;
const HARD_HEADERS: usize = MAX_HEADERS + 28;
/// How long shutdown waits for open connections once in-flight requests have
/// had their request timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(35);
/// How often a full house is logged at most.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds every connection is served with.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// From a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// From the end of a response to the next request's first byte.
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Told to every connection when the server stops; each holds a sender of
    // `open` until it ends, so the receiver hears `None` once all have.
    // (hyper-util's graceful shutdown does not take connections that may be
    // upgraded to WebSockets.)
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // `ClockedStream` times the head from its first byte instead: the
        // library's timer starts as soon as a connection waits, idle or not.
        .header_read_timeout(None)
        .max_header_size(HARD_HEAD_BYTES)
        .max_headers(HARD_HEADERS);
    let mut last_full_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_full_warning.is_none_or(|at| at.elapsed() > FULL_WARNING_INTERVAL) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "every connection slot is in use (MAX_CONNECTIONS): new connections wait"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are small and written whole: no reason to hold them back.
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnectionClock::new());
        let io = TokioIo::new(ClockedStream {
            inner: stream,
            clock: clock.clone(),
            header_read_timeout: limits.header_read_timeout,
            head_timer: None,
        });
        let router = router.clone();
        let watched = clock.clone();
        let slot = ConnectionSlot::new(permit);
        let offered = slot.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            clock.request_started();
            let clock = clock.clone();
            if request.headers().contains_key(axum::http::header::UPGRADE) {
                request.extensions_mut().insert(offered.clone());
            }
            let response = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response.await;
                match response {
                    // The socket is the WebSocket's now: no timer of HTTP's applies.
                    Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                        clock.set(Phase::Upgraded);
                        Ok(response)
                    }
                    // The connection is busy until the stream's last event.
                    Ok(response) if is_event_stream(&response) => {
                        Ok(response.map(|body| axum::body::Body::new(Streaming { body, clock })))
                    }
                    response => {
                        clock.response_sent();
                        response
                    }
                }
            }
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let (mut stopping, open) = (stopping.clone(), open.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            // Dropping the connection closes it.
            tokio::select! {
                closed = connection.as_mut() => if let Err(error) = closed {
                    tracing::debug!(%error, "connection closed");
                },
                () = watched.idle_expired(limits.idle_timeout) => {
                    tracing::debug!("idle connection closed");
                }
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    // Finishes the request in flight, then closes.
                    connection.as_mut().graceful_shutdown();
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection closed");
                    }
                }
            }
            drop(slot);
            drop(open);
        });
    }
    drop(listener);
    stop.send_replace(true);
    drop(open);
    if tokio::time::timeout(SHUTDOWN_GRACE, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period: closing them");
    }
    Ok(())
}

/// A connection's place under MAX_CONNECTIONS. A WebSocket takes it over
/// when its connection is upgraded, and holds it while it is open.
#[derive(Clone)]
pub struct ConnectionSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnectionSlot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }

    /// The place, for the upgraded socket to hold.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

fn is_event_stream(response: &axum::response::Response) -> bool {
    response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// The body of an event stream, which holds its connection busy (no idle
/// timeout) until it ends.
struct Streaming {
    body: axum::body::Body,
    clock: Arc<ConnectionClock>,
}

impl http_body::Body for Streaming {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.clock.response_sent();
    }
}

/// File descriptors the server needs besides its client connections: the
/// database pool, the listener, the runtime's own.
const RESERVED_FILES: u64 = 64;

/// Raises the process's soft limit on open files as far as `max_connections`
/// needs and the hard limit allows, and says so when that is not enough.
pub fn raise_file_limit(max_connections: usize) {
    let wanted = max_connections as u64 + RESERVED_FILES;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(granted) if granted < wanted => tracing::warn!(
            granted,
            max_connections,
            "the system allows fewer open files than MAX_CONNECTIONS needs: raise `ulimit -n` \
             (the hard limit) or lower MAX_CONNECTIONS"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the limit on open files"),
    }
}

/// Accepting fails for the connection alone (reset before it was taken) or
/// for the process (out of file descriptors): then wait before trying again,
/// rather than spin.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections (raise `ulimit -n` or lower MAX_CONNECTIONS)");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Where a connection stands, for the deadline it is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests since this instant: the idle timeout runs.
    Idle(Instant),
    /// A request's head has been arriving since this instant.
    Head(Instant),
    /// A request is being handled; the request timeout bounds it.
    Busy,
    /// Upgraded to a WebSocket, which keeps its own time.
    Upgraded,
}

/// The phase of one connection, moved on by its reads and by the service.
#[derive(Debug)]
struct ConnectionClock(Mutex<Phase>);

impl ConnectionClock {
    fn new() -> Self {
        Self(Mutex::new(Phase::Idle(Instant::now())))
    }

    fn phase(&self) -> Phase {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = phase;
    }

    /// The start of a head when the connection was idle.
    fn bytes_arrived(&self) {
        if let Phase::Idle(_) = self.phase() {
            self.set(Phase::Head(Instant::now()));
        }
    }

    fn request_started(&self) {
        self.set(Phase::Busy);
    }

    fn response_sent(&self) {
        self.set(Phase::Idle(Instant::now()));
    }

    /// Completes once the connection has sat idle for `idle_timeout`. It
    /// wakes at most once per idle timeout to look again: the deadline only
    /// ever moves later while it sleeps.
    async fn idle_expired(&self, idle_timeout: Duration) {
        loop {
            let (phase, wake_at) = match self.phase() {
                phase @ Phase::Idle(since) => (phase, since + idle_timeout),
                phase => (phase, Instant::now() + idle_timeout),
            };
            tokio::time::sleep_until(wake_at).await;
            if matches!(phase, Phase::Idle(_)) && self.phase() == phase {
                return;
            }
        }
    }
}

/// A TCP stream that tells its clock when bytes arrive, and fails a read
/// with `TimedOut` (which makes the HTTP library close the connection) once
/// a head has taken longer than the header read timeout. Reads are waited on
/// mid-head, so the timer is only armed for a head that arrives in pieces.
struct ClockedStream {
    inner: TcpStream,
    clock: Arc<ConnectionClock>,
    header_read_timeout: Duration,
    head_timer: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        if read.is_pending() && self.head_too_slow(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head took longer than HEADER_READ_TIMEOUT",
            )));
        }
        read
    }
}

impl ClockedStream {
    fn head_too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let Phase::Head(since) = self.clock.phase() else {
            self.head_timer = None;
            return false;
        };
        let deadline = since + self.header_read_timeout;
        let timer = self
            .head_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refuses a request whose target or header fields pass the limits above
/// with 414 or 431 and the same JSON error body as every other refusal.
#[expect(
    clippy::result_large_err,
    reason = "the signature tower-http's request validation takes"
)]
pub fn refuse_oversized_head(request: &mut Request) -> Result<(), Response> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        let message = format!(
            "The request target must be at most {} KiB; send a long query with POST.",
            MAX_URI_BYTES / 1024
        );
        return Err(graphql_over_http::refusal(
            request.headers(),
            StatusCode::URI_TOO_LONG,
            &message,
        ));
    }
    let headers = request.headers();
    // Each field as sent: name, ": ", value, CRLF.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        let message = format!(
            "The request headers must be at most {MAX_HEADERS} fields and {} KiB in all.",
            MAX_HEADER_BYTES / 1024
        );
        return Err(graphql_over_http::refusal(
            headers,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &message,
        ));
    }
    Ok(())
}
