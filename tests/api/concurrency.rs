//! Many requests at once for one user: exactly one row, and every one succeeds.

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{Backend, spawn_app, token};
use crate::on_both_backends;

/// Sends `count` requests at once, `operation(i)` for the i-th, all as `user`.
async fn all_at_once(
    app: &crate::helpers::TestApp,
    user: &str,
    count: usize,
    operation: impl Fn(usize) -> String,
) -> Vec<Value> {
    let token = token(user, &[]);
    let mut requests = JoinSet::new();
    for i in 0..count {
        let request = app
            .client
            .post(app.graphql_url())
            .bearer_auth(&token)
            .json(&json!({ "query": operation(i) }));
        requests.spawn(async move {
            let response = request.send().await.expect("the server answers");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("JSON")
        });
    }
    requests.join_all().await
}

async fn hundreds_of_concurrent_first_accesses_make_exactly_one_row(backend: Backend) {
    let app = spawn_app(backend).await;

    let bodies = all_at_once(&app, "alice", 300, |_| {
        "{ onboardingState { id createdAt } }".into()
    })
    .await;

    for body in &bodies {
        assert!(
            body.get("errors").is_none(),
            "every access succeeds: {body}"
        );
    }
    let created: Vec<&Value> = bodies
        .iter()
        .map(|body| &body["data"]["onboardingState"]["createdAt"])
        .collect();
    assert!(
        created.iter().all(|at| *at == created[0]),
        "all see the one state"
    );
    assert_eq!(app.db.count_rows("alice").await, 1);
}

async fn concurrent_first_mutations_all_succeed_and_leave_one_row(backend: Backend) {
    let app = spawn_app(backend).await;

    let bodies = all_at_once(&app, "alice", 200, |i| match i % 3 {
        0 => format!("mutation {{ setOnboardingStep(step: {i}) {{ currentStep }} }}"),
        1 => format!("mutation {{ completeOnboarding(step: {i}) {{ currentStep }} }}"),
        _ => "mutation { resetOnboarding { currentStep } }".into(),
    })
    .await;

    for body in &bodies {
        assert!(
            body.get("errors").is_none(),
            "every mutation succeeds: {body}"
        );
    }
    assert_eq!(app.db.count_rows("alice").await, 1);
}

async fn racing_writes_each_move_updated_at_forward_and_the_latest_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;

    let bodies = all_at_once(&app, "alice", 100, |i| {
        format!("mutation {{ setOnboardingStep(step: {i}) {{ currentStep updatedAt }} }}")
    })
    .await;

    // RFC 3339 with a fixed width orders as text.
    let mut written: Vec<(String, i64)> = bodies
        .iter()
        .map(|body| {
            let state = &body["data"]["setOnboardingStep"];
            let updated_at = state["updatedAt"].as_str().expect("updatedAt").to_owned();
            (
                updated_at,
                state["currentStep"].as_i64().expect("currentStep"),
            )
        })
        .collect();
    written.sort();
    written.dedup_by(|a, b| a.0 == b.0);
    assert_eq!(written.len(), 100, "every write has its own updatedAt");
    let (latest_at, latest_step) = written.last().expect("writes");
    let body = app
        .graphql_as(
            Some("alice"),
            "{ onboardingState { currentStep updatedAt } }",
            json!({}),
        )
        .await;
    let state = &body["data"]["onboardingState"];
    assert_eq!(
        (state["updatedAt"].as_str(), state["currentStep"].as_i64()),
        (Some(latest_at.as_str()), Some(*latest_step)),
        "a later read sees the write with the latest updatedAt"
    );
}

on_both_backends!(
    hundreds_of_concurrent_first_accesses_make_exactly_one_row,
    concurrent_first_mutations_all_succeed_and_leave_one_row,
    racing_writes_each_move_updated_at_forward_and_the_latest_one_wins,
);
