//! A user's data: `exportUserData` (the user, or an admin) and
//! `deleteUserData` (admins only), after which the user is as if never seen.

use serde_json::{Value, json};

use super::{
    Who, assert_error, declaration, delete_user_data, events_of, export_user_data, flow_states_of,
    gql, ok, publish_checklist, publish_ok, state_of, step_of, write, write_ok,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

/// Gives `user` two flow states (checklist, onboarding), three events and
/// one idempotency key; returns their checklist state.
async fn some_data(app: &TestApp, user: &str) -> Value {
    let who = Who::User(user);
    write_ok(app, who, "startFlow", json!({ "flow": "checklist" })).await;
    let state = write_ok(
        app,
        who,
        "completeStep",
        json!({
            "flow": "checklist",
            "step": "profile",
            "data": { "role": "developer" },
            "idempotencyKey": "request-1",
        }),
    )
    .await;
    let body = gql(
        app,
        who,
        "mutation { completeOnboarding(step: 1) { id } }",
        json!({}),
    )
    .await;
    ok(body, "completeOnboarding");
    state
}

/// The flows of an export's states, sorted.
fn flows_of(export: &Value) -> Vec<String> {
    let mut flows: Vec<String> = export["flowStates"]
        .as_array()
        .expect("flowStates")
        .iter()
        .map(|state| state["flow"].as_str().expect("a flow").to_owned())
        .collect();
    flows.sort();
    flows
}

async fn export_user_data_returns_every_flow_state_and_event_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    let checklist = some_data(&app, "alice").await;
    some_data(&app, "bob").await;

    let export = ok(
        export_user_data(&app, Who::User("alice"), "alice").await,
        "exportUserData",
    );

    assert_eq!(export["userId"], "alice");
    assert_eq!(
        flows_of(&export),
        ["checklist", "onboarding"],
        "no state for the untouched tour"
    );
    let states = export["flowStates"].as_array().expect("flowStates");
    let exported = super::state_in(states, "checklist");
    assert_eq!(exported, &checklist);
    assert_eq!(
        step_of(exported, "profile")["data"],
        json!({ "role": "developer" })
    );
    assert_eq!(
        super::state_in(states, "onboarding"),
        &state_of(&app, "alice", "onboarding").await
    );
    let events = export["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    assert!(
        events.iter().all(|event| event["userId"] == "alice"),
        "{events:?}"
    );
    let mut exported_ids: Vec<&str> = events
        .iter()
        .map(|event| event["id"].as_str().expect("an id"))
        .collect();
    let listed = events_of(&app, "alice", None).await;
    let mut listed_ids: Vec<&str> = listed
        .iter()
        .map(|event| event["id"].as_str().expect("an id"))
        .collect();
    exported_ids.sort_unstable();
    listed_ids.sort_unstable();
    assert_eq!(exported_ids, listed_ids, "every event of the user");
    let completed = events
        .iter()
        .find(|event| event["type"] == "STEP_COMPLETED")
        .expect("the STEP_COMPLETED event");
    assert_eq!(completed["data"], json!({ "role": "developer" }));
}

async fn a_user_exports_their_own_data_and_an_admin_anyones(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    some_data(&app, "alice").await;

    let body = export_user_data(&app, Who::User("bob"), "alice").await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = export_user_data(&app, Who::Nobody, "alice").await;
    assert_error(&body, "UNAUTHENTICATED", &[]);

    let by_admin = ok(
        export_user_data(&app, Who::Admin, "alice").await,
        "exportUserData",
    );
    let by_alice = ok(
        export_user_data(&app, Who::User("alice"), "alice").await,
        "exportUserData",
    );
    assert_eq!(by_admin, by_alice);
    let query = "{ exportUserData { userId flowStates { id } events { id } } }";
    let own = ok(
        gql(&app, Who::User("alice"), query, json!({})).await,
        "exportUserData",
    );
    assert_eq!(own["userId"], "alice", "without userId: the viewer's own");
    assert_eq!(own["events"].as_array().expect("events").len(), 3);
}

