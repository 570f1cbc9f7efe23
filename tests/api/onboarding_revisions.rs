//! The original API's writes with `expectedRevision` and `idempotencyKey`,
//! and its state's `revision`: the same meaning as for flows, on the same
//! row as `flowState(flow: "onboarding")`.

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{Backend, TestApp, error_code, post_graphql, spawn_app, token};
use crate::on_both_backends;

const STATE: &str = "id isCompleted currentStep completedAt updatedAt revision";

async fn as_alice(app: &TestApp, query: &str, variables: Value) -> Value {
    app.graphql_as(Some("alice"), query, variables).await
}

async fn complete(app: &TestApp, args: &str) -> Value {
    let query = format!("mutation {{ completeOnboarding({args}) {{ {STATE} }} }}");
    as_alice(app, &query, json!({})).await
}

async fn flow_revision(app: &TestApp) -> Value {
    let body = as_alice(
        app,
        "{ flowState(flow: \"onboarding\") { revision } }",
        json!({}),
    )
    .await;
    body["data"]["flowState"]["revision"].clone()
}

async fn events(app: &TestApp) -> usize {
    let query = "{ flowEvents(flow: \"onboarding\", first: 100) { edges { node { type } } } }";
    let body = as_alice(app, query, json!({})).await;
    body["data"]["flowEvents"]["edges"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn revision_counts_every_write_as_the_onboarding_flow_does(backend: Backend) {
    let app = spawn_app(backend).await;
    let read = as_alice(
        &app,
        &format!("{{ onboardingState {{ {STATE} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(read["data"]["onboardingState"]["revision"], 0, "{read}");
    let body = complete(&app, "step: 2").await;
    assert_eq!(body["data"]["completeOnboarding"]["revision"], 1, "{body}");
    let body = as_alice(
        &app,
        "mutation { setOnboardingStep(step: 3) { revision } }",
        json!({}),
    )
    .await;
    assert_eq!(body["data"]["setOnboardingStep"]["revision"], 2, "{body}");
    let body = as_alice(
        &app,
        "mutation { dismissFlow(flow: \"onboarding\") { revision } }",
        json!({}),
    )
    .await;
    assert_eq!(body["data"]["dismissFlow"]["revision"], 3, "{body}");
    let read = as_alice(&app, "{ onboardingState { revision } }", json!({})).await;
    assert_eq!(read["data"]["onboardingState"]["revision"], 3);
    assert_eq!(flow_revision(&app).await, 3);
}

async fn a_stale_expected_revision_is_a_conflict_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    complete(&app, "step: 1").await;
    let before = as_alice(
        &app,
        &format!("{{ onboardingState {{ {STATE} }} }}"),
        json!({}),
    )
    .await;

    for mutation in [
        "completeOnboarding(step: 5, expectedRevision: 0)",
        "setOnboardingStep(step: 5, expectedRevision: 7)",
        "resetOnboarding(expectedRevision: 0)",
    ] {
        let body = as_alice(
            &app,
            &format!("mutation {{ {mutation} {{ id }} }}"),
            json!({}),
        )
        .await;
        assert_eq!(error_code(&body), "CONFLICT", "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["currentRevision"], 1,
            "{body}"
        );
    }
    let after = as_alice(
        &app,
        &format!("{{ onboardingState {{ {STATE} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(after, before, "nothing changed");
    assert_eq!(events(&app).await, 1, "no event of a refused write");

    let body = as_alice(
        &app,
        "mutation { setOnboardingStep(step: 4, expectedRevision: 1) { currentStep isCompleted revision } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["setOnboardingStep"],
        json!({ "currentStep": 4, "isCompleted": true, "revision": 2 }),
        "{body}"
    );
}

async fn a_retry_with_the_same_idempotency_key_returns_the_first_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = complete(&app, "step: 3, idempotencyKey: \"finish-1\"").await;
    assert!(first.get("errors").is_none(), "{first}");
    let again = complete(&app, "step: 3, idempotencyKey: \"finish-1\"").await;
    assert_eq!(again, first, "the first answer, again");
    assert_eq!(flow_revision(&app).await, 1, "applied once");
    assert_eq!(events(&app).await, 1);

    let other = complete(&app, "step: 4, idempotencyKey: \"finish-1\"").await;
    assert_eq!(error_code(&other), "CONFLICT", "{other}");
    let reset = as_alice(
        &app,
        "mutation { resetOnboarding(idempotencyKey: \"finish-1\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        error_code(&reset),
        "CONFLICT",
        "the key was used for another change: {reset}"
    );

    let empty = complete(&app, "idempotencyKey: \"\"").await;
    assert_eq!(error_code(&empty), "BAD_USER_INPUT", "{empty}");
    let nul = complete(&app, "idempotencyKey: \"a\\u0000b\"").await;
    assert_eq!(error_code(&nul), "BAD_USER_INPUT", "{nul}");
    assert_eq!(flow_revision(&app).await, 1, "refused keys wrote nothing");
}

async fn concurrent_retries_of_one_key_all_get_the_first_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut retries = JoinSet::new();
    for _ in 0..20 {
        let url = app.graphql_url();
        retries.spawn(async move {
            let query = format!(
                "mutation {{ completeOnboarding(step: 2, idempotencyKey: \"k\") {{ {STATE} }} }}"
            );
            post_graphql(&url, Some(&token("alice", &[])), &query, json!({}))
                .await
                .json::<Value>()
                .await
                .expect("JSON")
        });
    }
    let bodies = retries.join_all().await;
    for body in &bodies {
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(body, &bodies[0]);
    }
    assert_eq!(bodies[0]["data"]["completeOnboarding"]["revision"], 1);
    assert_eq!(events(&app).await, 1);
}

on_both_backends!(
    revision_counts_every_write_as_the_onboarding_flow_does,
    a_stale_expected_revision_is_a_conflict_and_changes_nothing,
    a_retry_with_the_same_idempotency_key_returns_the_first_answer,
    concurrent_retries_of_one_key_all_get_the_first_answer,
);
