//! Publishing a new version of a flow, and what each re-onboarding policy
//! does to the users already in it: shown at their next read, stored with
//! their next write, applied once.

use serde_json::{Value, json};

use super::{
    CHECKLIST, Who, declaration, events_of, publish_checklist, publish_ok, publish_with, read_flow,
    state_of, statuses, step_keys, step_of, step_statuses, types, write_ok,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

async fn complete(app: &TestApp, user: &str, step: &str) -> Value {
    write_ok(
        app,
        Who::User(user),
        "completeStep",
        json!({ "flow": "checklist", "step": step }),
    )
    .await
}

/// Users in version 1 of `checklist`: alice in progress (profile done),
/// carol completed (invite skipped), dave dismissed; bob never came.
/// Returns carol's completed state.
async fn users_in_version_1(app: &TestApp) -> Value {
    publish_checklist(app).await;
    complete(app, "alice", "profile").await;
    complete(app, "carol", "profile").await;
    write_ok(
        app,
        Who::User("carol"),
        "skipStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    let carol = complete(app, "carol", "connect").await;
    assert_eq!(carol["status"], "COMPLETED");
    complete(app, "dave", "profile").await;
    write_ok(
        app,
        Who::User("dave"),
        "dismissFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    carol
}

const VERSION_2: [&str; 4] = ["profile", "invite", "connect", "feedback"];

/// A state as new on version 2: NOT_STARTED, every step cleared.
fn assert_fresh_on_version_2(state: &Value) {
    assert_eq!(state["version"], 2, "{state}");
    assert_eq!(state["status"], "NOT_STARTED", "{state}");
    assert_eq!(step_keys(state), VERSION_2);
    assert!(
        state["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .all(|step| step["status"] == "NOT_STARTED"
                && step["completedAt"].is_null()
                && step["skippedAt"].is_null()),
        "{state}"
    );
    assert_eq!(state["currentStepIndex"], 0);
    assert_eq!(state["currentStep"], "profile");
    assert_eq!(state["doneSteps"], 0);
    assert_eq!(state["totalSteps"], 4);
    for field in ["startedAt", "completedAt", "dismissedAt", "snoozedUntil"] {
        assert_eq!(state[field], Value::Null, "{field}: {state}");
    }
}

async fn keep_leaves_users_in_the_flow_on_their_version_and_its_steps(backend: Backend) {
    let app = spawn_app(backend).await;
    let carol_before = users_in_version_1(&app).await;

    let flow = publish_ok(&app, declaration("checklist", &VERSION_2)).await;
    assert_eq!(flow["version"], 2);
    assert_eq!(
        flow["versions"][1]["reonboarding"], "KEEP",
        "the default policy"
    );

    let alice = state_of(&app, "alice", "checklist").await;
    assert_eq!(alice["version"], 1);
    assert_eq!(alice["status"], "IN_PROGRESS");
    assert_eq!(step_keys(&alice), CHECKLIST, "the steps of version 1");
    assert_eq!(alice["totalSteps"], 3);
    assert_eq!(step_of(&alice, "profile")["status"], "COMPLETED");
    assert_eq!(state_of(&app, "carol", "checklist").await, carol_before);
    let dave = state_of(&app, "dave", "checklist").await;
    assert_eq!(
        (dave["version"].clone(), dave["status"].clone()),
        (json!(1), json!("DISMISSED"))
    );
    let alice = complete(&app, "alice", "invite").await;
    assert_eq!(alice["version"], 1, "and they go on in it");
    assert_eq!(alice["currentStep"], "connect");

    let bob = state_of(&app, "bob", "checklist").await;
    assert_fresh_on_version_2(&bob);
    let versions = read_flow(&app, Who::Admin, "checklist").await["versions"].clone();
    assert_eq!(
        step_keys(&versions[0]),
        CHECKLIST,
        "version 1 stays readable"
    );
    assert_eq!(step_keys(&versions[1]), VERSION_2);
}

async fn restart_in_progress_restarts_users_in_progress_and_keeps_completed_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let carol_before = users_in_version_1(&app).await;

    publish_with(&app, "checklist", &VERSION_2, "RESTART_IN_PROGRESS").await;

    assert_fresh_on_version_2(&state_of(&app, "alice", "checklist").await);
    let carol = state_of(&app, "carol", "checklist").await;
    assert_eq!(carol["version"], 1);
    assert_eq!(carol["status"], "COMPLETED");
    assert_eq!(carol["completedAt"], carol_before["completedAt"]);
    assert_eq!(carol["steps"], carol_before["steps"]);
    assert_fresh_on_version_2(&state_of(&app, "bob", "checklist").await);
}

async fn restart_all_restarts_every_user_in_the_flow_on_the_new_version(backend: Backend) {
    let app = spawn_app(backend).await;
    users_in_version_1(&app).await;

    publish_with(&app, "checklist", &VERSION_2, "RESTART_ALL").await;

    for user in ["alice", "carol", "dave", "bob"] {
        assert_fresh_on_version_2(&state_of(&app, user, "checklist").await);
    }
}

async fn a_policy_is_applied_once_so_progress_made_after_it_is_kept(backend: Backend) {
    let app = spawn_app(backend).await;
    users_in_version_1(&app).await;
    publish_with(&app, "checklist", &VERSION_2, "RESTART_ALL").await;
    assert_fresh_on_version_2(&state_of(&app, "alice", "checklist").await);

    let progressed = complete(&app, "alice", "profile").await;
    assert_eq!(progressed["version"], 2);

    let again = state_of(&app, "alice", "checklist").await;
    assert_eq!(again, progressed, "not restarted a second time");
    assert_eq!(step_of(&again, "profile")["status"], "COMPLETED");
}

async fn new_steps_only_reopens_completed_users_on_the_added_steps_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let carol_before = users_in_version_1(&app).await;
    let events_before = events_of(&app, "carol", Some("checklist")).await.len();

    let added = ["profile", "tour", "invite", "connect", "feedback"];
    publish_with(&app, "checklist", &added, "NEW_STEPS_ONLY").await;
    let carol = state_of(&app, "carol", "checklist").await;

    assert_eq!(carol["version"], 2);
    assert_eq!(carol["status"], "IN_PROGRESS");
    assert_eq!(
        step_statuses(&carol),
        statuses(&[
            ("profile", "COMPLETED"),
            ("tour", "NOT_STARTED"),
            ("invite", "SKIPPED"),
            ("connect", "COMPLETED"),
            ("feedback", "NOT_STARTED"),
        ])
    );
    for key in CHECKLIST {
        let (now, then) = (step_of(&carol, key), step_of(&carol_before, key));
        assert_eq!(
            (&now["completedAt"], &now["skippedAt"]),
            (&then["completedAt"], &then["skippedAt"]),
            "{key} keeps its time"
        );
    }
    assert_eq!(carol["currentStep"], "tour", "the first added step");
    assert_eq!(carol["currentStepIndex"], 1);
    assert_eq!(carol["doneSteps"], 3);
    assert_eq!(carol["totalSteps"], 5);

    assert_eq!(
        state_of(&app, "carol", "checklist").await,
        carol,
        "read the same again"
    );
    assert_eq!(
        events_of(&app, "carol", Some("checklist")).await.len(),
        events_before,
        "a read writes nothing"
    );
    let toured = write_ok(
        &app,
        Who::User("carol"),
        "completeStep",
        json!({ "flow": "checklist", "step": "tour" }),
    )
    .await;
    assert_eq!(
        toured["revision"].as_i64(),
        carol["revision"].as_i64().map(|r| r + 1)
    );
    let events = events_of(&app, "carol", Some("checklist")).await;
    assert_eq!(
        types(&events)[..2],
        ["STEP_COMPLETED", "REONBOARDED"],
        "the next write stores the policy first"
    );
    assert_eq!(events[1]["version"], 2);
    assert_eq!(events.len(), events_before + 2);

    let bob = state_of(&app, "bob", "checklist").await;
    assert_eq!(
        (bob["version"].clone(), bob["status"].clone()),
        (json!(2), json!("NOT_STARTED"))
    );
    assert_eq!(bob["totalSteps"], 5);
}

async fn completing_the_steps_a_new_version_added_completes_the_flow_again(backend: Backend) {
    let app = spawn_app(backend).await;
    users_in_version_1(&app).await;
    let added = ["profile", "tour", "invite", "connect", "feedback"];
    publish_with(&app, "checklist", &added, "NEW_STEPS_ONLY").await;
    state_of(&app, "carol", "checklist").await;

    let carol = complete(&app, "carol", "tour").await;
    assert_eq!(carol["status"], "IN_PROGRESS");
    assert_eq!(carol["currentStep"], "feedback", "the next step not done");
    let carol = complete(&app, "carol", "feedback").await;

    assert_eq!(carol["status"], "COMPLETED");
    assert!(carol["completedAt"].is_string(), "{carol}");
    assert_eq!(carol["doneSteps"], 5);
    assert_eq!(carol["version"], 2);
    assert_eq!(
        events_of(&app, "carol", Some("checklist")).await[0]["version"],
        2
    );
}

async fn users_who_never_touched_a_flow_start_on_its_latest_version(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("tour", &["one"])).await;
    publish_with(&app, "tour", &["one", "two"], "RESTART_ALL").await;
    publish_with(&app, "tour", &["one", "two", "three"], "KEEP").await;

    let state = write_ok(
        &app,
        Who::User("bob"),
        "startFlow",
        json!({ "flow": "tour" }),
    )
    .await;

    assert_eq!(state["version"], 3);
    assert_eq!(step_keys(&state), ["one", "two", "three"]);
    assert_eq!(state_of(&app, "carol", "tour").await["version"], 3);
}

async fn restart_flow_moves_a_user_kept_on_an_old_version_to_the_latest(backend: Backend) {
    let app = spawn_app(backend).await;
    users_in_version_1(&app).await;
    publish_ok(&app, declaration("checklist", &VERSION_2)).await;
    assert_eq!(state_of(&app, "alice", "checklist").await["version"], 1);

    let restarted = write_ok(
        &app,
        Who::User("alice"),
        "restartFlow",
        json!({ "flow": "checklist" }),
    )
    .await;

    assert_fresh_on_version_2(&restarted);
    assert_eq!(state_of(&app, "alice", "checklist").await, restarted);
}

on_both_backends!(
    keep_leaves_users_in_the_flow_on_their_version_and_its_steps,
    restart_in_progress_restarts_users_in_progress_and_keeps_completed_ones,
    restart_all_restarts_every_user_in_the_flow_on_the_new_version,
    a_policy_is_applied_once_so_progress_made_after_it_is_kept,
    new_steps_only_reopens_completed_users_on_the_added_steps_only,
    completing_the_steps_a_new_version_added_completes_the_flow_again,
    users_who_never_touched_a_flow_start_on_its_latest_version,
    restart_flow_moves_a_user_kept_on_an_old_version_to_the_latest,
);
