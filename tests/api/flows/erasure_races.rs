//! Erasure wins every race: reads and writes of a user running while an
//! admin erases them never bring the erased data back and never fail with
//! an internal error. A read never writes, so a state kept on an older
//! version by `KEEP` is not stored again by the reads that race the erasure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{
    STATE, Who, delete_user_data, export_user_data, ok, operation, publish_with, state_of, write_ok,
};
use crate::helpers::{Backend, TestApp, error_code, post_graphql, spawn_app, token};
use crate::on_both_backends;

const SECRET: &str = "secret-3f9c1e";

/// Sends `query` as `user` until `stop`; counts the answers that are errors.
fn keep_sending(
    app: &TestApp,
    user: &str,
    query: String,
    variables: Value,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
) -> impl Future<Output = ()> + Send + 'static {
    let (url, token) = (app.graphql_url(), token(user, &[]));
    async move {
        while !stop.load(Ordering::Relaxed) {
            let response = post_graphql(&url, Some(&token), &query, variables.clone()).await;
            let body: Value = response.json().await.expect("a JSON body");
            if body.get("errors").is_some() {
                eprintln!("an error while racing an erasure: {body}");
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn reads_racing_an_erasure_never_bring_back_a_state_kept_on_an_older_version(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_with(&app, "keepf", &["a", "b"], "KEEP").await;
    let user = "racing-reader";
    let args = json!({ "flow": "keepf", "step": "a", "data": { "secret": SECRET } });
    write_ok(&app, Who::User(user), "completeStep", args).await;
    publish_with(&app, "keepf", &["a", "b", "c"], "KEEP").await;
    let kept = state_of(&app, user, "keepf").await;
    assert_eq!(kept["version"], 1, "KEEP leaves the user on version 1");

    let (stop, errors) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let mut readers = JoinSet::new();
    let read = format!("{{ flowState(flow: \"keepf\") {{ {STATE} }} }}");
    for _ in 0..6 {
        readers.spawn(keep_sending(
            &app,
            user,
            read.clone(),
            json!({}),
            stop.clone(),
            Arc::clone(&errors),
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let erased = ok(
        delete_user_data(&app, Who::Admin, user).await,
        "deleteUserData",
    );
    assert_eq!(erased["flowStates"], 1, "{erased}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    readers.join_all().await;

    assert_eq!(errors.load(Ordering::Relaxed), 0, "no read failed");
    let after = state_of(&app, user, "keepf").await;
    assert_eq!(
        (&after["version"], &after["status"], &after["revision"]),
        (&json!(2), &json!("NOT_STARTED"), &json!(0)),
        "a read after the erasure is a first access, on the latest version: {after}"
    );
    let export = ok(
        export_user_data(&app, Who::Admin, user).await,
        "exportUserData",
    );
    assert!(
        !export.to_string().contains(SECRET),
        "the erased step data is gone: {export}"
    );
    let stored = app
        .db
        .execute(&format!(
            "select 1 from flow_state where steps like '%{SECRET}%'"
        ))
        .await
        .expect("a query");
    assert_eq!(stored, 0, "no row holds the erased data");
}

async fn writes_racing_erasures_never_fail_and_leave_only_fresh_states(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_with(&app, "racef", &["a", "b", "c"], "KEEP").await;
    let user = "racing-writer";
    let (stop, errors) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let mut writers = JoinSet::new();
    for step in ["a", "b", "c", "a"] {
        let args = json!({ "flow": "racef", "step": step, "data": { "secret": SECRET } });
        writers.spawn(keep_sending(
            &app,
            user,
            operation("mutation", "completeStep", &args, "revision"),
            args,
            stop.clone(),
            Arc::clone(&errors),
        ));
    }
    let first_reads = json!({ "flow": "onboarding" });
    writers.spawn(keep_sending(
        &app,
        user,
        operation("query", "flowState", &first_reads, "revision"),
        first_reads,
        stop.clone(),
        Arc::clone(&errors),
    ));
    writers.spawn(keep_sending(
        &app,
        user,
        "mutation { completeOnboarding(step: 2) { currentStep } }".to_owned(),
        json!({}),
        stop.clone(),
        Arc::clone(&errors),
    ));
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let erased = delete_user_data(&app, Who::Admin, user).await;
        assert!(
            erased.get("errors").is_none(),
            "the erasure succeeds: {erased}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writers.join_all().await;
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "no write racing an erasure failed"
    );
    let erased = ok(
        delete_user_data(&app, Who::Admin, user).await,
        "deleteUserData",
    );
    assert!(erased["flowStates"].as_i64() <= Some(2), "{erased}");
}

async fn an_erasure_while_the_users_row_is_read_by_many_first_accesses_fails_none(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let url = app.graphql_url();
    for round in 0..20 {
        let user = format!("first-access-{round}");
        let mut tasks = JoinSet::new();
        for _ in 0..8 {
            let (url, token) = (url.clone(), token(&user, &[]));
            tasks.spawn(async move {
                let query =
                    "{ flowState(flow: \"onboarding\") { revision } onboardingState { id } }";
                let response = post_graphql(&url, Some(&token), query, json!({})).await;
                response.json::<Value>().await.expect("JSON")
            });
        }
        let erased = delete_user_data(&app, Who::Admin, &user).await;
        assert!(erased.get("errors").is_none(), "{erased}");
        for body in tasks.join_all().await {
            assert!(
                body.get("errors").is_none(),
                "a first access racing an erasure succeeds ({}): {body}",
                error_code(&body)
            );
        }
    }
}

on_both_backends!(
    reads_racing_an_erasure_never_bring_back_a_state_kept_on_an_older_version,
    writes_racing_erasures_never_fail_and_leave_only_fresh_states,
    an_erasure_while_the_users_row_is_read_by_many_first_accesses_fails_none,
);
