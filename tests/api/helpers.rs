//! Spawns the real server on a random port, each test with a database of its
//! own, and talks HTTP to it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onboarding::auth::{self, TokenRequest};
use onboarding::config::{DatabaseArgs, JwtArgs, Pooler, ServeArgs};
use onboarding::http::Application;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio::sync::oneshot;

pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates, for each named `async fn(Backend)`, one test per backend:
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::postgres_server_url().is_some() {
                        super::$name($crate::helpers::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

/// The Postgres server tests create their databases on, from `TEST_DATABASE_URL`.
/// Without it the Postgres variants pass without running, saying so once.
pub fn postgres_server_url() -> Option<String> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        // Straight to the terminal: the test harness hides what `eprintln!`
        // prints in a passing test.
        WARNED.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\nNOTE: TEST_DATABASE_URL is not set, so the postgres::* tests pass WITHOUT \
                 RUNNING.\n      Set it (e.g. postgres://postgres@127.0.0.1:5432/postgres) or use \
                 tests/run, which does.\n"
            );
        });
    }
    url
}

/// A database of the test's own: a fresh SQLite file or a fresh Postgres database.
#[derive(Debug)]
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    name: String,
    dir: Option<PathBuf>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let name = unique_name();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("create a temp dir for SQLite");
                let url = format!("sqlite://{}", dir.join("onboarding.db").display());
                Self {
                    backend,
                    url,
                    name,
                    dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let server =
                    postgres_server_url().expect("TEST_DATABASE_URL names a Postgres server");
                let mut admin = PgConnection::connect(&server)
                    .await
                    .unwrap_or_else(|error| {
                        panic!("cannot reach the Postgres server in TEST_DATABASE_URL: {error}")
                    });
                admin
                    .execute(format!("create database \"{name}\"").as_str())
                    .await
                    .expect("create a test database");
                let url = with_database(&server, &name);
                Self {
                    backend,
                    url,
                    name,
                    dir: None,
                }
            }
        }
    }

    /// Runs one statement straight on the database, around the server.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut connection = SqliteConnection::connect(&self.url).await?;
                Ok(connection.execute(sql).await?.rows_affected())
            }
            Backend::Postgres => {
                let mut connection = PgConnection::connect(&self.url).await?;
                Ok(connection.execute(sql).await?.rows_affected())
            }
        }
    }

    /// How many rows `onboarding_state` holds for `user_id`.
    pub async fn count_rows(&self, user_id: &str) -> i64 {
        self.count(
            "select count(*) from onboarding_state where user_id = $1",
            Some(user_id),
        )
        .await
    }

    /// How many rows of the group `group_id` the flow tables hold: its
    /// states, its events and its idempotency records.
    pub async fn count_group_rows(&self, group_id: &str) -> i64 {
        self.count(
            "select (select count(*) from flow_state where user_id = $1) \
             + (select count(*) from flow_event where user_id = $1) \
             + (select count(*) from idempotency_key where group_id = $1)",
            Some(group_id),
        )
        .await
    }

    /// The ids of the events a webhook message is made from (every event
    /// written since webhooks arrived), in order.
    // `allow`, not `expect`: tests/abuse uses helpers too, and not this.
    #[allow(dead_code)]
    pub async fn webhook_event_ids(&self) -> Vec<i64> {
        let sql = "select id from flow_event where revision is not null order by id";
        match self.backend {
            Backend::Sqlite => {
                let mut connection = SqliteConnection::connect(&self.url)
                    .await
                    .expect("open SQLite");
                sqlx::query_scalar(sql).fetch_all(&mut connection).await
            }
            Backend::Postgres => {
                let mut connection = PgConnection::connect(&self.url)
                    .await
                    .expect("open Postgres");
                sqlx::query_scalar(sql).fetch_all(&mut connection).await
            }
        }
        .expect("event ids")
    }

    /// How many rows `onboarding_state` holds in all.
    pub async fn count_all_rows(&self) -> i64 {
        self.count("select count(*) from onboarding_state", None)
            .await
    }

    async fn count(&self, sql: &str, user_id: Option<&str>) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut connection = SqliteConnection::connect(&self.url)
                    .await
                    .expect("open SQLite");
                sqlx::query_scalar(sql)
                    .bind(user_id)
                    .fetch_one(&mut connection)
                    .await
            }
            Backend::Postgres => {
                let mut connection = PgConnection::connect(&self.url)
                    .await
                    .expect("open Postgres");
                sqlx::query_scalar(sql)
                    .bind(user_id)
                    .fetch_one(&mut connection)
                    .await
            }
        }
        .expect("count rows")
    }

    /// The Postgres database's name (for statements run from the server URL).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.backend == Backend::Postgres
            && let Some(server) = postgres_server_url()
        {
            let name = self.name.clone();
            // Drop runs inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut admin) = PgConnection::connect(&server).await {
                            let sql = format!("drop database if exists \"{name}\" with (force)");
                            let _ = admin.execute(sql.as_str()).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The settings a test server starts with; tests adjust them before spawning.
pub fn serve_args(database_url: &str) -> ServeArgs {
    ServeArgs {
        database: DatabaseArgs {
            database_url: database_url.to_owned(),
            database_max_connections: 10,
            database_statement_timeout: Duration::from_secs(10),
            database_lock_timeout: Duration::from_secs(2),
            database_pooler: Pooler::None,
            database_listen_url: None,
        },
        jwt: JwtArgs {
            jwt_secret: Some(SECRET.to_owned()),
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_admin_role: "admin".to_owned(),
            jwt_jwks_url: None,
            jwt_user_claim: "sub".to_owned(),
            jwt_roles_claim: "roles".to_owned(),
            jwt_groups_claim: "org_id".to_owned(),
        },
        listen_addr: "127.0.0.1:0".parse().expect("a socket address"),
        no_migrate: false,
        shutdown_drain: Duration::ZERO,
        database_wait: Duration::from_secs(1),
        cors_allowed_origins: Vec::new(),
        max_connections: 1024,
        max_subscriptions: 10_000,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
        // Tests' webhook receivers listen on loopback.
        webhook_allow_private: true,
        dev: false,
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let mut args = serve_args(&db.url);
    adjust(&mut args);
    let application = Application::build(&args).await.expect("the server starts");
    let address = format!(
        "http://{}",
        application.local_addr().expect("a bound address")
    );
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        db,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.address)
    }

    /// POSTs a GraphQL request as a token for `sub` (no token when `None`);
    /// the answer must be a 200.
    pub async fn graphql_as(&self, sub: Option<&str>, query: &str, variables: Value) -> Value {
        let token = sub.map(|sub| token(sub, &[]));
        let response = post_graphql(&self.graphql_url(), token.as_deref(), query, variables).await;
        assert_eq!(response.status(), 200, "a GraphQL response is a 200");
        response.json().await.expect("a JSON body")
    }

    /// POSTs a GraphQL request with an admin token.
    pub async fn graphql_as_admin(&self, query: &str, variables: Value) -> Value {
        let token = token("the-admin", &["admin"]);
        let response = post_graphql(&self.graphql_url(), Some(&token), query, variables).await;
        response.json().await.expect("a JSON body")
    }
}

