//! Stopping and starting as a replica behind a load balancer: SIGTERM first
//! turns `/readyz` 503 while requests are still served, then the server
//! stops; `serve` waits for a database that is not up yet, saying why.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    Backend, SECRET, ServerProcess, TestDatabase, command, post_graphql, postgres_server_url, token,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_for_the_drain_time_while_requests_are_still_served() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&db.url, &[("SHUTDOWN_DRAIN", "1500ms")]).await;
    let readyz = format!("{}/readyz", server.address);
    assert_eq!(reqwest::get(&readyz).await.expect("up").status(), 200);

    let stopping = Instant::now();
    server.send_sigterm();
    let mut drained = false;
    while stopping.elapsed() < Duration::from_millis(1200) {
        let ready = reqwest::get(&readyz)
            .await
            .expect("still accepting")
            .status();
        if ready == 503 {
            drained = true;
            let body = post_graphql(
                &server.graphql_url(),
                Some(&token("draining-user", &[])),
                "{ onboardingState { id } }",
                json!({}),
            )
            .await;
            assert_eq!(
                body.status(),
                200,
                "requests are still served while draining"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "/readyz answered 503 after SIGTERM");
    let status = server.exit_status().await;
    assert!(status.success(), "{status}");
    assert!(
        stopping.elapsed() >= Duration::from_millis(1500),
        "the server stopped after the drain time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_a_database_that_is_not_up_and_says_why() {
    if postgres_server_url().is_none() {
        return;
    }
    // A port nobody listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut serve = command(
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_WAIT", "2s"),
            ("JWT_SECRET", SECRET),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "json"),
        ],
    );
    let started = Instant::now();
    let output = tokio::task::block_in_place(|| serve.output().expect("the binary runs"));
    let took = started.elapsed();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    let retries = said
        .matches("the database does not accept connections yet")
        .count();
    assert!(retries >= 3, "it retried, saying why: {said}");
    assert!(said.contains("refused"), "{said}");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&took),
        "it gave up after DATABASE_WAIT, in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_logs_the_version_and_the_database_without_credentials() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    let line = server.wait_for_log("database connected").await;
    assert_eq!(line["version"], env!("CARGO_PKG_VERSION"), "{line}");
    let database = line["database"].as_str().unwrap_or_default();
    assert!(database.ends_with("onboarding.db"), "{line}");
}
