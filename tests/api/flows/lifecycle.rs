//! A user's state in a flow: created on first access, `flowStates`, and what
//! startFlow, completeFlow, dismissFlow, snoozeFlow and restartFlow do to it;
//! who may read and write whose state; an unknown flow.

use serde_json::{Value, json};

use super::{
    STATE, Who, assert_datetime, assert_error, datetime_from_now, declaration, delete_user_data,
    events_of, flow_states_of, gql, ok, publish_checklist, publish_ok, read_state, state_in,
    state_of, statuses, step_statuses, write, write_ok,
};
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

fn checklist() -> Value {
    json!({ "flow": "checklist" })
}

async fn the_first_flow_state_read_creates_a_not_started_state_on_the_latest_version(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("checklist", &["profile", "invite"])).await;
    publish_checklist(&app).await;

    let state = state_of(&app, "alice", "checklist").await;

    assert_eq!(state["id"], "alice/checklist");
    assert_eq!(state["userId"], "alice");
    assert_eq!(state["flow"], "checklist");
    assert_eq!(state["version"], 2, "the latest version");
    assert_eq!(state["status"], "NOT_STARTED");
    assert_eq!(state["currentStepIndex"], 0);
    assert_eq!(state["currentStep"], "profile");
    let fresh_step = |key: &str| json!({ "key": key, "title": format!("Step {key}"), "optional": false, "status": "NOT_STARTED", "completedAt": null, "skippedAt": null, "data": null });
    assert_eq!(
        state["steps"],
        json!([
            fresh_step("profile"),
            fresh_step("invite"),
            fresh_step("connect")
        ])
    );
    assert_eq!(state["doneSteps"], 0);
    assert_eq!(state["totalSteps"], 3);
    for field in ["startedAt", "completedAt", "dismissedAt", "snoozedUntil"] {
        assert_eq!(state[field], Value::Null, "{field}");
    }
    assert_eq!(state["revision"], 0);
    assert_datetime(&state["createdAt"]);
    assert_datetime(&state["updatedAt"]);
}

async fn a_second_flow_state_read_returns_the_same_state_and_records_no_event(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let first = state_of(&app, "alice", "checklist").await;
    let second = state_of(&app, "alice", "checklist").await;

    assert_eq!(first, second);
    assert_eq!(
        events_of(&app, "alice", Some("checklist")).await,
        Vec::<Value>::new()
    );
}

async fn flow_states_lists_every_published_flow_and_onboarding_without_writing(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("tour", &["welcome", "search"])).await;
    publish_checklist(&app).await;

    let states = flow_states_of(&app, "alice").await;

    let mut flows: Vec<&str> = states
        .iter()
        .map(|state| state["flow"].as_str().expect("a flow"))
        .collect();
    flows.sort_unstable();
    assert_eq!(
        flows,
        ["checklist", "onboarding", "tour"],
        "one state per flow"
    );
    for state in &states {
        assert_eq!(state["status"], "NOT_STARTED", "{state}");
        assert_eq!(state["revision"], 0, "{state}");
        assert_eq!(state["userId"], "alice");
        assert_eq!(
            state["id"],
            format!("alice/{}", state["flow"].as_str().unwrap_or_default())
        );
    }
    assert_eq!(state_in(&states, "checklist")["totalSteps"], 3);
    assert_eq!(state_in(&states, "checklist")["currentStep"], "profile");
    assert_eq!(state_in(&states, "tour")["totalSteps"], 2);
    assert_eq!(state_in(&states, "tour")["version"], 1);

    assert_eq!(events_of(&app, "alice", None).await, Vec::<Value>::new());
    let deleted = ok(
        delete_user_data(&app, Who::Admin, "alice").await,
        "deleteUserData",
    );
    assert_eq!(
        deleted["flowStates"], 0,
        "flowStates wrote no rows: {deleted}"
    );
    assert_eq!(deleted["events"], 0);
}

