//! Builds the HTTP application (routes and layers) and serves it until a
//! shutdown signal, letting in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::auth::{self, KeyError, TokenRequest, Verifier};
use crate::config::{DatabaseArgs, ServeArgs};
use crate::db::{ConnectError, Db};
use crate::graphql;
use crate::http::access_log::AccessLogLayer;
use crate::http::connections::{self, ConnectionLimits};
use crate::http::cors::{self, Cors};
use crate::http::document_cache::DocumentCache;
use crate::http::state::{AppState, Shared, SubscriptionSlots};
use crate::http::{graphiql, graphql_over_http, graphql_sse, graphql_ws};
use crate::service::{Flows, Onboarding, Webhooks};

/// How long one request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `/readyz` waits for the database.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
/// The user the `--dev` demo token speaks for.
pub const DEMO_USER: &str = "demo-user";
/// How long the `--dev` demo token is valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Why the server could not start; each says which setting to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Database(#[from] ConnectError),
    #[error("{0}")]
    Migrate(#[from] crate::db::MigrationError),
    #[error("cannot listen on LISTEN_ADDR {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--dev refuses to listen on {0}: its signing secret is public, so it binds loopback only \
         (e.g. LISTEN_ADDR=127.0.0.1:8080)"
    )]
    DevNotLoopback(SocketAddr),
    #[error("{0}")]
    BadOrigin(#[from] cors::BadOrigin),
}

/// A server that has its database ready and its port bound.
pub struct Application {
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    db: Db,
    dev_token: Option<Arc<str>>,
    /// Removes expired idempotency keys while the server runs.
    forgetting_keys: tokio::task::JoinHandle<()>,
    /// Makes the event history into webhook messages and sends them.
    delivering: tokio::task::JoinHandle<()>,
    state: AppState,
    /// How long `/readyz` answers 503 before the server stops accepting.
    drain: Duration,
}

impl Application {
    /// Checks the settings, opens and migrates the database and binds the port.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartError> {
        if args.dev && !args.listen_addr.ip().is_loopback() {
            return Err(StartError::DevNotLoopback(args.listen_addr));
        }
        let verifier = Verifier::from_settings(&args.jwt, args.dev).await?;
        let cors = Cors::new(&args.cors_allowed_origins, args.dev)?;
        let dev_token = if args.dev { demo_token(args)? } else { None };
        connections::raise_file_limit(args.max_connections as usize);
        let db = connect_waiting(&args.database, args.database_wait).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            database = %crate::db::describe(&args.database.database_url),
            "database connected"
        );
        if args.no_migrate {
            db.check_migrated().await?;
        } else {
            let applied = db.migrate().await?;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "database migrations applied");
            }
        }
        let listener = TcpListener::bind(args.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: args.listen_addr,
                source,
            })?;
        let flows = Flows::new(&db);
        let forgetting_keys = flows.forget_expired_keys();
        let webhooks = Webhooks::new(&flows, args.webhook_allow_private);
        let delivering = webhooks.deliveries().start();
        let operations = graphql::Operations {
            onboarding: Onboarding::new(db.clone()),
            flows: flows.clone(),
            webhooks,
        };
        let state = Arc::new(Shared {
            schema: graphql::schema(Some(operations.clone())),
            schema_for_valid_documents: graphql::schema_for_valid_documents(operations),
            verifier,
            db: db.clone(),
            documents: DocumentCache::default(),
            dev_token: dev_token.clone(),
            draining: AtomicBool::new(false),
            subscriptions: SubscriptionSlots::new(args.max_subscriptions as usize),
        });
        Ok(Self {
            listener,
            router: router(Arc::clone(&state), cors),
            limits: ConnectionLimits {
                max_connections: args.max_connections as usize,
                header_read_timeout: args.header_read_timeout,
                idle_timeout: args.idle_timeout,
            },
            db,
            dev_token,
            forgetting_keys,
            delivering,
            state,
            drain: args.shutdown_drain,
        })
    }

    /// The address actually bound (the port is chosen by the OS for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The `--dev` demo token, when there is one.
    pub fn dev_token(&self) -> Option<&str> {
        self.dev_token.as_deref()
    }

    /// Serves until `signal` completes; then `/readyz` answers 503 for the
    /// drain time (SHUTDOWN_DRAIN) while requests are still served, then the
    /// server stops accepting, finishes in-flight requests and closes the
    /// database.
    pub async fn run_until_drained(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (state, drain) = (Arc::clone(&self.state), self.drain);
        self.run_until(async move {
            signal.await;
            state.draining.store(true, Ordering::Relaxed);
            tracing::info!(
                drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
                "stopping: /readyz answers 503 while load balancers take this server out"
            );
            tokio::time::sleep(drain).await;
            tracing::info!("no longer accepting connections; finishing the requests in flight");
        })
        .await
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and
    /// closes the database pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        connections::serve(self.listener, self.router, self.limits, shutdown).await?;
        self.forgetting_keys.abort();
        // A message on its way when the server stops is sent again by the
        // next sender once its lease runs out: at least once.
        self.delivering.abort();
        self.db.close().await;
        Ok(())
    }
}

