//! Writes of many users at once, which the server may write together: each
//! is decided on its own state, and one that fails (a stale revision, a
//! step the flow lacks, a row another transaction holds) fails alone.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::task::JoinSet;

use super::{STATE, Who, declaration, events_of, operation, publish_ok, state_of, write_ok};
use crate::helpers::{Backend, TestApp, error_code, spawn_app, spawn_app_with};
use crate::on_both_backends;

const USERS: usize = 48;

fn user(index: usize) -> String {
    format!("grouped-{index}")
}

/// `completeStep` of `step` for each user at once, with the arguments
/// `extra` gives a user's write; the bodies in the users' order.
async fn complete_all_at_once(
    app: &TestApp,
    users: &[String],
    step_of: impl Fn(usize) -> &'static str,
    extra: impl Fn(usize) -> Value,
) -> Vec<Value> {
    let mut tasks = JoinSet::new();
    for (index, user) in users.iter().enumerate() {
        let mut args = json!({ "flow": "together", "step": step_of(index) });
        if let (Some(args), Value::Object(extra)) = (args.as_object_mut(), extra(index)) {
            args.extend(extra);
        }
        let query = operation("mutation", "completeStep", &args, STATE);
        let request = app
            .client
            .post(app.graphql_url())
            .bearer_auth(Who::User(user).token().expect("a token"))
            .json(&json!({ "query": query, "variables": args }));
        tasks.spawn(async move {
            let response = request.send().await.expect("the server answers");
            (index, response.json::<Value>().await.expect("JSON"))
        });
    }
    let mut bodies = tasks.join_all().await;
    bodies.sort_by_key(|(index, _)| *index);
    bodies.into_iter().map(|(_, body)| body).collect()
}

async fn writes_of_many_users_at_once_fail_only_where_their_own_request_is_wrong(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("together", &["a", "b", "c"])).await;
    let users: Vec<String> = (0..USERS).map(user).collect();
    for user in &users {
        write_ok(
            &app,
            Who::User(user),
            "completeStep",
            json!({ "flow": "together", "step": "a" }),
        )
        .await;
    }
    // Every fifth user sends a stale revision, every seventh a step the flow
    // does not have; the others are right.
    let stale = |index: usize| index.is_multiple_of(5);
    let unknown = |index: usize| index % 7 == 3;
    let bodies = complete_all_at_once(
        &app,
        &users,
        |index| if unknown(index) { "nope" } else { "b" },
        |index| {
            if stale(index) {
                json!({ "expectedRevision": 0 })
            } else {
                json!({})
            }
        },
    )
    .await;

    for (index, (user, body)) in users.iter().zip(&bodies).enumerate() {
        let state = state_of(&app, user, "together").await;
        let events = events_of(&app, user, Some("together")).await;
        if stale(index) || unknown(index) {
            let expected = if stale(index) {
                "CONFLICT"
            } else {
                "BAD_USER_INPUT"
            };
            assert_eq!(error_code(body), expected, "{user}: {body}");
            assert_eq!(
                state["revision"],
                json!(1),
                "{user}: nothing written: {state}"
            );
            assert_eq!(events.len(), 1, "{user}: no event added: {events:?}");
        } else {
            let written = &body["data"]["completeStep"];
            assert!(body.get("errors").is_none(), "{user}: {body}");
            assert_eq!(
                written["userId"],
                json!(user),
                "{user}: its own state: {body}"
            );
            assert_eq!(written["revision"], json!(2), "{user}: {body}");
            assert_eq!(state["revision"], json!(2), "{user}: {state}");
            assert_eq!(state["doneSteps"], json!(2), "{user}: {state}");
            assert_eq!(events.len(), 2, "{user}: one event added: {events:?}");
            assert_eq!(events[0]["step"], json!("b"), "{user}: {events:?}");
        }
    }
}

async fn first_writes_of_many_new_users_at_once_each_create_their_own_state(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("together", &["a", "b"])).await;
    let users: Vec<String> = (0..USERS).map(|index| format!("new-{index}")).collect();
    let key = |index: usize| json!({ "idempotencyKey": format!("first-{}", index % 3) });
    let bodies = complete_all_at_once(&app, &users, |_| "a", key).await;
    for (user, body) in users.iter().zip(&bodies) {
        assert!(body.get("errors").is_none(), "{user}: {body}");
        let state = &body["data"]["completeStep"];
        assert_eq!(
            (&state["userId"], &state["revision"], &state["status"]),
            (&json!(user), &json!(1), &json!("IN_PROGRESS")),
            "{user}: {body}"
        );
    }
    // The same keys again: each user's kept answer, not another user's.
    let again = complete_all_at_once(&app, &users, |_| "a", key).await;
    assert_eq!(again, bodies, "retries get the first answers");
    for user in &users {
        let events = events_of(&app, user, Some("together")).await;
        assert_eq!(events.len(), 1, "{user}: one step, once: {events:?}");
    }
}

on_both_backends!(
    writes_of_many_users_at_once_fail_only_where_their_own_request_is_wrong,
    first_writes_of_many_new_users_at_once_each_create_their_own_state,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_states_locked_elsewhere_fail_only_their_own_writes() {
    if crate::helpers::postgres_server_url().is_none() {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.database.database_lock_timeout = Duration::from_millis(700);
    })
    .await;
    publish_ok(&app, declaration("together", &["a", "b", "c"])).await;
    let users: Vec<String> = (0..USERS).map(user).collect();
    for user in &users {
        write_ok(
            &app,
            Who::User(user),
            "completeStep",
            json!({ "flow": "together", "step": "a" }),
        )
        .await;
    }
    // Every sixth user's state held by another transaction, so that writes
    // waiting together mix held and free states.
    let held = |index: usize| index.is_multiple_of(6);
    let held_users: Vec<&String> = (0..USERS).filter(|&i| held(i)).map(|i| &users[i]).collect();
    let mut holder = PgConnection::connect(&app.db.url).await.expect("connect");
    holder.execute("begin").await.expect("begin");
    sqlx::query("select 1 from flow_state where user_id = any($1) for update")
        .bind(&held_users)
        .execute(&mut holder)
        .await
        .expect("lock the rows");

    let started = Instant::now();
    let bodies = complete_all_at_once(&app, &users, |_| "b", |_| json!({})).await;
    let took = started.elapsed();
    holder.execute("rollback").await.expect("unlock");

    for (index, (user, body)) in users.iter().zip(&bodies).enumerate() {
        let state = state_of(&app, user, "together").await;
        if held(index) {
            assert_eq!(error_code(body), "INTERNAL_SERVER_ERROR", "{user}: {body}");
            let message = body["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains("retry shortly"), "{user}: {message}");
            assert_eq!(
                state["revision"],
                json!(1),
                "{user}: nothing written: {state}"
            );
        } else {
            assert!(
                body.get("errors").is_none(),
                "{user} is not held up: {body}"
            );
            assert_eq!(state["revision"], json!(2), "{user}: {state}");
        }
    }
    assert!(
        took < Duration::from_secs(10),
        "every write answered in {took:?}"
    );
    write_ok(
        &app,
        Who::User(&users[0]),
        "completeStep",
        json!({ "flow": "together", "step": "b" }),
    )
    .await;
}
