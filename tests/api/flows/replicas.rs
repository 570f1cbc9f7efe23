//! Servers side by side on one database, and retries racing each other: a
//! replica that meets a version published on another one reads the flows
//! again instead of failing; concurrent retries of one idempotency key all
//! get the first answer; a read does not wait for a write lock.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio::task::JoinSet;

use super::{ADMIN, STATE, Who, events_of, operation, publish_with, state_of, write_ok};
use crate::helpers::{
    Backend, ServerProcess, TestApp, TestDatabase, error_code, post_graphql, spawn_app, token,
};
use crate::on_both_backends;

/// One request to a server process as `token`; the body.
async fn ask(server: &ServerProcess, token: &str, query: &str, variables: Value) -> Value {
    let response = post_graphql(&server.graphql_url(), Some(token), query, variables).await;
    response.json().await.expect("a JSON body")
}

fn publish_query(key: &str, steps: &[&str], policy: &str) -> (String, Value) {
    let steps: Vec<Value> = steps
        .iter()
        .map(|step| json!({ "key": step, "title": format!("Step {step}") }))
        .collect();
    let variables = json!({ "input": {
        "key": key, "title": "Replicated", "steps": steps, "reonboarding": policy
    } });
    let query = "mutation($input: PublishFlowInput!) { publishFlow(input: $input) { version } }";
    (query.to_owned(), variables)
}

async fn a_replica_serves_a_state_on_a_version_another_replica_just_published(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let first = ServerProcess::start(&db.url, &[]).await;
    let second = ServerProcess::start(&db.url, &[]).await;
    let admin = token(ADMIN, &["admin"]);
    let user = token("replicated-user", &[]);

    let mut steps = vec!["a".to_owned()];
    for version in 1..=3 {
        steps.push(format!("s{version}"));
        let keys: Vec<&str> = steps.iter().map(String::as_str).collect();
        // The second replica reads the flows just before the publish.
        let read = "{ flowState(flow: \"rep0\") { version } }";
        if version > 1 {
            let body = ask(&second, &user, read, json!({})).await;
            assert_eq!(body["data"]["flowState"]["version"], version - 1, "{body}");
        }
        let (query, variables) = publish_query("rep0", &keys, "RESTART_ALL");
        let published = ask(&first, &admin, &query, variables).await;
        assert_eq!(
            published["data"]["publishFlow"]["version"], version,
            "{published}"
        );
        let complete = "mutation { completeStep(flow: \"rep0\", step: \"a\") { version } }";
        let body = ask(&first, &user, complete, json!({})).await;
        assert_eq!(body["data"]["completeStep"]["version"], version, "{body}");

        for query in [
            format!("{{ flowState(flow: \"rep0\") {{ {STATE} }} }}"),
            format!("{{ flowStates {{ {STATE} }} }}"),
            format!("mutation {{ completeStep(flow: \"rep0\", step: \"a\") {{ {STATE} }} }}"),
            format!("mutation {{ restartFlow(flow: \"rep0\") {{ {STATE} }} }}"),
        ] {
            let started = Instant::now();
            let body = ask(&second, &user, &query, json!({})).await;
            assert!(
                body.get("errors").is_none(),
                "the other replica serves version {version} at once ({}): {body}",
                error_code(&body)
            );
            assert!(
                body.to_string().contains(&format!("\"s{version}\"")),
                "{body}"
            );
            assert!(started.elapsed() < Duration::from_millis(900));
        }
    }
    let flow = ask(
        &second,
        &user,
        "{ flow(key: \"rep0\") { version } }",
        json!({}),
    )
    .await;
    assert_eq!(flow["data"]["flow"]["version"], 3, "{flow}");

    // A flow the other replica has never heard of is looked up again.
    let (query, variables) = publish_query("brand-new", &["a"], "KEEP");
    ask(&first, &admin, &query, variables).await;
    let read = "{ flowState(flow: \"brand-new\") { version status } }";
    let body = ask(&second, &user, read, json!({})).await;
    assert_eq!(body["data"]["flowState"]["version"], 1, "{body}");
}

async fn concurrent_retries_of_one_idempotency_key_all_get_the_first_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_with(&app, "retried", &["a", "b"], "KEEP").await;
    for round in 0..3 {
        let user = format!("retrier-{round}");
        let args = json!({
            "flow": "retried", "step": "a", "data": { "n": round }, "idempotencyKey": "k",
        });
        let query = operation("mutation", "completeStep", &args, STATE);
        let bodies = send_all(&app, &user, vec![(query, args); 20]).await;
        for body in &bodies {
            assert!(
                body.get("errors").is_none(),
                "every retry succeeds ({}): {body}",
                error_code(body)
            );
            assert_eq!(body, &bodies[0], "every retry gets the first answer");
        }
        assert_eq!(bodies[0]["data"]["completeStep"]["revision"], 1);
        assert_eq!(events_of(&app, &user, Some("retried")).await.len(), 1);
    }
}