async fn exporting_a_user_with_no_data_gives_empty_lists(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;

    let export = ok(
        export_user_data(&app, Who::Admin, "nobody").await,
        "exportUserData",
    );
    assert_eq!(
        export,
        json!({ "userId": "nobody", "flowStates": [], "events": [] })
    );
    let export = ok(
        export_user_data(&app, Who::User("carol"), "carol").await,
        "exportUserData",
    );
    assert_eq!(
        export,
        json!({ "userId": "carol", "flowStates": [], "events": [] })
    );
    assert_eq!(
        app.db.count_rows("carol").await,
        0,
        "an export writes nothing"
    );
}

async fn delete_user_data_is_for_admins_only(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    some_data(&app, "alice").await;
    let before = ok(
        export_user_data(&app, Who::Admin, "alice").await,
        "exportUserData",
    );

    let body = delete_user_data(&app, Who::User("alice"), "alice").await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = delete_user_data(&app, Who::User("bob"), "alice").await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = delete_user_data(&app, Who::Nobody, "alice").await;
    assert_error(&body, "UNAUTHENTICATED", &[]);

    let after = ok(
        export_user_data(&app, Who::Admin, "alice").await,
        "exportUserData",
    );
    assert_eq!(after, before, "nothing was deleted");
}

async fn delete_user_data_erases_every_row_of_the_user_and_reports_the_counts(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    some_data(&app, "alice").await;
    let alice = Who::User("alice");
    write_ok(
        &app,
        alice,
        "startFlow",
        json!({ "flow": "tour", "idempotencyKey": "request-2" }),
    )
    .await;
    some_data(&app, "bob").await;
    let bob_before = ok(
        export_user_data(&app, Who::Admin, "bob").await,
        "exportUserData",
    );

    let deleted = ok(
        delete_user_data(&app, Who::Admin, "alice").await,
        "deleteUserData",
    );

    assert_eq!(
        deleted,
        json!({ "userId": "alice", "flowStates": 3, "events": 4, "idempotencyKeys": 2 })
    );
    let export = ok(
        export_user_data(&app, Who::Admin, "alice").await,
        "exportUserData",
    );
    assert_eq!(
        export,
        json!({ "userId": "alice", "flowStates": [], "events": [] })
    );
    assert_eq!(
        app.db.count_rows("alice").await,
        0,
        "the onboarding_state row is gone too"
    );
    for state in flow_states_of(&app, "alice").await {
        assert_eq!(state["status"], "NOT_STARTED", "{state}");
        assert_eq!(state["revision"], 0, "{state}");
    }
    // The idempotency keys went too: the same key now applies a new write.
    let again = write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "invite", "idempotencyKey": "request-1" }),
    )
    .await;
    assert_eq!(step_of(&again, "invite")["status"], "COMPLETED");
    assert_eq!(again["revision"], 1);

    let bob_after = ok(
        export_user_data(&app, Who::Admin, "bob").await,
        "exportUserData",
    );
    assert_eq!(bob_after, bob_before, "other users' data is untouched");
}

async fn deleting_a_user_with_no_data_reports_zero_rows(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    some_data(&app, "alice").await;
    ok(
        delete_user_data(&app, Who::Admin, "alice").await,
        "deleteUserData",
    );

    for user in ["alice", "never-seen"] {
        let deleted = ok(
            delete_user_data(&app, Who::Admin, user).await,
            "deleteUserData",
        );
        assert_eq!(
            deleted,
            json!({ "userId": user, "flowStates": 0, "events": 0, "idempotencyKeys": 0 })
        );
    }
    let body = write(
        &app,
        Who::User("alice"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    assert_eq!(
        ok(body, "startFlow")["revision"],
        1,
        "the user starts afresh"
    );
}

on_both_backends!(
    export_user_data_returns_every_flow_state_and_event_of_the_user,
    a_user_exports_their_own_data_and_an_admin_anyones,
    exporting_a_user_with_no_data_gives_empty_lists,
    delete_user_data_is_for_admins_only,
    delete_user_data_erases_every_row_of_the_user_and_reports_the_counts,
    deleting_a_user_with_no_data_reports_zero_rows,
);
