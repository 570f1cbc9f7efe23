//! What operators rely on: health checks, logs, request ids, shutdown and
//! durability, seen from the real binary.

use serde_json::{Value, json};

use crate::helpers::{Backend, ServerProcess, TestDatabase, post_graphql, token};
use crate::on_both_backends;

async fn post(url: &str, user: &str, query: &str) -> reqwest::Response {
    post_graphql(url, Some(&token(user, &[])), query, json!({})).await
}

async fn status_of(url: String) -> u16 {
    reqwest::get(url)
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

async fn healthz_and_readyz_answer_200_while_all_is_well(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    assert_eq!(status_of(format!("{}/healthz", server.address)).await, 200);
    assert_eq!(status_of(format!("{}/readyz", server.address)).await, 200);
}

async fn an_acknowledged_mutation_survives_sigkill(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    let mutation = "mutation { completeOnboarding(step: 6) { isCompleted currentStep completedAt updatedAt } }";
    let written: Value = post(&server.graphql_url(), "alice", mutation)
        .await
        .json()
        .await
        .expect("JSON");
    assert!(written.get("errors").is_none(), "{written}");

    server.kill();
    let restarted = ServerProcess::start(&db.url, &[]).await;

    let query = "{ onboardingState { isCompleted currentStep completedAt updatedAt } }";
    let read: Value = post(&restarted.graphql_url(), "alice", query)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        read["data"]["onboardingState"],
        written["data"]["completeOnboarding"]
    );
}

async fn the_server_logs_state_creation_and_completion_with_the_user_id(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;

    post(&server.graphql_url(), "alice", "{ onboardingState { id } }").await;
    post(&server.graphql_url(), "alice", "{ onboardingState { id } }").await;
    post(
        &server.graphql_url(),
        "bob",
        "mutation { completeOnboarding(step: 2) { id } }",
    )
    .await;

    // Lines come in order: once bob's completion is read, so is the rest.
    let completed = server.wait_for_log("onboarding completed").await;
    let created = server.all_logged("onboarding state created");
    let users: Vec<&Value> = created.iter().map(|line| &line["user_id"]).collect();
    assert_eq!(
        users,
        [&json!("alice"), &json!("bob")],
        "one line per created state"
    );
    assert!(created.iter().all(|line| line["level"] == "INFO"));
    assert_eq!(completed["user_id"], "bob");
    assert_eq!(completed["level"], "INFO");
}

async fn an_internal_error_shows_only_a_request_id_that_the_log_also_carries(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    db.execute("drop table onboarding_state")
        .await
        .expect("drop the table");

    let response = post(&server.graphql_url(), "alice", "{ onboardingState { id } }").await;
    let header_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let text = response.text().await.expect("a body");

    let body: Value = serde_json::from_str(&text).expect("JSON");
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL_SERVER_ERROR");
    assert_eq!(error["extensions"]["requestId"], header_id.as_str());
    for internal in [
        "onboarding_state",
        "select",
        "relation",
        "table",
        "sqlx",
        ".rs",
        "/tmp",
    ] {
        assert!(
            !text.to_lowercase().contains(internal),
            "the body leaks `{internal}`: {text}"
        );
    }
    server.wait_for_log("request failed").await;
    let logged = server.all_logged("request failed");
    assert!(
        logged
            .iter()
            .any(|line| line["request_id"] == header_id.as_str()),
        "a log line carries {header_id}: {logged:?}"
    );
}

async fn sigterm_stops_the_server_cleanly(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    post(&server.graphql_url(), "alice", "{ onboardingState { id } }").await;

    let status = server.terminate().await;

    assert!(status.success(), "exit status {status}");
}