async fn one_key_sent_for_two_flows_at_once_applies_one_and_refuses_the_other(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_with(&app, "left", &["a", "b"], "KEEP").await;
    publish_with(&app, "right", &["a", "b"], "KEEP").await;
    for round in 0..5 {
        let user = format!("two-flows-{round}");
        let requests = ["left", "right", "left", "right"]
            .into_iter()
            .map(|flow| {
                let args = json!({ "flow": flow, "step": "a", "idempotencyKey": "shared" });
                (operation("mutation", "completeStep", &args, "flow"), args)
            })
            .collect();
        let bodies = send_all(&app, &user, requests).await;
        let applied: Vec<&Value> = bodies
            .iter()
            .filter(|body| body.get("errors").is_none())
            .collect();
        for body in bodies.iter().filter(|body| body.get("errors").is_some()) {
            assert_eq!(error_code(body), "CONFLICT", "{body}");
        }
        assert!(!applied.is_empty(), "{bodies:?}");
        let flow = &applied[0]["data"]["completeStep"]["flow"];
        assert!(
            applied
                .iter()
                .all(|body| &body["data"]["completeStep"]["flow"] == flow)
        );
        assert_eq!(
            events_of(&app, &user, None).await.len(),
            1,
            "one write applied"
        );
    }
}

/// Sends every request at once as `user`; the bodies, in order.
async fn send_all(app: &TestApp, user: &str, requests: Vec<(String, Value)>) -> Vec<Value> {
    let mut tasks = JoinSet::new();
    for (index, (query, variables)) in requests.into_iter().enumerate() {
        let (url, token) = (app.graphql_url(), token(user, &[]));
        tasks.spawn(async move {
            let response = post_graphql(&url, Some(&token), &query, variables).await;
            (index, response.json::<Value>().await.expect("JSON"))
        });
    }
    let mut bodies = tasks.join_all().await;
    bodies.sort_by_key(|(index, _)| *index);
    bodies.into_iter().map(|(_, body)| body).collect()
}

/// Holds a write lock on the user's row (Postgres) or the database (SQLite)
/// from a connection of its own, for `hold`.
async fn hold_a_write_lock(backend: Backend, url: &str, user: &str, hold: Duration) {
    match backend {
        Backend::Sqlite => {
            let mut connection = SqliteConnection::connect(url).await.expect("open");
            connection.execute("begin immediate").await.expect("lock");
            connection
                .execute("update flow_state set revision = revision where 0")
                .await
                .expect("a write");
            tokio::time::sleep(hold).await;
            connection.execute("rollback").await.expect("unlock");
        }
        Backend::Postgres => {
            let mut connection = PgConnection::connect(url).await.expect("open");
            connection.execute("begin").await.expect("begin");
            sqlx::query("select 1 from flow_state where user_id = $1 for update")
                .bind(user)
                .execute(&mut connection)
                .await
                .expect("lock the row");
            tokio::time::sleep(hold).await;
            connection.execute("rollback").await.expect("unlock");
        }
    }
}

async fn reading_a_state_kept_on_an_older_version_does_not_wait_for_a_write_lock(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = "kept-reader";
    publish_with(&app, "keepr", &["a", "b"], "KEEP").await;
    write_ok(
        &app,
        Who::User(user),
        "completeStep",
        json!({ "flow": "keepr", "step": "a" }),
    )
    .await;
    publish_with(&app, "keepr", &["a", "b", "c"], "NEW_STEPS_ONLY").await;

    let hold = Duration::from_millis(2500);
    let (backend, url) = (app.db.backend, app.db.url.clone());
    let lock = tokio::spawn(async move { hold_a_write_lock(backend, &url, user, hold).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let state = state_of(&app, user, "keepr").await;
    let took = started.elapsed();
    lock.await.expect("the lock holder ends");
    assert_eq!(
        (&state["version"], &state["revision"]),
        (&json!(2), &json!(1)),
        "the policy shows on read, and nothing is written: {state}"
    );
    assert!(
        took < Duration::from_millis(1000),
        "the read answered in {took:?}, while a write lock was held"
    );
    let again = state_of(&app, user, "keepr").await;
    assert_eq!(again["revision"], 1, "reads wrote nothing: {again}");
    assert_eq!(events_of(&app, user, Some("keepr")).await.len(), 1);
}

on_both_backends!(
    a_replica_serves_a_state_on_a_version_another_replica_just_published,
    concurrent_retries_of_one_idempotency_key_all_get_the_first_answer,
    one_key_sent_for_two_flows_at_once_applies_one_and_refuses_the_other,
    reading_a_state_kept_on_an_older_version_does_not_wait_for_a_write_lock,
);
