//! The query and the mutations: what each one reads and writes.

use serde_json::{Value, json};

use crate::helpers::{Backend, error_code, spawn_app};
use crate::on_both_backends;

const FIELDS: &str = "id userId isCompleted currentStep completedAt createdAt updatedAt";

fn state_query() -> String {
    format!("query {{ onboardingState {{ {FIELDS} }} }}")
}

fn complete(step: Option<i32>) -> String {
    match step {
        Some(step) => format!("mutation {{ completeOnboarding(step: {step}) {{ {FIELDS} }} }}"),
        None => format!("mutation {{ completeOnboarding {{ {FIELDS} }} }}"),
    }
}

fn set_step(step: i32) -> String {
    format!("mutation {{ setOnboardingStep(step: {step}) {{ {FIELDS} }} }}")
}

fn reset() -> String {
    format!("mutation {{ resetOnboarding {{ {FIELDS} }} }}")
}

/// A `DateTime` as the contract writes it: UTC with six fraction digits.
fn assert_datetime(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a DateTime string, got {value}"));
    let shape = text.len() == 27
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && text.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok();
    assert!(shape, "{text} is not like 2025-01-01T10:00:00.000000Z");
}

async fn the_first_query_creates_a_fresh_state(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.db.count_rows("alice").await, 0);

    let body = app
        .graphql_as(Some("alice"), &state_query(), json!({}))
        .await;

    let state = &body["data"]["onboardingState"];
    assert_eq!(state["id"], "alice");
    assert_eq!(state["userId"], "alice");
    assert_eq!(state["isCompleted"], false);
    assert_eq!(state["currentStep"], 0);
    assert_eq!(state["completedAt"], Value::Null);
    assert_datetime(&state["createdAt"]);
    assert_eq!(state["createdAt"], state["updatedAt"]);
    assert_eq!(app.db.count_rows("alice").await, 1);
}

async fn a_second_query_returns_the_same_state_without_writing(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app
        .graphql_as(Some("alice"), &state_query(), json!({}))
        .await;
    let second = app
        .graphql_as(Some("alice"), &state_query(), json!({}))
        .await;
    assert_eq!(first, second);
    assert_eq!(app.db.count_rows("alice").await, 1);
}

async fn complete_onboarding_sets_completed_the_step_and_the_completion_time(backend: Backend) {
    let app = spawn_app(backend).await;

    let body = app
        .graphql_as(Some("alice"), &complete(Some(4)), json!({}))
        .await;

    let state = &body["data"]["completeOnboarding"];
    assert_eq!(state["isCompleted"], true);
    assert_eq!(state["currentStep"], 4);
    assert_datetime(&state["completedAt"]);
    assert_eq!(state["completedAt"], state["updatedAt"]);
}

async fn complete_onboarding_without_a_step_uses_step_0(backend: Backend) {
    let app = spawn_app(backend).await;
    app.graphql_as(Some("alice"), &set_step(3), json!({})).await;

    let body = app
        .graphql_as(Some("alice"), &complete(None), json!({}))
        .await;

    assert_eq!(body["data"]["completeOnboarding"]["currentStep"], 0);
    assert_eq!(body["data"]["completeOnboarding"]["isCompleted"], true);
}

async fn set_onboarding_step_leaves_completion_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let completed = app
        .graphql_as(Some("alice"), &complete(Some(2)), json!({}))
        .await;

    let body = app.graphql_as(Some("alice"), &set_step(7), json!({})).await;

    let state = &body["data"]["setOnboardingStep"];
    assert_eq!(state["currentStep"], 7);
    assert_eq!(state["isCompleted"], true);
    assert_eq!(
        state["completedAt"],
        completed["data"]["completeOnboarding"]["completedAt"]
    );
}

async fn reset_onboarding_clears_completion_and_the_step(backend: Backend) {
    let app = spawn_app(backend).await;
    app.graphql_as(Some("alice"), &complete(Some(5)), json!({}))
        .await;

    let body = app.graphql_as(Some("alice"), &reset(), json!({})).await;

    let state = &body["data"]["resetOnboarding"];
    assert_eq!(state["isCompleted"], false);
    assert_eq!(state["currentStep"], 0);
    assert_eq!(state["completedAt"], Value::Null);
}

async fn every_mutation_creates_a_missing_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        ("a", complete(Some(1)), "completeOnboarding"),
        ("b", set_step(2), "setOnboardingStep"),
        ("c", reset(), "resetOnboarding"),
    ];
    for (user, mutation, field) in cases {
        let body = app.graphql_as(Some(user), &mutation, json!({})).await;
        let state = &body["data"][field];
        assert_eq!(state["userId"], user, "{field} answers {body}");
        assert_eq!(
            state["createdAt"], state["updatedAt"],
            "{field} created the state"
        );
        assert_eq!(app.db.count_rows(user).await, 1, "{field} wrote one row");
    }
}