async fn sigterm_lets_an_in_flight_request_finish_before_the_server_exits(backend: Backend) {
    use std::io::{Read, Write};
    let db = TestDatabase::create(backend).await;
    // tower_http logs the start of each request at debug.
    let server = ServerProcess::start(
        &db.url,
        &[("RUST_LOG", "info,onboarding::http::access_log=debug")],
    )
    .await;
    let body = r#"{"query":"mutation { setOnboardingStep(step: 4) { currentStep } }"}"#;
    let (sent_first, sent_after_sigterm) = body.split_at(body.len() / 2);
    let address = server.address.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        token("alice", &[]),
        body.len()
    );
    stream
        .write_all(format!("{head}{sent_first}").as_bytes())
        .expect("send the start of the request");

    // In flight: the server has the head and waits for the rest of the body.
    // (A connection whose request has not started yet is idle, and closing
    // idle connections is what a graceful shutdown should do.)
    server.wait_for_log("started processing request").await;
    server.send_sigterm();
    server
        .wait_for_log("shutting down: finishing in-flight requests")
        .await;
    stream
        .write_all(sent_after_sigterm.as_bytes())
        .expect("send the rest of the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the whole response");

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"data":{"setOnboardingStep":{"currentStep":4}}}"#));
    assert!(server.exit_status().await.success());
    let restarted = ServerProcess::start(&db.url, &[]).await;
    let read: Value = post(
        &restarted.graphql_url(),
        "alice",
        "{ onboardingState { currentStep } }",
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(read["data"]["onboardingState"]["currentStep"], 4);
}

on_both_backends!(
    healthz_and_readyz_answer_200_while_all_is_well,
    sigterm_lets_an_in_flight_request_finish_before_the_server_exits,
    an_acknowledged_mutation_survives_sigkill,
    the_server_logs_state_creation_and_completion_with_the_user_id,
    an_internal_error_shows_only_a_request_id_that_the_log_also_carries,
    sigterm_stops_the_server_cleanly,
);

/// Postgres can be taken away from a running server; SQLite is a file in the
/// server's own process and has no such outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_postgres_is_down_and_200_once_it_is_back() {
    use sqlx::{Connection, Executor, PgConnection};
    let Some(server_url) = crate::helpers::postgres_server_url() else {
        return;
    };
    let db = TestDatabase::create(Backend::Postgres).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    let readyz = format!("{}/readyz", server.address);
    assert_eq!(status_of(readyz.clone()).await, 200);

    let mut admin = PgConnection::connect(&server_url)
        .await
        .expect("the Postgres server");
    let name = db.name();
    admin
        .execute(format!("alter database \"{name}\" allow_connections false").as_str())
        .await
        .expect("close the database");
    admin
        .execute(
            format!(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
            )
            .as_str(),
        )
        .await
        .expect("drop its connections");

    assert_eq!(status_of(readyz.clone()).await, 503);
    let body: Value = post(&server.graphql_url(), "alice", "{ onboardingState { id } }")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "INTERNAL_SERVER_ERROR"
    );
    assert!(body["errors"][0]["extensions"]["requestId"].is_string());

    admin
        .execute(format!("alter database \"{name}\" allow_connections true").as_str())
        .await
        .expect("reopen the database");
    assert_eq!(status_of(readyz).await, 200);
    let body: Value = post(&server.graphql_url(), "alice", "{ onboardingState { id } }")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["data"]["onboardingState"]["id"], "alice");
}

/// Another process holding SQLite's write lock past the busy timeout is an
/// outage to retry, not a fault; the write goes through once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_another_process_holds_the_sqlite_lock_is_told_to_retry() {
    use sqlx::{Connection, Executor, SqliteConnection};
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    let mutation = "mutation { setOnboardingStep(step: 2) { currentStep } }";
    let mut other = SqliteConnection::connect(&app.db.url)
        .await
        .expect("open SQLite");
    other
        .execute("begin immediate")
        .await
        .expect("take the write lock");

    let body = app.graphql_as(Some("alice"), mutation, json!({})).await;
    let error = &body["errors"][0];
    assert_eq!(
        error["extensions"]["code"], "INTERNAL_SERVER_ERROR",
        "{body}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("retry"),
        "{body}"
    );
    assert!(error["extensions"]["requestId"].is_string(), "{body}");

    other.execute("rollback").await.expect("let go of the lock");
    let body = app.graphql_as(Some("alice"), mutation, json!({})).await;
    assert_eq!(
        body["data"]["setOnboardingStep"]["currentStep"], 2,
        "{body}"
    );
}

