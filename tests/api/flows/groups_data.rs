//! A group's data (design/groups.md, erasure): `exportGroupData` (members,
//! admins), `deleteGroupData` (admins), the command line's `groups export`
//! and `groups delete`, and a member's erasure, which anonymizes them in
//! the groups' histories and keeps the groups' states.

use std::process::Output;

use serde_json::{Value, json};

use super::{
    EVENT, STATE, Who, all_events, assert_error, declaration, export_user_data, gql, ok,
    publish_ok, read_state, send, write_ok,
};
use crate::helpers::{Backend, TestApp, command, spawn_app};
use crate::on_both_backends;

const ANN: Who = Who::Member("ann", &["acme"]);
const BOB: Who = Who::Member("bob", &["acme"]);

/// A GROUP flow `setup`, and a USER flow `tour`; Ann and Bob write acme's
/// state (Ann with data and a key), Ann her own tour, and globex has one write.
async fn some_group_data(app: &TestApp) {
    let mut setup = declaration("setup", &["profile", "invite", "billing"]);
    setup["scope"] = json!("GROUP");
    publish_ok(app, setup).await;
    publish_ok(app, declaration("tour", &["welcome"])).await;
    write_ok(
        app,
        ANN,
        "completeStep",
        json!({
            "flow": "setup", "step": "profile", "data": { "company": "Acme" },
            "idempotencyKey": "ann-1",
        }),
    )
    .await;
    write_ok(
        app,
        BOB,
        "completeStep",
        json!({ "flow": "setup", "step": "invite" }),
    )
    .await;
    write_ok(app, ANN, "startFlow", json!({ "flow": "tour" })).await;
    write_ok(
        app,
        Who::Member("gus", &["globex"]),
        "startFlow",
        json!({ "flow": "setup" }),
    )
    .await;
}

async fn export_group(app: &TestApp, who: Who<'_>, group: &str) -> Value {
    let query = format!(
        "query($groupId: String!) {{ exportGroupData(groupId: $groupId) {{ groupId \
         flowStates {{ {STATE} groupId }} events {{ {EVENT} groupId }} \
         eventsPageInfo {{ hasNextPage }} }} }}"
    );
    gql(app, who, &query, json!({ "groupId": group })).await
}

async fn delete_group(app: &TestApp, who: Who<'_>, group: &str) -> Value {
    let query = "mutation($groupId: String!) { deleteGroupData(groupId: $groupId) { \
        groupId flowStates events idempotencyKeys } }";
    gql(app, who, query, json!({ "groupId": group })).await
}

async fn members_and_admins_export_a_groups_data(backend: Backend) {
    let app = spawn_app(backend).await;
    some_group_data(&app).await;
    for who in [BOB, Who::Admin] {
        let export = ok(export_group(&app, who, "acme").await, "exportGroupData");
        assert_eq!(export["groupId"], "acme");
        let states = export["flowStates"].as_array().expect("states");
        assert_eq!(states.len(), 1, "only acme's GROUP flow: {export}");
        assert_eq!(states[0]["flow"], "setup");
        assert_eq!(states[0]["groupId"], "acme");
        let events = export["events"].as_array().expect("events");
        assert_eq!(events.len(), 2, "{export}");
        assert!(events.iter().all(|event| event["groupId"] == "acme"));
        assert!(
            export.to_string().contains("Acme"),
            "the step data: {export}"
        );
        assert_eq!(export["eventsPageInfo"]["hasNextPage"], false);
    }
    let outsider = export_group(&app, Who::Member("gus", &["globex"]), "acme").await;
    assert_error(&outsider, "FORBIDDEN", &[]);

    // A member's own export holds the group events they made.
    let export = ok(
        export_user_data(&app, Who::Admin, "ann").await,
        "exportUserData",
    );
    let events = export["events"].as_array().expect("events");
    let flows: Vec<&str> = events
        .iter()
        .map(|event| event["flow"].as_str().unwrap_or_default())
        .collect();
    assert!(
        flows.contains(&"tour") && flows.contains(&"setup"),
        "{export}"
    );
    assert!(
        events
            .iter()
            .filter(|event| event["flow"] == "setup")
            .all(|event| event["userId"] == "ann"),
        "only Ann's: {export}"
    );
    let states: Vec<&str> = export["flowStates"]
        .as_array()
        .expect("states")
        .iter()
        .map(|state| state["flow"].as_str().unwrap_or_default())
        .collect();
    assert!(
        !states.contains(&"setup"),
        "the group's state is the group's: {states:?}"
    );
}