/// POSTs one operation to `url`, with `Authorization: Bearer <token>` when given.
pub async fn post_graphql(
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the server answers")
}

/// POSTs one operation without variables and reads the answer as JSON.
pub async fn graphql(url: &str, token: Option<&str>, query: &str) -> Value {
    post_graphql(url, token, query, json!({}))
        .await
        .json()
        .await
        .expect("a JSON body")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A valid HS256 token for `sub` with `roles`, signed with the test secret.
pub fn token(sub: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|role| role.to_string()).collect();
    auth::mint(&TokenRequest {
        secret: SECRET,
        sub,
        roles: &roles,
        groups: &[],
        ttl: Duration::from_secs(3600),
        issuer: None,
        audience: None,
    })
    .expect("a token")
}

/// Signs arbitrary claims with `key` and `algorithm`, for tokens `mint` won't make.
pub fn sign(
    claims: &Value,
    algorithm: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, key).expect("signed")
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The first error's `extensions.code`.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error code in {body}"))
}

/// A name no other test, in this process or another, is using.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "onboarding_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let (scheme, rest) = base.split_once("://").expect("a URL with a scheme");
    let authority = rest.split('/').next().unwrap_or_default();
    match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// The real binary, started as an operator would, for what only a process
/// shows: its logs, its exit, and surviving SIGKILL.
pub struct ServerProcess {
    child: std::process::Child,
    pub address: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Every setting the server reads from the environment, cleared so that the
/// test's own environment cannot leak in.
const SETTINGS: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_LOCK_TIMEOUT",
    "DATABASE_POOLER",
    "NO_MIGRATE",
    "SHUTDOWN_DRAIN",
    "DATABASE_WAIT",
    "LISTEN_ADDR",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ADMIN_ROLE",
    "JWT_JWKS_URL",
    "JWT_USER_CLAIM",
    "JWT_ROLES_CLAIM",
    "CORS_ALLOWED_ORIGINS",
    "MAX_CONNECTIONS",
    "HEADER_READ_TIMEOUT",
    "IDLE_TIMEOUT",
    "RUST_LOG",
    "LOG_FORMAT",
    "WEBHOOK_ALLOW_PRIVATE",
];