/// A Postgres that turns read-only under the server (a failover, or a pooler
/// pointed at a replica) is an outage to retry, not a fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_postgres_turned_read_only_is_told_to_retry() {
    use sqlx::{Connection, Executor, PgConnection};
    let Some(server_url) = crate::helpers::postgres_server_url() else {
        return;
    };
    let app = crate::helpers::spawn_app(Backend::Postgres).await;
    let name = app.db.name().to_owned();
    let mut admin = PgConnection::connect(&server_url)
        .await
        .expect("the Postgres server");
    // New sessions pick the setting up; the pool checks each connection
    // before handing it out and replaces the ones closed here.
    let set_read_only = async |admin: &mut PgConnection, on: bool| {
        for statement in [
            format!("alter database \"{name}\" set default_transaction_read_only = {on}"),
            format!(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
            ),
        ] {
            admin
                .execute(statement.as_str())
                .await
                .expect("alter the database");
        }
    };
    let mutation = "mutation { setOnboardingStep(step: 2) { currentStep } }";

    set_read_only(&mut admin, true).await;
    let body = app.graphql_as(Some("alice"), mutation, json!({})).await;
    assert_eq!(
        body["errors"][0]["message"], "The database is unavailable; retry shortly.",
        "{body}"
    );

    // As the message says, a retry succeeds once the database is writable
    // again; connections the pool held when they were cut fail one
    // statement each before they are replaced.
    set_read_only(&mut admin, false).await;
    let mut body = json!(null);
    for _ in 0..10 {
        body = app.graphql_as(Some("alice"), mutation, json!({})).await;
        if body["errors"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        body["data"]["setOnboardingStep"]["currentStep"], 2,
        "{body}"
    );
}

/// 200 concurrent writes to 50 users as an admin: every one must succeed;
/// the states they acknowledged.
async fn write_burst(
    server: &ServerProcess,
    admin: &str,
    writes: usize,
    users: usize,
) -> Vec<Value> {
    let url = server.graphql_url();
    let writes = (0..writes).map(|write| {
        let (url, admin) = (url.clone(), admin.to_owned());
        tokio::spawn(async move {
            let user = format!("user-{}", write % users);
            let mutation = "mutation($step: Int!, $user: String) { setOnboardingStep(step: $step, userId: $user) { userId currentStep updatedAt } }";
            let variables = json!({ "step": write, "user": user });
            let body: Value = post_graphql(&url, Some(&admin), mutation, variables)
                .await
                .json()
                .await
                .expect("JSON");
            body["data"]["setOnboardingStep"].clone()
        })
    });
    let mut acknowledged = Vec::new();
    for write in futures_util::future::join_all(writes).await {
        let state = write.expect("a writer task");
        assert!(state.is_object(), "every write succeeds: {state}");
        acknowledged.push(state);
    }
    acknowledged
}

/// SQLite commits the writes that arrive together in one transaction, one
/// fsync for all, and answers none before that commit: every acknowledged
/// write survives a SIGKILL the moment the last answer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sqlite_writes_share_commits_and_every_acknowledged_one_survives_sigkill() {
    const WRITES: usize = 200;
    const USERS: usize = 50;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let admin = token("the-admin", &["admin"]);
    let server = ServerProcess::start(&db.url, &[]).await;
    let acknowledged = write_burst(&server, &admin, WRITES, USERS).await;
    server.kill();

    let restarted =
        ServerProcess::start(&db.url, &[("RUST_LOG", "info,onboarding::db=debug")]).await;
    for user in 0..USERS {
        let user = format!("user-{user}");
        let last = acknowledged
            .iter()
            .filter(|state| state["userId"] == user.as_str())
            .max_by_key(|state| state["updatedAt"].as_str().unwrap_or_default().to_owned())
            .expect("writes for every user");
        let query = "query($user: String) { onboardingState(userId: $user) { userId currentStep updatedAt } }";
        let body: Value = post_graphql(
            &restarted.graphql_url(),
            Some(&admin),
            query,
            json!({ "user": user }),
        )
        .await
        .json()
        .await
        .expect("JSON");
        assert_eq!(
            &body["data"]["onboardingState"], last,
            "the last acknowledged write to {user}"
        );
    }

    // Each commit is logged at debug with the writes it carried; log lines
    // reach stderr a few milliseconds after they are written.
    write_burst(&restarted, &admin, WRITES, USERS).await;
    let grouped = |committed: &[Value]| -> u64 {
        committed
            .iter()
            .filter_map(|line| line["writes"].as_u64())
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut committed = restarted.all_logged("group committed");
    while grouped(&committed) < WRITES as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        committed = restarted.all_logged("group committed");
    }
    let commits = committed.len();
    assert_eq!(
        grouped(&committed),
        WRITES as u64,
        "every write was in a logged commit"
    );
    assert!(
        commits < WRITES / 2,
        "{WRITES} concurrent writes took {commits} commits"
    );
}