async fn deleting_a_group_erases_its_rows_and_nothing_else(backend: Backend) {
    let app = spawn_app(backend).await;
    some_group_data(&app).await;
    let by_member = delete_group(&app, ANN, "acme").await;
    assert_error(&by_member, "FORBIDDEN", &["admin"]);

    let deleted = ok(
        delete_group(&app, Who::Admin, "acme").await,
        "deleteGroupData",
    );
    assert_eq!(
        deleted,
        json!({ "groupId": "acme", "flowStates": 1, "events": 2, "idempotencyKeys": 1 })
    );
    assert_eq!(app.db.count_group_rows("acme").await, 0);
    let fresh = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(fresh["revision"], 0);
    // Ann's key went with the group: sent again, it applies anew.
    let again = write_ok(
        &app,
        ANN,
        "completeStep",
        json!({ "flow": "setup", "step": "profile", "idempotencyKey": "ann-1" }),
    )
    .await;
    assert_eq!(again["revision"], 1);
    // Globex and Ann's own state are untouched.
    let globex = ok(
        read_state(
            &app,
            Who::Member("gus", &["globex"]),
            json!({ "flow": "setup" }),
        )
        .await,
        "flowState",
    );
    assert_eq!(globex["revision"], 1);
    let tour = ok(
        read_state(&app, ANN, json!({ "flow": "tour" })).await,
        "flowState",
    );
    assert_eq!(tour["revision"], 1);
    let again = ok(
        delete_group(&app, Who::Admin, "nobody").await,
        "deleteGroupData",
    );
    assert_eq!(again["flowStates"], 0);
    let bad = delete_group(&app, Who::Admin, "").await;
    assert_error(&bad, "BAD_USER_INPUT", &["groupId"]);
}

async fn erasing_a_member_anonymizes_them_and_keeps_the_groups_state(backend: Backend) {
    let app = spawn_app(backend).await;
    some_group_data(&app).await;
    let query = "mutation { deleteUserData(userId: \"ann\") { flowStates events \
        idempotencyKeys eventsAnonymized groupEventsAnonymized } }";
    let erased = ok(
        gql(&app, Who::Admin, query, json!({})).await,
        "deleteUserData",
    );
    assert_eq!(
        erased,
        json!({
            "flowStates": 1, "events": 1, "idempotencyKeys": 1,
            "eventsAnonymized": 0, "groupEventsAnonymized": 1,
        })
    );
    let state = ok(
        read_state(&app, BOB, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["revision"], 2, "the group's state stays");
    let events = all_events(&app, BOB, json!({ "flow": "setup" })).await;
    let anns: Vec<&Value> = events
        .iter()
        .filter(|event| event["actor"] == "(erased)")
        .collect();
    assert_eq!(anns.len(), 1, "{events:?}");
    for event in anns {
        assert_eq!(event["userId"], "(erased)");
        assert_eq!(event["data"], Value::Null, "her data is cleared");
    }
    assert!(!format!("{events:?}").contains("Acme"));
    assert!(events.iter().any(|event| event["actor"] == "bob"));
}

fn run(args: &[&str], database_url: &str) -> Output {
    let mut command = command(args, &[("DATABASE_URL", database_url)]);
    tokio::task::block_in_place(|| command.output().expect("the binary runs"))
}

async fn groups_export_and_delete_on_the_command_line(backend: Backend) {
    let app = spawn_app(backend).await;
    some_group_data(&app).await;
    let output = run(&["groups", "export", "acme"], &app.db.url);
    assert!(output.status.success(), "{output:?}");
    let export: Value = serde_json::from_slice(&output.stdout).expect("the export is JSON");
    assert_eq!(export["groupId"], "acme");
    assert_eq!(export["flowStates"].as_array().expect("states").len(), 1);
    assert_eq!(export["events"].as_array().expect("events").len(), 2);

    let output = run(&["groups", "delete", "acme"], &app.db.url);
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("Erased group acme: 1 flow state, 2 events, 1 idempotency key."),
        "{said}"
    );
    assert_eq!(app.db.count_group_rows("acme").await, 0);
    let output = run(&["groups", "delete", ""], &app.db.url);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("groupId"));
    // `onboarding token` signs no group the server would refuse.
    for group in ["", &"g".repeat(256)] {
        let output = run(
            &["token", "--dev", "--sub", "ann", "--group", group],
            &app.db.url,
        );
        assert!(!output.status.success(), "{group:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("groupId"),
            "{output:?}"
        );
    }
}

