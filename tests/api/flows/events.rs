//! The audit trail: one event per change, who made it, in which request, and
//! `flowEvents` paging through them newest first.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{
    ADMIN, STATE, Who, all_events, assert_datetime, assert_error, datetime_from_now, declaration,
    events_of, events_page, gql, gql_with_request_id, ok, operation, publish_checklist, publish_ok,
    types, write_ok,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

/// `n` writes by `user` to `checklist`, each appending one event.
async fn writes(app: &TestApp, user: &str, n: usize) {
    for i in 0..n {
        let step = super::CHECKLIST[i % 3];
        write_ok(
            app,
            Who::User(user),
            "goToStep",
            json!({ "flow": "checklist", "step": step }),
        )
        .await;
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["id"].as_str().expect("an id").to_owned())
        .collect()
}

async fn every_write_appends_one_event_of_its_type_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let until = datetime_from_now(chrono::Duration::days(1));
    let sequence = [
        ("startFlow", json!({ "flow": "checklist" }), "FLOW_STARTED"),
        (
            "completeStep",
            json!({ "flow": "checklist", "step": "profile" }),
            "STEP_COMPLETED",
        ),
        (
            "skipStep",
            json!({ "flow": "checklist", "step": "invite" }),
            "STEP_SKIPPED",
        ),
        (
            "goToStep",
            json!({ "flow": "checklist", "step": "profile" }),
            "STEP_SET",
        ),
        (
            "dismissFlow",
            json!({ "flow": "checklist" }),
            "FLOW_DISMISSED",
        ),
        (
            "snoozeFlow",
            json!({ "flow": "checklist", "until": until }),
            "FLOW_SNOOZED",
        ),
        (
            "completeFlow",
            json!({ "flow": "checklist" }),
            "FLOW_COMPLETED",
        ),
        (
            "restartFlow",
            json!({ "flow": "checklist" }),
            "FLOW_RESTARTED",
        ),
    ];

    for (field, args, _) in &sequence {
        write_ok(&app, alice, field, args.clone()).await;
    }

    let events = events_of(&app, "alice", Some("checklist")).await;
    let expected: Vec<&str> = sequence.iter().rev().map(|(_, _, kind)| *kind).collect();
    assert_eq!(types(&events), expected, "newest first");
    for event in &events {
        assert_eq!(event["userId"], "alice", "{event}");
        assert_eq!(event["flow"], "checklist");
        assert_eq!(event["version"], 1);
        assert_eq!(event["actor"], "alice");
        assert_datetime(&event["at"]);
    }
    let times: Vec<&str> = events
        .iter()
        .map(|event| event["at"].as_str().unwrap_or_default())
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {times:?}"
    );
    let distinct: BTreeSet<String> = ids(&events).into_iter().collect();
    assert_eq!(distinct.len(), events.len(), "every event has its own id");
}

async fn step_events_carry_the_step_key_and_the_step_data(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let data = json!({ "role": "developer", "answers": [1, 2] });
    write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": data }),
    )
    .await;
    write_ok(
        &app,
        alice,
        "skipStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    write_ok(
        &app,
        alice,
        "goToStep",
        json!({ "flow": "checklist", "step": "connect" }),
    )
    .await;

    let events = events_of(&app, "alice", Some("checklist")).await;

    assert_eq!(
        types(&events),
        ["STEP_SET", "STEP_SKIPPED", "STEP_COMPLETED"]
    );
    assert_eq!(events[0]["step"], "connect");
    assert_eq!(events[1]["step"], "invite");
    assert_eq!(events[2]["step"], "profile");
    assert_eq!(events[2]["data"], data);
}

