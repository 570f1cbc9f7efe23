//! The original API is the flow `onboarding`: `onboardingState` and its three
//! mutations read and write the same state as `flowState(flow: "onboarding")`.

use serde_json::{Value, json};

use super::{
    Who, declaration, events_of, gql, ok, publish_ok, state_of, step_keys, types, write_ok,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

const ONBOARDING: &str = "id userId isCompleted currentStep completedAt createdAt updatedAt";

/// One of the original mutations as `user`: the `OnboardingState` it returns.
async fn original(app: &TestApp, user: &str, mutation: &str, field: &str) -> Value {
    let query = format!("mutation {{ {mutation} {{ {ONBOARDING} }} }}");
    ok(gql(app, Who::User(user), &query, json!({})).await, field)
}

async fn onboarding_state_of(app: &TestApp, user: &str) -> Value {
    let query = format!("{{ onboardingState {{ {ONBOARDING} }} }}");
    ok(
        gql(app, Who::User(user), &query, json!({})).await,
        "onboardingState",
    )
}

async fn the_onboarding_flow_of_a_new_user_is_not_started_with_no_declared_steps(backend: Backend) {
    let app = spawn_app(backend).await;

    let state = state_of(&app, "alice", "onboarding").await;

    assert_eq!(state["id"], "alice/onboarding");
    assert_eq!(state["flow"], "onboarding");
    assert_eq!(state["status"], "NOT_STARTED");
    assert_eq!(state["steps"], json!([]));
    assert_eq!(state["totalSteps"], 0);
    assert_eq!(state["doneSteps"], 0);
    assert_eq!(state["currentStepIndex"], 0);
    assert_eq!(state["currentStep"], Value::Null, "no declared steps");
    assert_eq!(state["revision"], 0);
}

async fn flow_state_of_onboarding_and_onboarding_state_are_one_row(backend: Backend) {
    let app = spawn_app(backend).await;

    let flow_state = state_of(&app, "alice", "onboarding").await;

    assert_eq!(
        app.db.count_rows("alice").await,
        1,
        "flowState made the onboarding_state row"
    );
    let original = onboarding_state_of(&app, "alice").await;
    assert_eq!(original["createdAt"], flow_state["createdAt"]);
    assert_eq!(original["isCompleted"], false);
    assert_eq!(app.db.count_rows("alice").await, 1);
}

async fn complete_onboarding_completes_the_onboarding_flow_at_its_step(backend: Backend) {
    let app = spawn_app(backend).await;

    let completed = original(
        &app,
        "alice",
        "completeOnboarding(step: 2)",
        "completeOnboarding",
    )
    .await;
    let state = state_of(&app, "alice", "onboarding").await;

    assert_eq!(state["id"], "alice/onboarding");
    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(state["currentStepIndex"], 2);
    assert_eq!(state["steps"], json!([]));
    assert_eq!(state["totalSteps"], 0);
    assert_eq!(state["completedAt"], completed["completedAt"]);
    assert_eq!(state["revision"], 1);
    assert_eq!(
        types(&events_of(&app, "alice", Some("onboarding")).await),
        ["FLOW_COMPLETED"]
    );
}

async fn set_onboarding_step_sets_the_current_step_index_of_the_onboarding_flow(backend: Backend) {
    let app = spawn_app(backend).await;

    original(
        &app,
        "alice",
        "setOnboardingStep(step: 5)",
        "setOnboardingStep",
    )
    .await;
    let state = state_of(&app, "alice", "onboarding").await;

    assert_eq!(state["currentStepIndex"], 5);
    assert_eq!(state["revision"], 1);
    assert_eq!(
        types(&events_of(&app, "alice", Some("onboarding")).await),
        ["STEP_SET"]
    );
}

async fn reset_onboarding_makes_the_onboarding_flow_not_started(backend: Backend) {
    let app = spawn_app(backend).await;
    original(
        &app,
        "alice",
        "completeOnboarding(step: 3)",
        "completeOnboarding",
    )
    .await;

    original(&app, "alice", "resetOnboarding", "resetOnboarding").await;
    let state = state_of(&app, "alice", "onboarding").await;

    assert_eq!(state["status"], "NOT_STARTED");
    assert_eq!(state["currentStepIndex"], 0);
    assert_eq!(state["completedAt"], Value::Null);
    assert_eq!(state["revision"], 2);
    assert_eq!(
        types(&events_of(&app, "alice", Some("onboarding")).await),
        ["RESET", "FLOW_COMPLETED"]
    );
}

async fn each_original_mutation_increments_the_revision_and_appends_one_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let mutations = [
        (
            "setOnboardingStep(step: 1)",
            "setOnboardingStep",
            "STEP_SET",
        ),
        (
            "completeOnboarding(step: 4)",
            "completeOnboarding",
            "FLOW_COMPLETED",
        ),
        (
            "setOnboardingStep(step: 6)",
            "setOnboardingStep",
            "STEP_SET",
        ),
        ("resetOnboarding", "resetOnboarding", "RESET"),
        ("completeOnboarding", "completeOnboarding", "FLOW_COMPLETED"),
    ];

    for (applied, (mutation, field, _)) in mutations.iter().enumerate() {
        original(&app, "alice", mutation, field).await;
        assert_eq!(
            state_of(&app, "alice", "onboarding").await["revision"],
            applied as i64 + 1,
            "{mutation}"
        );
    }

    let events = events_of(&app, "alice", Some("onboarding")).await;
    let expected: Vec<&str> = mutations.iter().rev().map(|(_, _, kind)| *kind).collect();
    assert_eq!(types(&events), expected);
    assert!(
        events
            .iter()
            .all(|event| event["actor"] == "alice" && event["flow"] == "onboarding")
    );
}