/// The export pages on through every event of the user's data, those of
/// groups' states the user made included, and a group whose id is the
/// user's own too.
async fn a_members_export_pages_through_every_event_they_made(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut setup = declaration("setup", &["profile", "invite"]);
    setup["scope"] = json!("GROUP");
    publish_ok(&app, setup).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    let pager = Who::Member("pager", &["pgrp", "pager"]);
    for n in 0..110 {
        let group = if n % 2 == 0 { "pgrp" } else { "pager" };
        write_ok(
            &app,
            pager,
            "completeStep",
            json!({ "flow": "setup", "step": "profile", "groupId": group }),
        )
        .await;
    }
    for _ in 0..5 {
        write_ok(&app, pager, "startFlow", json!({ "flow": "tour" })).await;
    }
    let query = format!(
        "query($after: String) {{ exportUserData(after: $after) {{ events {{ {EVENT} }} \
         eventsPageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let mut events = Vec::new();
    let mut after = Value::Null;
    for _ in 0..10 {
        let page = ok(
            gql(&app, pager, &query, json!({ "after": after })).await,
            "exportUserData",
        );
        events.extend(page["events"].as_array().expect("events").iter().cloned());
        if page["eventsPageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["eventsPageInfo"]["endCursor"].clone();
    }
    let tour = events
        .iter()
        .filter(|event| event["flow"] == "tour")
        .count();
    let by_group = |group: &str| {
        events
            .iter()
            .filter(|event| event["groupId"] == group)
            .count()
    };
    assert!(tour >= 1, "the user's own events too");
    assert_eq!(
        (by_group("pgrp"), by_group("pager")),
        (55, 55),
        "{}",
        events.len()
    );
    let ids: Vec<i64> = events
        .iter()
        .map(|event| {
            event["id"]
                .as_str()
                .expect("an id")
                .parse()
                .expect("a number")
        })
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first, each once"
    );

    let output = run(&["users", "export", "pager"], &app.db.url);
    assert!(output.status.success(), "{output:?}");
    let export: Value = serde_json::from_slice(&output.stdout).expect("the export is JSON");
    assert_eq!(
        export["events"].as_array().expect("events").len(),
        events.len()
    );
}

/// The marker of erased actors is no one's id: naming it reads nothing.
async fn the_erased_actor_is_no_user(backend: Backend) {
    let app = spawn_app(backend).await;
    some_group_data(&app).await;
    let query = "mutation { deleteUserData(userId: \"ann\") { groupEventsAnonymized } }";
    ok(
        gql(&app, Who::Admin, query, json!({})).await,
        "deleteUserData",
    );
    let query = "{ exportUserData { events { id } } }";
    let response = send(&app, Who::User("(erased)"), query, json!({})).await;
    assert_eq!(
        response.status(),
        401,
        "a token naming the marker is refused"
    );
    let body = gql(
        &app,
        Who::Admin,
        "{ exportUserData(userId: \"(erased)\") { events { id } } }",
        json!({}),
    )
    .await;
    assert_error(&body, "BAD_USER_INPUT", &["(erased)", "reserved"]);
    let body = gql(
        &app,
        Who::Admin,
        "mutation { deleteUserData(userId: \"(erased)\") { events } }",
        json!({}),
    )
    .await;
    assert_error(&body, "BAD_USER_INPUT", &["(erased)"]);
}

on_both_backends!(
    members_and_admins_export_a_groups_data,
    deleting_a_group_erases_its_rows_and_nothing_else,
    erasing_a_member_anonymizes_them_and_keeps_the_groups_state,
    groups_export_and_delete_on_the_command_line,
    a_members_export_pages_through_every_event_they_made,
    the_erased_actor_is_no_user,
);