async fn flow_states_shows_the_progress_of_the_flows_a_user_touched(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("tour", &["welcome", "search"])).await;
    publish_checklist(&app).await;
    let started = write_ok(&app, Who::User("alice"), "startFlow", checklist()).await;

    let states = flow_states_of(&app, "alice").await;

    assert_eq!(state_in(&states, "checklist"), &started);
    assert_eq!(state_in(&states, "tour")["status"], "NOT_STARTED");
    let bob = flow_states_of(&app, "bob").await;
    assert_eq!(
        state_in(&bob, "checklist")["status"],
        "NOT_STARTED",
        "alice's progress is hers"
    );
}

async fn start_flow_puts_the_flow_in_progress_and_keeps_its_first_start_time(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let started = write_ok(&app, Who::User("alice"), "startFlow", checklist()).await;

    assert_eq!(started["status"], "IN_PROGRESS");
    assert_datetime(&started["startedAt"]);
    assert_eq!(started["currentStep"], "profile");
    assert_eq!(started["revision"], 1);
    let again = write_ok(&app, Who::User("alice"), "startFlow", checklist()).await;
    assert_eq!(again["status"], "IN_PROGRESS");
    assert_eq!(again["startedAt"], started["startedAt"]);
    assert_eq!(again["revision"], 2);
    assert_eq!(state_of(&app, "alice", "checklist").await, again);
}

async fn start_flow_resumes_a_dismissed_or_snoozed_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let started = write_ok(&app, alice, "startFlow", checklist()).await;

    write_ok(&app, alice, "dismissFlow", checklist()).await;
    let resumed = write_ok(&app, alice, "startFlow", checklist()).await;
    assert_eq!(resumed["status"], "IN_PROGRESS");
    assert_eq!(resumed["startedAt"], started["startedAt"]);

    let until = datetime_from_now(chrono::Duration::days(1));
    write_ok(
        &app,
        alice,
        "snoozeFlow",
        json!({ "flow": "checklist", "until": until }),
    )
    .await;
    let resumed = write_ok(&app, alice, "startFlow", checklist()).await;
    assert_eq!(resumed["status"], "IN_PROGRESS");
    assert_eq!(resumed["startedAt"], started["startedAt"]);

    let dismissed_first = write_ok(&app, Who::User("bob"), "dismissFlow", checklist()).await;
    assert_eq!(dismissed_first["status"], "DISMISSED");
    let resumed = write_ok(&app, Who::User("bob"), "startFlow", checklist()).await;
    assert_eq!(resumed["status"], "IN_PROGRESS");
    assert_datetime(&resumed["startedAt"]);
}

async fn start_flow_leaves_a_completed_flow_completed(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let completed = write_ok(&app, Who::User("alice"), "completeFlow", checklist()).await;

    let started = write_ok(&app, Who::User("alice"), "startFlow", checklist()).await;

    assert_eq!(started["status"], "COMPLETED");
    assert_eq!(started["completedAt"], completed["completedAt"]);
    assert_eq!(started["revision"], 2, "still a write");
}

async fn complete_flow_completes_the_flow_with_its_completion_time(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let completed = write_ok(&app, Who::User("alice"), "completeFlow", checklist()).await;

    assert_eq!(completed["status"], "COMPLETED");
    assert_datetime(&completed["completedAt"]);
    assert_eq!(completed["revision"], 1);
    assert_eq!(
        step_statuses(&completed),
        statuses(&[
            ("profile", "NOT_STARTED"),
            ("invite", "NOT_STARTED"),
            ("connect", "NOT_STARTED")
        ]),
        "completing the flow completes no step"
    );
    assert_eq!(state_of(&app, "alice", "checklist").await, completed);
}

async fn dismiss_flow_dismisses_the_flow_with_its_dismissal_time(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    write_ok(&app, Who::User("alice"), "startFlow", checklist()).await;

    let dismissed = write_ok(&app, Who::User("alice"), "dismissFlow", checklist()).await;

    assert_eq!(dismissed["status"], "DISMISSED");
    assert_datetime(&dismissed["dismissedAt"]);
    assert_eq!(dismissed["completedAt"], Value::Null);
    assert_eq!(dismissed["revision"], 2);
    assert_eq!(state_of(&app, "alice", "checklist").await, dismissed);
}

