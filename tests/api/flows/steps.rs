//! Steps: completeStep, skipStep and goToStep, where the current step goes,
//! when a flow completes, and the data a step carries.

use serde_json::{Value, json};

use super::{
    Who, assert_datetime, assert_error, datetime_from_now, declaration, events_of,
    publish_checklist, publish_ok, state_of, statuses, step_of, step_statuses, write, write_ok,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

async fn complete(app: &TestApp, user: &str, flow: &str, step: &str) -> Value {
    write_ok(
        app,
        Who::User(user),
        "completeStep",
        json!({ "flow": flow, "step": step }),
    )
    .await
}

async fn skip(app: &TestApp, user: &str, flow: &str, step: &str) -> Value {
    write_ok(
        app,
        Who::User(user),
        "skipStep",
        json!({ "flow": flow, "step": step }),
    )
    .await
}

/// `(currentStepIndex, currentStep)` of a state.
fn current(state: &Value) -> (Value, Value) {
    (
        state["currentStepIndex"].clone(),
        state["currentStep"].clone(),
    )
}

async fn complete_step_completes_the_step_and_moves_to_the_next_one(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let state = complete(&app, "alice", "checklist", "profile").await;

    assert_eq!(state["status"], "IN_PROGRESS");
    assert_datetime(&state["startedAt"]);
    let profile = step_of(&state, "profile");
    assert_eq!(profile["status"], "COMPLETED");
    assert_datetime(&profile["completedAt"]);
    assert_eq!(profile["skippedAt"], Value::Null);
    assert_eq!(profile["data"], Value::Null);
    assert_eq!(
        step_statuses(&state),
        statuses(&[
            ("profile", "COMPLETED"),
            ("invite", "NOT_STARTED"),
            ("connect", "NOT_STARTED")
        ])
    );
    assert_eq!(current(&state), (json!(1), json!("invite")));
    assert_eq!(state["doneSteps"], 1);
    assert_eq!(state["totalSteps"], 3);
    assert_eq!(state["completedAt"], Value::Null);
    assert_eq!(state["revision"], 1);
    assert_eq!(state_of(&app, "alice", "checklist").await, state);
}

async fn completing_the_last_required_step_completes_the_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(
        &app,
        json!({
            "key": "checklist",
            "title": "Checklist",
            "steps": [
                { "key": "profile", "title": "Profile" },
                { "key": "invite", "title": "Invite", "optional": true },
                { "key": "connect", "title": "Connect" },
            ],
        }),
    )
    .await;

    let state = complete(&app, "alice", "checklist", "profile").await;
    assert_eq!(state["status"], "IN_PROGRESS");
    let state = complete(&app, "alice", "checklist", "connect").await;

    assert_eq!(
        state["status"], "COMPLETED",
        "the optional step is not needed"
    );
    assert_datetime(&state["completedAt"]);
    assert_eq!(state["doneSteps"], 2);
    assert_eq!(state["totalSteps"], 3);
    assert_eq!(step_of(&state, "invite")["status"], "NOT_STARTED");
    assert_eq!(
        current(&state),
        (json!(1), json!("invite")),
        "the first step not done"
    );
    assert_eq!(state_of(&app, "alice", "checklist").await, state);
}

async fn the_current_step_moves_to_the_next_step_not_done_then_back_to_the_first(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("tour", &["a", "b", "c", "d"])).await;

    let state = complete(&app, "alice", "tour", "c").await;
    assert_eq!(current(&state), (json!(3), json!("d")), "the next step");
    let state = complete(&app, "alice", "tour", "d").await;
    assert_eq!(
        current(&state),
        (json!(0), json!("a")),
        "none after: the first not done"
    );
    let state = skip(&app, "alice", "tour", "a").await;
    assert_eq!(current(&state), (json!(1), json!("b")));
    assert_eq!(state["status"], "IN_PROGRESS");
    let state = complete(&app, "alice", "tour", "b").await;

    assert_eq!(
        current(&state),
        (json!(4), Value::Null),
        "every step is done"
    );
    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(state["doneSteps"], 4);
}