async fn an_event_records_its_actor_and_the_request_id_of_its_response(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let args = json!({ "flow": "checklist" });
    let query = operation("mutation", "startFlow", &args, STATE);
    let (body, users_request) = gql_with_request_id(&app, Who::User("alice"), &query, args).await;
    ok(body, "startFlow");

    let args = json!({ "flow": "checklist", "step": "profile", "userId": "alice" });
    let query = operation("mutation", "completeStep", &args, STATE);
    let (body, admins_request) = gql_with_request_id(&app, Who::Admin, &query, args).await;
    ok(body, "completeStep");

    let events = events_of(&app, "alice", Some("checklist")).await;
    assert_eq!(types(&events), ["STEP_COMPLETED", "FLOW_STARTED"]);
    assert_eq!(events[1]["actor"], "alice");
    assert_eq!(events[1]["requestId"], users_request.as_str());
    assert_eq!(events[0]["actor"], ADMIN, "the admin who acted for alice");
    assert_eq!(events[0]["userId"], "alice");
    assert_eq!(events[0]["requestId"], admins_request.as_str());
    assert_ne!(users_request, admins_request);
}

async fn flow_events_pages_newest_first_without_repeating_or_missing_an_event(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    writes(&app, "alice", 9).await;
    let everything = events_of(&app, "alice", Some("checklist")).await;
    assert_eq!(everything.len(), 9);

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = json!({ "flow": "checklist", "first": 2 });
        if let Some(cursor) = &after {
            args["after"] = json!(cursor);
        }
        let page = ok(
            events_page(&app, Who::User("alice"), args).await,
            "flowEvents",
        );
        pages += 1;
        let edges = page["edges"].as_array().expect("edges");
        assert!(edges.len() <= 2, "at most `first` events: {page}");
        for edge in edges {
            assert!(edge["cursor"].is_string(), "{edge}");
            paged.push(edge["node"].clone());
        }
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(
            page["pageInfo"]["endCursor"],
            edges.last().expect("a full page")["cursor"]
        );
        after = Some(
            page["pageInfo"]["endCursor"]
                .as_str()
                .expect("an endCursor")
                .to_owned(),
        );
        assert!(pages < 20, "paging ends");
    }

    assert_eq!(pages, 5, "9 events, 2 a page");
    assert_eq!(
        ids(&paged),
        ids(&everything),
        "none repeated, none missing, newest first"
    );
}

async fn flow_events_lists_20_events_unless_told_otherwise(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    writes(&app, "alice", 25).await;

    let page = ok(
        events_page(&app, Who::User("alice"), json!({ "flow": "checklist" })).await,
        "flowEvents",
    );
    assert_eq!(page["edges"].as_array().expect("edges").len(), 20);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let after = page["pageInfo"]["endCursor"].clone();
    let rest = ok(
        events_page(
            &app,
            Who::User("alice"),
            json!({ "flow": "checklist", "after": after }),
        )
        .await,
        "flowEvents",
    );
    assert_eq!(rest["edges"].as_array().expect("edges").len(), 5);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
}