async fn complete_flow_and_restart_flow_on_onboarding_drive_the_original_state(backend: Backend) {
    let app = spawn_app(backend).await;
    original(
        &app,
        "alice",
        "setOnboardingStep(step: 3)",
        "setOnboardingStep",
    )
    .await;

    let completed = write_ok(
        &app,
        Who::User("alice"),
        "completeFlow",
        json!({ "flow": "onboarding" }),
    )
    .await;
    let original_state = onboarding_state_of(&app, "alice").await;
    assert_eq!(original_state["isCompleted"], true);
    assert_eq!(original_state["completedAt"], completed["completedAt"]);
    assert_eq!(original_state["updatedAt"], completed["updatedAt"]);

    write_ok(
        &app,
        Who::User("alice"),
        "restartFlow",
        json!({ "flow": "onboarding" }),
    )
    .await;
    let original_state = onboarding_state_of(&app, "alice").await;
    assert_eq!(original_state["isCompleted"], false);
    assert_eq!(original_state["currentStep"], 0);
    assert_eq!(original_state["completedAt"], Value::Null);
}

async fn publishing_onboarding_gives_its_steps_keys_and_current_step_stays_the_index(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_ok(
        &app,
        declaration("onboarding", &["welcome", "profile", "done"]),
    )
    .await;

    let state = state_of(&app, "alice", "onboarding").await;
    assert_eq!(step_keys(&state), ["welcome", "profile", "done"]);
    assert_eq!(state["totalSteps"], 3);
    assert_eq!(state["currentStep"], "welcome");

    let state = write_ok(
        &app,
        Who::User("alice"),
        "completeStep",
        json!({ "flow": "onboarding", "step": "welcome" }),
    )
    .await;
    assert_eq!(state["currentStepIndex"], 1);
    assert_eq!(state["currentStep"], "profile");
    assert_eq!(onboarding_state_of(&app, "alice").await["currentStep"], 1);

    original(
        &app,
        "alice",
        "setOnboardingStep(step: 2)",
        "setOnboardingStep",
    )
    .await;
    let state = state_of(&app, "alice", "onboarding").await;
    assert_eq!(state["currentStepIndex"], 2);
    assert_eq!(state["currentStep"], "done");
}

on_both_backends!(
    the_onboarding_flow_of_a_new_user_is_not_started_with_no_declared_steps,
    flow_state_of_onboarding_and_onboarding_state_are_one_row,
    complete_onboarding_completes_the_onboarding_flow_at_its_step,
    set_onboarding_step_sets_the_current_step_index_of_the_onboarding_flow,
    reset_onboarding_makes_the_onboarding_flow_not_started,
    each_original_mutation_increments_the_revision_and_appends_one_event,
    complete_flow_and_restart_flow_on_onboarding_drive_the_original_state,
    publishing_onboarding_gives_its_steps_keys_and_current_step_stays_the_index,
);