/// The routes and the layers every request passes through, CORS preflights
/// included: they too get a request id and a log line.
pub fn router(state: AppState, cors: Cors) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        // Only the API does work that can take long; the 408 still passes
        // the CORS layer outside.
        .route(
            "/graphql",
            get(graphql_ws::get).post(graphql_over_http::post).layer(
                TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT),
            ),
        )
        // Streams last as long as their subscription: no request timeout.
        .route(
            "/graphql/stream",
            get(graphql_sse::get).post(graphql_sse::post),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(graphiql::assets_router())
        .fallback(not_found)
        .with_state(state)
        // Layers run bottom-up on the way in: the id is set before the access
        // log reads it, and copied onto the response on the way out. CORS sits
        // outside the timeout and panic answers, so a browser can read them.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(ValidateRequestHeaderLayer::custom(
            connections::refuse_oversized_head,
        ))
        .layer(cors)
        .layer(AccessLogLayer)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RequestIds::new()))
}

/// Request ids in the shape of a UUID: 64 random bits drawn once per process,
/// so that ids from different replicas do not collide, then a counter. A
/// random UUID per request would cost a `getrandom` system call each.
#[derive(Debug, Clone)]
struct RequestIds {
    process: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        // std seeds every `RandomState` from the system's randomness.
        let process = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        Self {
            process,
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            self.process >> 32,
            (self.process >> 16) & 0xffff,
            self.process & 0xffff,
            (count >> 48) & 0xffff,
            count & 0xffff_ffff_ffff,
        );
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// `GET /healthz`: the process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    match tokio::time::timeout(READINESS_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: the database did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "Not found. The API is at /graphql; health checks at /healthz and /readyz.\n",
    )
        .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    let body = serde_json::json!({
        "errors": [{
            "message": "Internal server error.",
            "extensions": { "code": "INTERNAL_SERVER_ERROR" }
        }]
    });
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// A token for the demo user, signed with whatever HS256 secret the server
/// verifies with; none when it verifies with public keys.
fn demo_token(args: &ServeArgs) -> Result<Option<Arc<str>>, StartError> {
    let jwt = &args.jwt;
    let public_keys =
        jwt.jwt_public_key_file.is_some() || jwt.jwt_jwks_url.is_some() || jwt.jwt_issuer.is_some();
    let secret = match &jwt.jwt_secret {
        Some(secret) => secret.as_str(),
        None if !public_keys => auth::DEV_SECRET,
        None => return Ok(None),
    };
    let token = auth::mint(&TokenRequest {
        secret,
        sub: DEMO_USER,
        roles: &[],
        groups: &[],
        ttl: DEMO_TOKEN_TTL,
        issuer: args.jwt.jwt_issuer.as_deref(),
        audience: args.jwt.jwt_audience.as_deref(),
    })?;
    Ok(Some(token.into()))
}

/// The database, once it accepts connections: a database that is not up
/// yet (refused, no answer, starting up) is tried again with backoff for up
/// to `wait`, each time saying why; anything else fails at once.
async fn connect_waiting(args: &DatabaseArgs, wait: Duration) -> Result<Db, ConnectError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match Db::connect(args).await {
            Err(error)
                if error.is_transient() && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(
                    %error,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "the database does not accept connections yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            connected => return connected,
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