async fn a_negative_step_is_refused_with_bad_user_input_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    for mutation in [complete(Some(-1)), set_step(-3)] {
        let body = app.graphql_as(Some("alice"), &mutation, json!({})).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("0 or greater"),
            "the message says what to change: {message}"
        );
    }
    let via_variables = "mutation($step: Int!) { setOnboardingStep(step: $step) { id } }";
    let body = app
        .graphql_as(Some("alice"), via_variables, json!({ "step": -1 }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(app.db.count_rows("alice").await, 0);
}

async fn minus_zero_is_the_step_0_as_a_literal_and_as_a_variable(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .graphql_as(Some("alice"), &complete(Some(7)), json!({}))
        .await;
    assert_eq!(body["data"]["completeOnboarding"]["currentStep"], 7);
    let literal = "mutation { setOnboardingStep(step: -0) { currentStep } }";
    let body = app.graphql_as(Some("alice"), literal, json!({})).await;
    assert_eq!(
        body["data"]["setOnboardingStep"]["currentStep"], 0,
        "{body}"
    );

    // `-0` as JSON text: serde_json's `json!` would write it as `0`.
    app.graphql_as(Some("alice"), &set_step(5), json!({})).await;
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(crate::helpers::token("alice", &[]))
        .header("content-type", "application/json")
        .body(r#"{"query":"mutation($step: Int!) { setOnboardingStep(step: $step) { currentStep } }","variables":{"step":-0}}"#)
        .send()
        .await
        .expect("the server answers");
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(
        body["data"]["setOnboardingStep"]["currentStep"], 0,
        "{body}"
    );
}

async fn the_table_itself_refuses_a_negative_step(backend: Backend) {
    let app = spawn_app(backend).await;
    app.graphql_as(Some("alice"), &state_query(), json!({}))
        .await;

    let result = app
        .db
        .execute("update onboarding_state set current_step = -1 where user_id = 'alice'")
        .await;

    assert!(
        result.is_err(),
        "a check constraint refuses current_step = -1"
    );
}

async fn a_datetime_reads_back_exactly_as_it_was_returned(backend: Backend) {
    let app = spawn_app(backend).await;
    let written = app
        .graphql_as(Some("alice"), &complete(Some(1)), json!({}))
        .await;
    let read = app
        .graphql_as(Some("alice"), &state_query(), json!({}))
        .await;

    let written = &written["data"]["completeOnboarding"];
    let read = &read["data"]["onboardingState"];
    for field in ["completedAt", "createdAt", "updatedAt"] {
        assert_datetime(&written[field]);
        assert_eq!(
            written[field], read[field],
            "{field} reads back character for character"
        );
    }
}

async fn updated_at_changes_on_every_write_and_created_at_never_does(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app
        .graphql_as(Some("alice"), &state_query(), json!({}))
        .await;
    let created_at = first["data"]["onboardingState"]["createdAt"].clone();
    let mut updated_at = first["data"]["onboardingState"]["updatedAt"].clone();

    for (mutation, field) in [
        (set_step(1), "setOnboardingStep"),
        (set_step(1), "setOnboardingStep"),
        (complete(Some(2)), "completeOnboarding"),
        (reset(), "resetOnboarding"),
    ] {
        let body = app.graphql_as(Some("alice"), &mutation, json!({})).await;
        let state = &body["data"][field];
        assert_eq!(state["createdAt"], created_at, "{field} keeps createdAt");
        assert_ne!(state["updatedAt"], updated_at, "{field} moves updatedAt");
        assert!(
            state["updatedAt"].as_str() > updated_at.as_str(),
            "updatedAt moves forward"
        );
        updated_at = state["updatedAt"].clone();
    }
}

async fn an_unknown_field_is_refused_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .graphql_as(
            Some("alice"),
            "mutation { completeOnboarding { id favouriteColour } }",
            json!({}),
        )
        .await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("favouriteColour"),
        "the error names the field: {body}"
    );
    assert!(
        body.get("data").is_none(),
        "a request error carries no data"
    );
    assert_eq!(app.db.count_all_rows().await, 0);
}

on_both_backends!(
    the_first_query_creates_a_fresh_state,
    a_second_query_returns_the_same_state_without_writing,
    complete_onboarding_sets_completed_the_step_and_the_completion_time,
    complete_onboarding_without_a_step_uses_step_0,
    set_onboarding_step_leaves_completion_unchanged,
    reset_onboarding_clears_completion_and_the_step,
    every_mutation_creates_a_missing_state,
    a_negative_step_is_refused_with_bad_user_input_and_nothing_is_written,
    minus_zero_is_the_step_0_as_a_literal_and_as_a_variable,
    the_table_itself_refuses_a_negative_step,
    a_datetime_reads_back_exactly_as_it_was_returned,
    updated_at_changes_on_every_write_and_created_at_never_does,
    an_unknown_field_is_refused_and_writes_nothing,
);