async fn skip_step_skips_the_step_and_counts_it_as_done(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let state = skip(&app, "alice", "checklist", "profile").await;

    assert_eq!(state["status"], "IN_PROGRESS");
    assert_datetime(&state["startedAt"]);
    let profile = step_of(&state, "profile");
    assert_eq!(profile["status"], "SKIPPED");
    assert_datetime(&profile["skippedAt"]);
    assert_eq!(profile["completedAt"], Value::Null);
    assert_eq!(state["doneSteps"], 1);
    assert_eq!(current(&state), (json!(1), json!("invite")));
    assert_eq!(state["revision"], 1);

    skip(&app, "alice", "checklist", "invite").await;
    let state = skip(&app, "alice", "checklist", "connect").await;
    assert_eq!(state["status"], "COMPLETED", "skipped steps are done");
    assert_datetime(&state["completedAt"]);
    assert_eq!(state["doneSteps"], 3);
    assert_eq!(current(&state), (json!(3), Value::Null));
}

async fn a_repeated_complete_step_keeps_its_time_and_data_unless_new_data_is_given(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let first = write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": { "role": "developer" } }),
    )
    .await;
    assert_eq!(
        step_of(&first, "profile")["data"],
        json!({ "role": "developer" })
    );

    let repeat = complete(&app, "alice", "checklist", "profile").await;
    assert_eq!(
        step_of(&repeat, "profile"),
        step_of(&first, "profile"),
        "time and data kept"
    );
    assert_eq!(repeat["revision"], 2, "a repeat is still a write");

    let replaced = write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": { "role": "designer", "team": 4 } }),
    )
    .await;
    let profile = step_of(&replaced, "profile");
    assert_eq!(
        profile["data"],
        json!({ "role": "designer", "team": 4 }),
        "data replaced"
    );
    assert_eq!(
        profile["completedAt"],
        step_of(&first, "profile")["completedAt"]
    );
    assert_eq!(replaced["revision"], 3);
    assert_eq!(replaced["doneSteps"], 1);
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 3);
    assert_eq!(state_of(&app, "alice", "checklist").await, replaced);
}

async fn a_flow_whose_steps_are_all_optional_is_completed_only_by_complete_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(
        &app,
        json!({
            "key": "tips",
            "title": "Tips",
            "steps": [
                { "key": "shortcuts", "title": "Shortcuts", "optional": true },
                { "key": "themes", "title": "Themes", "optional": true },
            ],
        }),
    )
    .await;

    complete(&app, "alice", "tips", "shortcuts").await;
    let state = complete(&app, "alice", "tips", "themes").await;

    assert_eq!(state["status"], "IN_PROGRESS");
    assert_eq!(state["completedAt"], Value::Null);
    assert_eq!(state["doneSteps"], 2);
    assert_eq!(current(&state), (json!(2), Value::Null));
    let completed = write_ok(
        &app,
        Who::User("alice"),
        "completeFlow",
        json!({ "flow": "tips" }),
    )
    .await;
    assert_eq!(completed["status"], "COMPLETED");
    assert_datetime(&completed["completedAt"]);
}

async fn go_to_step_sets_the_current_step_and_puts_the_flow_in_progress(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");

    let state = write_ok(
        &app,
        alice,
        "goToStep",
        json!({ "flow": "checklist", "step": "connect" }),
    )
    .await;

    assert_eq!(state["status"], "IN_PROGRESS");
    assert_eq!(current(&state), (json!(2), json!("connect")));
    assert_eq!(
        step_statuses(&state),
        statuses(&[
            ("profile", "NOT_STARTED"),
            ("invite", "NOT_STARTED"),
            ("connect", "NOT_STARTED")
        ]),
        "going to a step completes nothing"
    );
    assert_eq!(state["revision"], 1);
    let state = write_ok(
        &app,
        alice,
        "goToStep",
        json!({ "flow": "checklist", "step": "profile" }),
    )
    .await;
    assert_eq!(
        current(&state),
        (json!(0), json!("profile")),
        "back to an earlier step"
    );
    assert_eq!(state_of(&app, "alice", "checklist").await, state);

    write_ok(&app, alice, "dismissFlow", json!({ "flow": "checklist" })).await;
    let state = write_ok(
        &app,
        alice,
        "goToStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    assert_eq!(
        state["status"], "IN_PROGRESS",
        "a dismissed flow is resumed"
    );
}