/// The binary with a clean environment; `env` is added on top.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_onboarding"));
    command.args(args);
    for setting in SETTINGS {
        command.env_remove(setting);
    }
    command.envs(env.iter().copied());
    command
}

impl ServerProcess {
    /// Starts `onboarding serve` with JSON logs on a random port and waits
    /// until it listens.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::start_command(&["serve"], database_url, env).await
    }

    /// Starts `onboarding serve --dev` as `start` does (with `JWT_SECRET`
    /// set, so the test's tokens still verify).
    pub async fn start_dev(database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::start_command(&["serve", "--dev"], database_url, env).await
    }

    async fn start_command(args: &[&str], database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("DATABASE_URL", database_url),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("JWT_SECRET", SECRET),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("SHUTDOWN_DRAIN", "0s"),
        ];
        all.extend_from_slice(env);
        let mut child = command(args, &all)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut process = Self {
            child,
            address: String::new(),
            logs,
        };
        for _ in 0..300 {
            if let Some(addr) = process
                .logged("listening")
                .and_then(|line| line["addr"].as_str().map(str::to_owned))
            {
                process.address = format!("http://{addr}");
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("the server exited with {status}: {:?}", process.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not start listening: {:?}", process.logs());
    }

    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.address)
    }

    /// The `host:port` the server listens on.
    // `allow`, not `expect`: tests/abuse uses it, tests/api does not.
    #[allow(dead_code)]
    pub fn socket_address(&self) -> &str {
        self.address.trim_start_matches("http://")
    }

    /// A figure from `/proc/PID/status` in KiB, such as `VmRSS` or `VmHWM`
    /// (the peak resident memory so far).
    // `allow`, not `expect`: tests/abuse uses it, tests/api does not.
    #[allow(dead_code)]
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// CPU time the server has used so far (user and system), from `/proc/PID/stat`.
    // `allow`, not `expect`: tests/abuse uses it, tests/api does not.
    #[allow(dead_code)]
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the server's /proc stat");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        // The kernel counts in clock ticks, 100 a second on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The first JSON log line whose message is `message`.
    pub fn logged(&self, message: &str) -> Option<Value> {
        self.logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == message)
    }

    /// Waits up to 10 s for the first JSON log line whose message starts with
    /// `prefix`: the server's stderr is read on another thread, so a line
    /// written before a response may arrive after it.
    pub async fn wait_for_log(&self, prefix: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.all_logged(prefix).into_iter().next() {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line `{prefix}` within 10 s: {:?}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every JSON log line whose message starts with `prefix`.
    pub fn all_logged(&self, prefix: &str) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(prefix))
            })
            .collect()
    }

    /// Kills the process with SIGKILL: no chance to flush or shut down.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server is reaped");
    }

    /// Sends SIGTERM, without waiting for the process to act on it.
    pub fn send_sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.exit_status().await
    }

    /// Waits for the process to exit on its own, for at most 10 s.
    pub async fn exit_status(mut self) -> std::process::ExitStatus {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not exit within 10 s");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