async fn snooze_flow_snoozes_the_flow_until_the_given_time(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let until = datetime_from_now(chrono::Duration::days(1));

    let snoozed = write_ok(
        &app,
        Who::User("alice"),
        "snoozeFlow",
        json!({ "flow": "checklist", "until": until }),
    )
    .await;

    assert_eq!(snoozed["status"], "SNOOZED");
    assert_eq!(snoozed["snoozedUntil"], until.as_str());
    assert_eq!(snoozed["revision"], 1);
    assert_eq!(state_of(&app, "alice", "checklist").await, snoozed);
    let almost_a_year = datetime_from_now(chrono::Duration::days(364));
    let snoozed = write_ok(
        &app,
        Who::User("alice"),
        "snoozeFlow",
        json!({ "flow": "checklist", "until": almost_a_year }),
    )
    .await;
    assert_eq!(snoozed["snoozedUntil"], almost_a_year.as_str());
}

async fn a_snooze_in_the_past_or_more_than_a_year_ahead_is_refused_and_changes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let before = write_ok(&app, Who::User("alice"), "startFlow", checklist()).await;

    for until in [
        datetime_from_now(-chrono::Duration::minutes(1)),
        datetime_from_now(-chrono::Duration::days(400)),
        datetime_from_now(chrono::Duration::days(367)),
    ] {
        let body = write(
            &app,
            Who::User("alice"),
            "snoozeFlow",
            json!({ "flow": "checklist", "until": until }),
        )
        .await;
        assert_error(&body, "BAD_USER_INPUT", &[]);
    }

    assert_eq!(state_of(&app, "alice", "checklist").await, before);
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 1);
}

async fn a_snooze_ends_by_itself_once_snoozed_until_has_passed(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let snoozed = write_ok(
        &app,
        Who::User("alice"),
        "snoozeFlow",
        json!({ "flow": "checklist", "until": until_text }),
    )
    .await;
    assert_eq!(snoozed["status"], "SNOOZED");

    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(200)).await;

    let state = state_of(&app, "alice", "checklist").await;
    assert_eq!(state["status"], "IN_PROGRESS", "{state}");
    assert_eq!(state["snoozedUntil"], Value::Null);
    let listed = flow_states_of(&app, "alice").await;
    assert_eq!(state_in(&listed, "checklist")["status"], "IN_PROGRESS");
    assert_eq!(state_in(&listed, "checklist")["snoozedUntil"], Value::Null);
}

async fn restart_flow_clears_the_state_back_to_not_started(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let first = state_of(&app, "alice", "checklist").await;
    write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": { "role": "developer" } }),
    )
    .await;
    write_ok(
        &app,
        alice,
        "skipStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    write_ok(&app, alice, "dismissFlow", checklist()).await;
    let until = datetime_from_now(chrono::Duration::days(1));
    let snoozed = write_ok(
        &app,
        alice,
        "snoozeFlow",
        json!({ "flow": "checklist", "until": until }),
    )
    .await;

    let restarted = write_ok(&app, alice, "restartFlow", checklist()).await;

    assert_eq!(restarted["status"], "NOT_STARTED");
    assert_eq!(restarted["version"], 1);
    assert_eq!(restarted["currentStepIndex"], 0);
    assert_eq!(restarted["currentStep"], "profile");
    assert_eq!(restarted["doneSteps"], 0);
    assert_eq!(restarted["totalSteps"], 3);
    for step in restarted["steps"].as_array().expect("steps") {
        assert_eq!(
            step,
            &json!({ "key": step["key"], "title": step["title"], "optional": false, "status": "NOT_STARTED", "completedAt": null, "skippedAt": null, "data": null }),
            "every step is cleared"
        );
    }
    for field in ["startedAt", "completedAt", "dismissedAt", "snoozedUntil"] {
        assert_eq!(restarted[field], Value::Null, "{field}");
    }
    assert_eq!(
        restarted["revision"],
        snoozed["revision"].as_i64().expect("a revision") + 1
    );
    assert_eq!(restarted["createdAt"], first["createdAt"]);
    assert_eq!(state_of(&app, "alice", "checklist").await, restarted);

    write_ok(&app, alice, "completeFlow", checklist()).await;
    let restarted = write_ok(&app, alice, "restartFlow", checklist()).await;
    assert_eq!(restarted["status"], "NOT_STARTED");
    assert_eq!(restarted["completedAt"], Value::Null);
}