async fn go_to_step_leaves_a_completed_flow_completed(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let completed = write_ok(&app, alice, "completeFlow", json!({ "flow": "checklist" })).await;

    let state = write_ok(
        &app,
        alice,
        "goToStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;

    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(state["completedAt"], completed["completedAt"]);
    assert_eq!(current(&state), (json!(1), json!("invite")));
}

async fn completing_or_skipping_a_step_resumes_a_not_started_dismissed_or_snoozed_flow(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    write_ok(
        &app,
        Who::User("dismissed"),
        "dismissFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    let until = datetime_from_now(chrono::Duration::days(1));
    write_ok(
        &app,
        Who::User("snoozed"),
        "snoozeFlow",
        json!({ "flow": "checklist", "until": until }),
    )
    .await;

    for user in ["fresh", "dismissed", "snoozed"] {
        let state = complete(&app, user, "checklist", "profile").await;
        assert_eq!(state["status"], "IN_PROGRESS", "{user}: {state}");
        assert_datetime(&state["startedAt"]);
        assert_eq!(step_of(&state, "profile")["status"], "COMPLETED");
    }
    write_ok(
        &app,
        Who::User("dismissed"),
        "dismissFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    let state = skip(&app, "dismissed", "checklist", "invite").await;
    assert_eq!(state["status"], "IN_PROGRESS", "skipping resumes too");
}

async fn step_data_is_a_json_object_that_reads_back_as_it_was_given(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let data = json!({
        "role": "developer",
        "answers": { "teamSize": 12, "tools": ["git", "rust"], "ratio": 0.5 },
        "consent": true,
        "note": null,
        "unicode": "héllo ✓",
    });

    let state = write_ok(
        &app,
        Who::User("alice"),
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": data }),
    )
    .await;

    assert_eq!(step_of(&state, "profile")["data"], data);
    let read = state_of(&app, "alice", "checklist").await;
    assert_eq!(step_of(&read, "profile")["data"], data);
}

async fn step_data_that_is_not_an_object_or_over_4_kib_is_refused_and_changes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let before = state_of(&app, "alice", "checklist").await;
    // `{"a":"xxx…"}` is 8 bytes around the string.
    let object_of = |bytes: usize| json!({ "a": "x".repeat(bytes - 8) });
    assert_eq!(
        serde_json::to_string(&object_of(4097)).expect("JSON").len(),
        4097
    );

    for data in [
        json!(["a", "list"]),
        json!("a string"),
        json!(42),
        json!(true),
        object_of(4097),
        object_of(10_000),
    ] {
        let body = write(
            &app,
            Who::User("alice"),
            "completeStep",
            json!({ "flow": "checklist", "step": "profile", "data": data }),
        )
        .await;
        assert_error(&body, "BAD_USER_INPUT", &[]);
    }

    assert_eq!(state_of(&app, "alice", "checklist").await, before);
    assert_eq!(
        events_of(&app, "alice", Some("checklist")).await,
        Vec::<Value>::new()
    );
    let largest = object_of(4096);
    let state = write_ok(
        &app,
        Who::User("alice"),
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": largest }),
    )
    .await;
    assert_eq!(
        step_of(&state, "profile")["data"],
        largest,
        "4 KiB is allowed"
    );
}

async fn an_unknown_step_is_bad_user_input_listing_the_valid_steps(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let before = state_of(&app, "alice", "checklist").await;

    for field in ["completeStep", "skipStep", "goToStep"] {
        let body = write(
            &app,
            Who::User("alice"),
            field,
            json!({ "flow": "checklist", "step": "no-such-step" }),
        )
        .await;
        assert_error(&body, "BAD_USER_INPUT", &["profile", "invite", "connect"]);
    }

    assert_eq!(state_of(&app, "alice", "checklist").await, before);
}

on_both_backends!(
    complete_step_completes_the_step_and_moves_to_the_next_one,
    completing_the_last_required_step_completes_the_flow,
    the_current_step_moves_to_the_next_step_not_done_then_back_to_the_first,
    skip_step_skips_the_step_and_counts_it_as_done,
    a_repeated_complete_step_keeps_its_time_and_data_unless_new_data_is_given,
    a_flow_whose_steps_are_all_optional_is_completed_only_by_complete_flow,
    go_to_step_sets_the_current_step_and_puts_the_flow_in_progress,
    go_to_step_leaves_a_completed_flow_completed,
    completing_or_skipping_a_step_resumes_a_not_started_dismissed_or_snoozed_flow,
    step_data_is_a_json_object_that_reads_back_as_it_was_given,
    step_data_that_is_not_an_object_or_over_4_kib_is_refused_and_changes_nothing,
    an_unknown_step_is_bad_user_input_listing_the_valid_steps,
);
