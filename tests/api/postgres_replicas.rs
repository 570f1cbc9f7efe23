//! Postgres in production: replicas writing the same users side by side
//! never fail each other, a row locked elsewhere delays only the writes to
//! it, and a server that cannot take writes makes the replica not ready
//! until it can, then serves again without a restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::task::JoinSet;

use crate::helpers::{
    Backend, ServerProcess, TestDatabase, command, error_code, post_graphql, postgres_server_url,
    token,
};

const ADMIN: &str = "replica-admin";

/// `mutation` for `user`, as an admin, on `server`: the body.
async fn write_for(server: &ServerProcess, user: &str, mutation: &str) -> Value {
    let query =
        format!("mutation($userId: String) {{ {mutation}(userId: $userId) {{ id currentStep }} }}");
    let admin = token(ADMIN, &["admin"]);
    post_graphql(
        &server.graphql_url(),
        Some(&admin),
        &query,
        json!({ "userId": user }),
    )
    .await
    .json()
    .await
    .expect("a JSON body")
}

async fn readyz(server: &ServerProcess) -> u16 {
    reqwest::get(format!("{}/readyz", server.address))
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_writing_the_same_users_in_any_order_never_fail_a_write() {
    if postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let replicas = [
        ServerProcess::start(&db.url, &[]).await,
        ServerProcess::start(&db.url, &[]).await,
    ];
    let addresses: Vec<String> = replicas.iter().map(|r| r.graphql_url()).collect();
    let admin = token(ADMIN, &["admin"]);
    let mut failures = Vec::new();
    // Bursts: both replicas get a write for each of the same users at once,
    // in orders that differ, so that their grouped statements overlap; a
    // client's own user is written among them.
    for round in 0..30_usize {
        let mut clients = JoinSet::new();
        for (replica, url) in addresses.iter().enumerate() {
            for slot in 0..14_usize {
                let user = match slot {
                    12 | 13 => format!("own-{replica}-{slot}"),
                    _ if (round + replica) % 2 == 0 => format!("shared-{slot}"),
                    _ => format!("shared-{}", 11 - slot),
                };
                let (url, admin) = (url.clone(), admin.clone());
                clients.spawn(async move {
                    let query = "mutation($userId: String) { completeOnboarding(step: 2, userId: $userId) { id } }";
                    post_graphql(&url, Some(&admin), query, json!({ "userId": user }))
                        .await
                        .json::<Value>()
                        .await
                        .expect("JSON")
                });
            }
        }
        failures.extend(
            clients
                .join_all()
                .await
                .into_iter()
                .filter(|body| body.get("errors").is_some()),
        );
    }

    assert!(
        failures.is_empty(),
        "{} writes failed: {failures:?}",
        failures.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_elsewhere_delays_only_the_writes_to_it() {
    if postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let server = ServerProcess::start(&db.url, &[("DATABASE_LOCK_TIMEOUT", "500ms")]).await;
    for user in ["locked", "free-1", "free-2"] {
        let body = write_for(&server, user, "resetOnboarding").await;
        assert!(body.get("errors").is_none(), "{body}");
    }

    let mut holder = PgConnection::connect(&db.url).await.expect("connect");
    holder.execute("begin").await.expect("begin");
    holder
        .execute("select 1 from onboarding_state where user_id = 'locked' for update")
        .await
        .expect("lock the row");

    let locked = {
        let address = server.graphql_url();
        tokio::spawn(async move {
            let started = Instant::now();
            let admin = token(ADMIN, &["admin"]);
            let query = "mutation { completeOnboarding(step: 1, userId: \"locked\") { id } }";
            let body: Value = post_graphql(&address, Some(&admin), query, json!({}))
                .await
                .json()
                .await
                .expect("JSON");
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        for user in ["free-1", "free-2"] {
            let started = Instant::now();
            let body = write_for(&server, user, "completeOnboarding").await;
            assert!(body.get("errors").is_none(), "{body}");
            assert!(
                started.elapsed() < Duration::from_millis(450),
                "a write of another user took {:?}",
                started.elapsed()
            );
        }
    }
    let (body, took) = locked.await.expect("the locked write answers");
    holder.execute("rollback").await.expect("unlock");
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("retry shortly"), "{message}");
    assert!(
        took < Duration::from_secs(3),
        "the locked write answered in {took:?}"
    );
    let body = write_for(&server, "locked", "completeOnboarding").await;
    assert!(
        body.get("errors").is_none(),
        "once unlocked, it is written: {body}"
    );
}

/// Ends every connection of the server processes to `db`.
async fn terminate_connections(db: &TestDatabase) {
    let mut admin = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = $1 and pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .execute(&mut admin)
    .await
    .expect("terminate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_makes_the_replica_not_ready_until_it_takes_writes_again() {
    if postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    assert_eq!(readyz(&server).await, 200);
    let body = write_for(&server, "alice", "completeOnboarding").await;
    assert!(body.get("errors").is_none(), "{body}");

    // A failover to a read-only server: new connections are read-only.
    let name = db.name().to_owned();
    db.execute(&format!(
        "alter database \"{name}\" set default_transaction_read_only = on"
    ))
    .await
    .expect("read-only");
    terminate_connections(&db).await;
    let mut not_ready = false;
    for _ in 0..20 {
        let body = write_for(&server, "alice", "completeOnboarding").await;
        if let Some(error) = body["errors"].get(0) {
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains("retry shortly"), "{body}");
        }
        if readyz(&server).await == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_ready, "/readyz says 503 while the server is read-only");

    // The primary is back: the pool's read-only connections are dropped.
    // From the server's own database: this one's sessions are read-only.
    let server_url = postgres_server_url().expect("a Postgres server");
    let mut admin = PgConnection::connect(&server_url).await.expect("connect");
    admin
        .execute(format!("alter database \"{name}\" reset default_transaction_read_only").as_str())
        .await
        .expect("writable");
    let started = Instant::now();
    let mut writes_ok = 0;
    while started.elapsed() < Duration::from_secs(10) && writes_ok < 20 {
        let body = write_for(&server, "alice", "completeOnboarding").await;
        if body.get("errors").is_none() {
            writes_ok += 1;
        } else {
            writes_ok = 0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        writes_ok,
        20,
        "writes succeed again, in {:?}",
        started.elapsed()
    );
    assert_eq!(readyz(&server).await, 200);
}

#[test]
fn database_settings_out_of_range_are_refused_naming_the_range() {
    for (setting, value, range) in [
        ("DATABASE_LOCK_TIMEOUT", "60s", "25s"),
        ("DATABASE_STATEMENT_TIMEOUT", "0s", "1ms"),
        ("DATABASE_MAX_CONNECTIONS", "100000", "1000"),
    ] {
        let output = crate::helpers::command(&["serve"], &[(setting, value)])
            .output()
            .expect("the binary runs");
        assert!(!output.status.success());
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains(range), "{setting}={value}: {said}");
    }
}

/// A TCP proxy in front of the Postgres server that can be told to accept
/// connections, answer the TLS request with a byte Postgres never sends,
/// and close them, as a balancer in front of a server failing over may.
struct FailoverProxy {
    port: u16,
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Notify>,
}

impl FailoverProxy {
    async fn start(target: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("an address").port();
        let closing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = std::sync::Arc::new(tokio::sync::Notify::new());
        let (closing_, cut_) = (closing.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if closing_.load(Ordering::Relaxed) {
                    // A byte no Postgres sends first, then the end.
                    use tokio::io::AsyncWriteExt;
                    let _ = client.write_all(b"X").await;
                    drop(client);
                    continue;
                }
                let (target, cut) = (target.clone(), cut_.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { port, closing, cut }
    }

    /// From now on, accept and close; cut the connections open.
    fn fail(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cut.notify_waiters();
    }

    fn recover(&self) {
        self.closing
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_closes_every_connection_answers_retry_shortly_then_recovers() {
    if postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().expect("a Postgres URL");
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = FailoverProxy::start(target.clone()).await;
    let through_proxy = db
        .url
        .replacen(&target, &format!("127.0.0.1:{}", proxy.port), 1);
    let server = ServerProcess::start(&through_proxy, &[]).await;
    let body = write_for(&server, "alice", "completeOnboarding").await;
    assert!(body.get("errors").is_none(), "{body}");

    proxy.fail();
    for _ in 0..5 {
        let body = write_for(&server, "alice", "completeOnboarding").await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("retry shortly"), "{body}");
    }
    assert_eq!(readyz(&server).await, 503);

    proxy.recover();
    let started = Instant::now();
    loop {
        let body = write_for(&server, "alice", "completeOnboarding").await;
        if body.get("errors").is_none() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(readyz(&server).await, 200);
}

/// Debian's PgBouncer with its stock settings, in `mode` with `pool_size`
/// server connections, in front of the test's Postgres server; stopped when
/// dropped.
struct PgBouncer {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl PgBouncer {
    fn start(target_host: &str, target_port: u16, mode: &str, pool_size: u32) -> Self {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("PgBouncer is installed (tests/run installs Debian's pgbouncer)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("pgbouncer-{port}"));
        std::fs::create_dir_all(&dir).expect("a directory");
        let users = dir.join("users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("users");
        let config = dir.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={target_host} port={target_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n\
                 auth_file = {}\npool_mode = {mode}\ndefault_pool_size = {pool_size}\n\
                 max_client_conn = 200\nunix_socket_dir =\n",
                users.display()
            ),
        )
        .expect("a configuration");
        let mut command = std::process::Command::new(binary);
        // PgBouncer refuses to run as root: it is told to become postgres.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
        if root {
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("PgBouncer starts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, dir, child }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_in_session_mode_with_its_stock_settings_serves_every_request() {
    if postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().expect("a Postgres URL");
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let bouncer = PgBouncer::start(options.get_host(), options.get_port(), "session", 40);
    let through = db
        .url
        .replacen(&target, &format!("127.0.0.1:{}", bouncer.port), 1);
    let server = ServerProcess::start(&through, &[]).await;
    let mut clients = JoinSet::new();
    for client in 0..8 {
        let url = server.graphql_url();
        clients.spawn(async move {
            let mut failures = Vec::new();
            for round in 0..25 {
                let user = format!("bounced-{}", (client + round) % 5);
                let user_token = token(&user, &[]);
                for query in [
                    "mutation { completeOnboarding(step: 1) { id } }",
                    "{ onboardingState { id } flowState(flow: \"onboarding\") { revision } }",
                ] {
                    let body: Value = post_graphql(&url, Some(&user_token), query, json!({}))
                        .await
                        .json()
                        .await
                        .expect("JSON");
                    if body.get("errors").is_some() {
                        failures.push(body);
                    }
                }
            }
            failures
        });
    }
    let failures: Vec<Value> = clients.join_all().await.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(readyz(&server).await, 200);
}

/// `clients` users each sending a mix of every kind of request `rounds`
/// times through `server`: original-API writes and reads, flow writes with
/// and without idempotency keys (one of them retried), flow reads, events,
/// an export and an erasure; the bodies that carried errors.
async fn mixed_load(server: &ServerProcess, clients: usize, rounds: usize) -> Vec<Value> {
    let admin = token(ADMIN, &["admin"]);
    let publish = "mutation { publishFlow(input: { key: \"pooled\", title: \"Pooled\", \
         steps: [{ key: \"a\", title: \"A\" }, { key: \"b\", title: \"B\" }] }) { version } }";
    let published: Value = post_graphql(&server.graphql_url(), Some(&admin), publish, json!({}))
        .await
        .json()
        .await
        .expect("JSON");
    assert!(published.get("errors").is_none(), "{published}");
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let url = server.graphql_url();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            let user = format!("pooled-{client}");
            let user_token = token(&user, &[]);
            for round in 0..rounds {
                let step = if round % 2 == 0 { "a" } else { "b" };
                let key = format!("key-{round}");
                let requests = [
                    "mutation { completeOnboarding(step: 2) { id revision } }".to_owned(),
                    "{ onboardingState { id currentStep } flowStates { flow revision } }"
                        .to_owned(),
                    format!(
                        "mutation {{ completeStep(flow: \"pooled\", step: \"{step}\", \
                         idempotencyKey: \"{key}\") {{ revision }} }}"
                    ),
                    format!(
                        "mutation {{ completeStep(flow: \"pooled\", step: \"{step}\", \
                         idempotencyKey: \"{key}\") {{ revision }} }}"
                    ),
                    "mutation { setOnboardingStep(step: 3) { id } }".to_owned(),
                    "{ flowState(flow: \"pooled\") { revision doneSteps } \
                     flowEvents(first: 5) { edges { node { type } } } }"
                        .to_owned(),
                    "{ exportUserData { flowStates { flow } } }".to_owned(),
                ];
                for query in &requests {
                    let body: Value = post_graphql(&url, Some(&user_token), query, json!({}))
                        .await
                        .json()
                        .await
                        .expect("JSON");
                    if body.get("errors").is_some() {
                        failures.push(body);
                    }
                }
            }
            let erase =
                format!("mutation {{ deleteUserData(userId: \"{user}\") {{ flowStates }} }}");
            let admin = token(ADMIN, &["admin"]);
            let body: Value = post_graphql(&url, Some(&admin), &erase, json!({}))
                .await
                .json()
                .await
                .expect("JSON");
            if body.get("errors").is_some() {
                failures.push(body);
            }
            failures
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_in_transaction_mode_serves_every_kind_of_request() {
    if postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().expect("a Postgres URL");
    let target = format!("{}:{}", options.get_host(), options.get_port());
    // Fewer server connections than the replica's, so that its connections
    // share servers from one transaction to the next.
    let bouncer = PgBouncer::start(options.get_host(), options.get_port(), "transaction", 3);
    let through = db
        .url
        .replacen(&target, &format!("127.0.0.1:{}", bouncer.port), 1);
    let pooled = [("DATABASE_POOLER", "transaction")];

    // Migrations cannot run through it: the server refuses, naming the fix.
    let refused = command(&["serve"], &[("DATABASE_URL", &through), pooled[0]])
        .env(
            "JWT_SECRET",
            "a-secret-that-is-long-enough-for-hs256-tokens",
        )
        .output()
        .expect("the binary runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("onboarding migrate") && said.contains("DATABASE_URL naming Postgres itself"),
        "{said}"
    );
    let migrated = command(&["migrate"], &[("DATABASE_URL", &db.url)])
        .output()
        .expect("the binary runs");
    assert!(migrated.status.success(), "{migrated:?}");

    let server = ServerProcess::start(&through, &pooled).await;
    let failures = mixed_load(&server, 8, 6).await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(readyz(&server).await, 200);
    let status = command(
        &["migrate", "--check"],
        &[("DATABASE_URL", &through), pooled[0]],
    )
    .output()
    .expect("the binary runs");
    assert!(status.status.success(), "{status:?}");
}