async fn a_user_cannot_read_or_write_another_users_flow_state(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let for_bob = json!({ "flow": "checklist", "userId": "bob" });

    let body = read_state(&app, alice, for_bob.clone()).await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = gql(
        &app,
        alice,
        &format!("query($userId: String) {{ flowStates(userId: $userId) {{ {STATE} }} }}"),
        json!({ "userId": "bob" }),
    )
    .await;
    assert_error(&body, "FORBIDDEN", &[]);
    let until = datetime_from_now(chrono::Duration::days(1));
    let writes = [
        ("startFlow", for_bob.clone()),
        (
            "completeStep",
            json!({ "flow": "checklist", "step": "profile", "userId": "bob" }),
        ),
        (
            "skipStep",
            json!({ "flow": "checklist", "step": "profile", "userId": "bob" }),
        ),
        (
            "goToStep",
            json!({ "flow": "checklist", "step": "invite", "userId": "bob" }),
        ),
        ("completeFlow", for_bob.clone()),
        ("dismissFlow", for_bob.clone()),
        (
            "snoozeFlow",
            json!({ "flow": "checklist", "until": until, "userId": "bob" }),
        ),
        ("restartFlow", for_bob.clone()),
    ];
    for (field, args) in &writes {
        let body = write(&app, alice, field, args.clone()).await;
        assert_error(&body, "FORBIDDEN", &[]);
    }
    let deleted = ok(
        delete_user_data(&app, Who::Admin, "bob").await,
        "deleteUserData",
    );
    assert_eq!(
        (&deleted["flowStates"], &deleted["events"]),
        (&json!(0), &json!(0)),
        "nothing was written for bob"
    );
}

async fn an_anonymous_request_is_unauthenticated_for_flow_states(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let body = read_state(&app, Who::Nobody, checklist()).await;
    assert_error(&body, "UNAUTHENTICATED", &[]);
    let body = gql(&app, Who::Nobody, "{ flowStates { id } }", json!({})).await;
    assert_error(&body, "UNAUTHENTICATED", &[]);
    let body = write(&app, Who::Nobody, "startFlow", checklist()).await;
    assert_error(&body, "UNAUTHENTICATED", &[]);
}

async fn an_admin_reads_and_writes_any_users_flow_state(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let started = write_ok(
        &app,
        Who::Admin,
        "startFlow",
        json!({ "flow": "checklist", "userId": "bob" }),
    )
    .await;

    assert_eq!(started["id"], "bob/checklist");
    assert_eq!(started["userId"], "bob");
    assert_eq!(started["status"], "IN_PROGRESS");
    assert_eq!(state_of(&app, "bob", "checklist").await, started);
    let read = ok(
        read_state(
            &app,
            Who::Admin,
            json!({ "flow": "checklist", "userId": "bob" }),
        )
        .await,
        "flowState",
    );
    assert_eq!(read, started);
    let query = format!("query($userId: String) {{ flowStates(userId: $userId) {{ {STATE} }} }}");
    let listed = ok(
        gql(&app, Who::Admin, &query, json!({ "userId": "bob" })).await,
        "flowStates",
    );
    assert_eq!(
        state_in(listed.as_array().expect("a list"), "checklist"),
        &started
    );
    let admins_own = state_of(&app, super::ADMIN, "checklist").await;
    assert_eq!(
        admins_own["status"], "NOT_STARTED",
        "the admin's own state is apart"
    );
}