async fn flow_events_without_a_flow_lists_the_users_events_in_every_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    let alice = Who::User("alice");
    write_ok(&app, alice, "startFlow", json!({ "flow": "checklist" })).await;
    write_ok(&app, alice, "startFlow", json!({ "flow": "tour" })).await;
    gql(
        &app,
        alice,
        "mutation { completeOnboarding(step: 1) { id } }",
        json!({}),
    )
    .await;
    write_ok(
        &app,
        Who::User("bob"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;

    let events = events_of(&app, "alice", None).await;

    let flows: Vec<&str> = events
        .iter()
        .map(|event| event["flow"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(flows, ["onboarding", "tour", "checklist"], "newest first");
    assert_eq!(
        types(&events),
        ["FLOW_COMPLETED", "FLOW_STARTED", "FLOW_STARTED"]
    );
    assert!(
        events.iter().all(|event| event["userId"] == "alice"),
        "only alice's"
    );
}

async fn a_user_cannot_read_another_users_events_but_an_admin_can(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    writes(&app, "bob", 2).await;

    let body = events_page(&app, Who::User("alice"), json!({ "userId": "bob" })).await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = events_page(
        &app,
        Who::User("alice"),
        json!({ "flow": "checklist", "userId": "bob" }),
    )
    .await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = events_page(&app, Who::Nobody, json!({ "flow": "checklist" })).await;
    assert_error(&body, "UNAUTHENTICATED", &[]);

    let bobs = all_events(
        &app,
        Who::Admin,
        json!({ "flow": "checklist", "userId": "bob" }),
    )
    .await;
    assert_eq!(types(&bobs), ["STEP_SET", "STEP_SET"]);
    assert!(
        bobs.iter()
            .all(|event| event["userId"] == "bob" && event["actor"] == "bob")
    );
    assert_eq!(
        all_events(&app, Who::Admin, json!({ "userId": "bob" }))
            .await
            .len(),
        2
    );
}

async fn first_outside_1_to_100_is_bad_user_input(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    writes(&app, "alice", 3).await;

    for first in [0, -1, 101, 1000] {
        let body = events_page(
            &app,
            Who::User("alice"),
            json!({ "flow": "checklist", "first": first }),
        )
        .await;
        assert_error(&body, "BAD_USER_INPUT", &[]);
    }
    for (first, listed) in [(1, 1), (100, 3)] {
        let page = ok(
            events_page(
                &app,
                Who::User("alice"),
                json!({ "flow": "checklist", "first": first }),
            )
            .await,
            "flowEvents",
        );
        assert_eq!(
            page["edges"].as_array().expect("edges").len(),
            listed,
            "first: {first}"
        );
    }
}

async fn an_event_carries_the_version_of_the_state_it_changed(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    write_ok(
        &app,
        Who::User("alice"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    publish_ok(
        &app,
        declaration("checklist", &["profile", "invite", "connect", "feedback"]),
    )
    .await;

    let alice = write_ok(
        &app,
        Who::User("alice"),
        "goToStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    let bob = write_ok(
        &app,
        Who::User("bob"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;

    assert_eq!((&alice["version"], &bob["version"]), (&json!(1), &json!(2)));
    let alices = events_of(&app, "alice", Some("checklist")).await;
    assert!(
        alices.iter().all(|event| event["version"] == 1),
        "{alices:?}"
    );
    assert_eq!(
        events_of(&app, "bob", Some("checklist")).await[0]["version"],
        2
    );
}

async fn completing_or_skipping_the_last_required_step_also_records_flow_completed(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let (alice, bob) = (Who::User("alice"), Who::User("bob"));
    for step in ["profile", "invite", "connect"] {
        let args = json!({ "flow": "checklist", "step": step });
        write_ok(&app, alice, "completeStep", args).await;
    }
    let events = events_of(&app, "alice", Some("checklist")).await;
    assert_eq!(
        types(&events),
        [
            "FLOW_COMPLETED",
            "STEP_COMPLETED",
            "STEP_COMPLETED",
            "STEP_COMPLETED"
        ]
    );
    assert_eq!(events[0]["step"], Value::Null);
    assert_eq!(events[0]["at"], events[1]["at"], "one write, one time");

    let again = json!({ "flow": "checklist", "step": "connect" });
    write_ok(&app, alice, "completeStep", again).await;
    let events = events_of(&app, "alice", Some("checklist")).await;
    assert_eq!(types(&events)[..2], ["STEP_COMPLETED", "FLOW_COMPLETED"]);

    for step in ["profile", "invite"] {
        let args = json!({ "flow": "checklist", "step": step });
        write_ok(&app, bob, "completeStep", args).await;
    }
    let args = json!({ "flow": "checklist", "step": "connect" });
    let state = write_ok(&app, bob, "skipStep", args).await;
    assert_eq!(state["status"], "COMPLETED");
    let events = events_of(&app, "bob", Some("checklist")).await;
    assert_eq!(types(&events)[..2], ["FLOW_COMPLETED", "STEP_SKIPPED"]);
}

on_both_backends!(
    completing_or_skipping_the_last_required_step_also_records_flow_completed,
    every_write_appends_one_event_of_its_type_newest_first,
    step_events_carry_the_step_key_and_the_step_data,
    an_event_records_its_actor_and_the_request_id_of_its_response,
    flow_events_pages_newest_first_without_repeating_or_missing_an_event,
    flow_events_lists_20_events_unless_told_otherwise,
    flow_events_without_a_flow_lists_the_users_events_in_every_flow,
    a_user_cannot_read_another_users_events_but_an_admin_can,
    first_outside_1_to_100_is_bad_user_input,
    an_event_carries_the_version_of_the_state_it_changed,
);