async fn an_unknown_flow_is_bad_user_input_naming_the_flow_in_every_operation(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let unknown = json!({ "flow": "no-such-flow" });
    let with_step = json!({ "flow": "no-such-flow", "step": "profile" });
    let until = datetime_from_now(chrono::Duration::days(1));

    let body = read_state(&app, alice, unknown.clone()).await;
    assert_error(&body, "BAD_USER_INPUT", &["no-such-flow"]);
    let body = super::events_page(&app, alice, unknown.clone()).await;
    assert_error(&body, "BAD_USER_INPUT", &["no-such-flow"]);
    let writes = [
        ("startFlow", unknown.clone()),
        ("completeStep", with_step.clone()),
        ("skipStep", with_step.clone()),
        ("goToStep", with_step),
        ("completeFlow", unknown.clone()),
        ("dismissFlow", unknown.clone()),
        (
            "snoozeFlow",
            json!({ "flow": "no-such-flow", "until": until }),
        ),
        ("restartFlow", unknown),
    ];
    for (field, args) in writes {
        let body = write(&app, alice, field, args).await;
        assert_error(&body, "BAD_USER_INPUT", &["no-such-flow"]);
    }
    assert_eq!(events_of(&app, "alice", None).await, Vec::<Value>::new());
}

async fn a_completed_flow_stays_completed_when_dismissed_and_refuses_a_snooze(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let completed = write_ok(&app, alice, "completeFlow", checklist()).await;

    let dismissed = write_ok(&app, alice, "dismissFlow", checklist()).await;
    assert_eq!(dismissed["status"], "COMPLETED", "{dismissed}");
    assert_eq!(dismissed["completedAt"], completed["completedAt"]);
    assert_datetime(&dismissed["dismissedAt"]);
    assert_eq!(dismissed["revision"], 2);

    let until = datetime_from_now(chrono::Duration::days(1));
    let body = super::write(
        &app,
        alice,
        "snoozeFlow",
        json!({ "flow": "checklist", "until": until }),
    )
    .await;
    super::assert_error(&body, "BAD_USER_INPUT", &["completed", "restartFlow"]);

    let started = write_ok(&app, alice, "startFlow", checklist()).await;
    assert_eq!(started["status"], "COMPLETED");
    assert_eq!(started["completedAt"], completed["completedAt"]);
    assert_eq!(started["revision"], 3, "the refused snooze wrote nothing");

    let restarted = write_ok(&app, alice, "restartFlow", checklist()).await;
    assert_eq!(
        (&restarted["status"], &restarted["completedAt"]),
        (&json!("NOT_STARTED"), &Value::Null)
    );
}

on_both_backends!(
    a_completed_flow_stays_completed_when_dismissed_and_refuses_a_snooze,
    the_first_flow_state_read_creates_a_not_started_state_on_the_latest_version,
    a_second_flow_state_read_returns_the_same_state_and_records_no_event,
    flow_states_lists_every_published_flow_and_onboarding_without_writing,
    flow_states_shows_the_progress_of_the_flows_a_user_touched,
    start_flow_puts_the_flow_in_progress_and_keeps_its_first_start_time,
    start_flow_resumes_a_dismissed_or_snoozed_flow,
    start_flow_leaves_a_completed_flow_completed,
    complete_flow_completes_the_flow_with_its_completion_time,
    dismiss_flow_dismisses_the_flow_with_its_dismissal_time,
    snooze_flow_snoozes_the_flow_until_the_given_time,
    a_snooze_in_the_past_or_more_than_a_year_ahead_is_refused_and_changes_nothing,
    a_snooze_ends_by_itself_once_snoozed_until_has_passed,
    restart_flow_clears_the_state_back_to_not_started,
    a_user_cannot_read_or_write_another_users_flow_state,
    an_anonymous_request_is_unauthenticated_for_flow_states,
    an_admin_reads_and_writes_any_users_flow_state,
    an_unknown_flow_is_bad_user_input_naming_the_flow_in_every_operation,
);
