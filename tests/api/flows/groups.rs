//! Team flows (design/groups.md): a GROUP flow keeps one state per group,
//! shared by its members, who are named by the token's groups claim.

use serde_json::{Value, json};

use super::{
    ADMIN, Who, all_events, assert_error, declaration, events_page, gql, member_token, ok, publish,
    publish_ok, read_state, step_of, write, write_ok,
};
use crate::helpers::{Backend, TestApp, post_graphql, spawn_app, spawn_app_with};
use crate::on_both_backends;

const ANN: Who = Who::Member("ann", &["acme"]);
const BOB: Who = Who::Member("bob", &["acme"]);
const CAROL: Who = Who::Member("carol", &["globex"]);

/// Publishes `setup` (profile, invite, billing; billing optional) as a GROUP flow.
async fn publish_setup(app: &TestApp) -> Value {
    let mut input = declaration("setup", &["profile", "invite", "billing"]);
    input["steps"][2]["optional"] = json!(true);
    input["scope"] = json!("GROUP");
    publish_ok(app, input).await
}

async fn members_share_one_state_and_each_event_names_its_member(backend: Backend) {
    let app = spawn_app(backend).await;
    let flow = publish_setup(&app).await;
    assert_eq!(flow["key"], "setup");

    let by_ann = write_ok(
        &app,
        ANN,
        "completeStep",
        json!({ "flow": "setup", "step": "profile", "data": { "name": "Acme" } }),
    )
    .await;
    let by_bob = write_ok(
        &app,
        BOB,
        "completeStep",
        json!({ "flow": "setup", "step": "invite", "expectedRevision": 1 }),
    )
    .await;
    assert_eq!(by_ann["id"], by_bob["id"], "one state, one id");
    assert!(
        by_bob["id"].as_str().unwrap_or_default().contains("acme"),
        "{by_bob}"
    );
    assert_eq!(by_bob["userId"], "bob");
    assert_eq!(by_bob["groupId"], "acme");
    assert_eq!(by_bob["revision"], 2);
    assert_eq!(by_bob["status"], "COMPLETED", "billing is optional");
    assert_eq!(step_of(&by_bob, "profile")["status"], "COMPLETED");
    assert_eq!(
        step_of(&by_bob, "profile")["data"],
        json!({ "name": "Acme" })
    );

    // Ann sees Bob's step, as herself.
    let seen_by_ann = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(seen_by_ann["userId"], "ann");
    assert_eq!(seen_by_ann["revision"], 2);
    assert_eq!(step_of(&seen_by_ann, "invite")["status"], "COMPLETED");

    let events = all_events(&app, ANN, json!({ "flow": "setup" })).await;
    let made: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap_or_default(),
                event["userId"].as_str().unwrap_or_default(),
                event["groupId"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        made,
        [
            ("FLOW_COMPLETED", "bob", "acme"),
            ("STEP_COMPLETED", "bob", "acme"),
            ("STEP_COMPLETED", "ann", "acme"),
        ],
        "{events:?}"
    );
    assert!(events.iter().all(|event| event["actor"] == event["userId"]));
    // The same list through groupId, without the flow.
    let by_group = all_events(&app, BOB, json!({ "groupId": "acme" })).await;
    assert_eq!(by_group, events);
    // A member's own (USER) events hold none of the group's.
    assert!(all_events(&app, ANN, json!({})).await.is_empty());
}

async fn non_members_are_forbidden_and_learn_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    write_ok(
        &app,
        ANN,
        "completeStep",
        json!({ "flow": "setup", "step": "profile", "data": { "secret": "s3cr3t" } }),
    )
    .await;
    let acme = json!({ "flow": "setup", "groupId": "acme" });
    for who in [CAROL, Who::User("dave")] {
        let read = read_state(&app, who, acme.clone()).await;
        assert_error(&read, "FORBIDDEN", &["JWT_GROUPS_CLAIM"]);
        assert!(read["data"].is_null() || read["data"]["flowState"].is_null());
        assert!(!read.to_string().contains("s3cr3t"), "{read}");

        let mut args = acme.clone();
        args["step"] = json!("invite");
        assert_error(
            &write(&app, who, "completeStep", args).await,
            "FORBIDDEN",
            &[],
        );
        let events = events_page(&app, who, json!({ "groupId": "acme" })).await;
        assert_error(&events, "FORBIDDEN", &[]);
        let export = gql(
            &app,
            who,
            "query { exportGroupData(groupId: \"acme\") { groupId } }",
            json!({}),
        )
        .await;
        assert_error(&export, "FORBIDDEN", &[]);
        let states = gql(
            &app,
            who,
            "query { flowStates(groupId: \"acme\") { id } }",
            json!({}),
        )
        .await;
        assert_error(&states, "FORBIDDEN", &[]);
        assert!(!export.to_string().contains("s3cr3t"));
    }
    // Nothing was written by the refused write.
    let state = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["revision"], 1);
}

async fn a_token_naming_several_groups_or_none_must_pass_group_id(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    let both = Who::Member("erin", &["acme", "globex"]);
    let body = read_state(&app, both, json!({ "flow": "setup" })).await;
    assert_error(&body, "BAD_USER_INPUT", &["groupId", "`acme`", "`globex`"]);
    let body = write(&app, both, "startFlow", json!({ "flow": "setup" })).await;
    assert_error(&body, "BAD_USER_INPUT", &["groupId"]);
    let none = read_state(&app, Who::User("frank"), json!({ "flow": "setup" })).await;
    assert_error(&none, "BAD_USER_INPUT", &["groupId"]);

    let globex = write_ok(
        &app,
        both,
        "startFlow",
        json!({ "flow": "setup", "groupId": "globex" }),
    )
    .await;
    assert_eq!(globex["groupId"], "globex");
    let acme = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(
        acme["status"], "NOT_STARTED",
        "globex's start is not acme's"
    );
    assert_ne!(acme["id"], globex["id"]);
}

async fn an_admin_acts_on_any_group_as_the_actor(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    let state = write_ok(
        &app,
        Who::Admin,
        "skipStep",
        json!({ "flow": "setup", "step": "profile", "groupId": "initech" }),
    )
    .await;
    assert_eq!(state["groupId"], "initech");
    assert_eq!(state["userId"], ADMIN);
    // An admin reads the group's state for a user, who is then its userId.
    let for_ann = ok(
        read_state(
            &app,
            Who::Admin,
            json!({ "flow": "setup", "groupId": "initech", "userId": "ann" }),
        )
        .await,
        "flowState",
    );
    assert_eq!(for_ann["userId"], "ann");
    assert_eq!(for_ann["revision"], 1);
    let events = all_events(&app, Who::Admin, json!({ "groupId": "initech" })).await;
    assert!(
        events.iter().all(|event| event["actor"] == ADMIN),
        "{events:?}"
    );
    // Without groupId an admin naming no group is asked for one.
    let body = read_state(&app, Who::Admin, json!({ "flow": "setup" })).await;
    assert_error(&body, "BAD_USER_INPUT", &["groupId"]);
}

async fn fifty_members_writing_at_once_are_each_applied_once(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    write_ok(&app, ANN, "startFlow", json!({ "flow": "setup" })).await;
    let members: Vec<String> = (0..50).map(|n| format!("member-{n}")).collect();
    let writes = members.iter().map(|member| {
        let app = &app;
        async move {
            let who = Who::Member(member, &["acme"]);
            let body = write(
                app,
                who,
                "completeStep",
                json!({ "flow": "setup", "step": "profile", "data": { "by": member } }),
            )
            .await;
            ok(body, "completeStep")["revision"]
                .as_i64()
                .expect("a revision")
        }
    });
    let mut revisions = futures_util::future::join_all(writes).await;
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (2..=51).collect::<Vec<i64>>(),
        "each write its own revision"
    );
    let state = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["revision"], 51);
    let events = all_events(&app, ANN, json!({ "flow": "setup" })).await;
    let completions: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] == "STEP_COMPLETED")
        .collect();
    assert_eq!(completions.len(), 50);
    let mut actors: Vec<&str> = completions
        .iter()
        .map(|event| event["actor"].as_str().unwrap_or_default())
        .collect();
    actors.sort_unstable();
    let mut expected: Vec<&str> = members.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(actors, expected, "one event per member");
}

async fn idempotency_keys_of_two_members_never_meet(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    let args = |step: &str| json!({ "flow": "setup", "step": step, "idempotencyKey": "click-1" });
    let ann = write_ok(&app, ANN, "completeStep", args("profile")).await;
    let bob = write_ok(&app, BOB, "completeStep", args("invite")).await;
    assert_eq!(
        bob["revision"], 2,
        "Bob's key is not Ann's: his write applies"
    );
    assert_eq!(step_of(&bob, "invite")["status"], "COMPLETED");
    // Each retry replays its sender's own first answer.
    let ann_again = write_ok(&app, ANN, "completeStep", args("profile")).await;
    assert_eq!(ann_again["revision"], ann["revision"]);
    let bob_again = write_ok(&app, BOB, "completeStep", args("invite")).await;
    assert_eq!(bob_again["revision"], 2);
    let state = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["revision"], 2);
}

async fn a_stale_revision_conflicts_with_the_current_state(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    write_ok(
        &app,
        ANN,
        "completeStep",
        json!({ "flow": "setup", "step": "profile" }),
    )
    .await;
    let body = write(
        &app,
        BOB,
        "completeStep",
        json!({ "flow": "setup", "step": "invite", "expectedRevision": 0 }),
    )
    .await;
    assert_error(&body, "CONFLICT", &["revision 1"]);
    let extensions = &body["errors"][0]["extensions"];
    assert_eq!(extensions["currentRevision"], 1);
    let current = &extensions["currentState"];
    assert_eq!(current["revision"], 1, "{extensions}");
    assert_eq!(current["groupId"], "acme");
    assert_eq!(current["userId"], "bob");
    assert_eq!(current["status"], "IN_PROGRESS");
    assert_eq!(current["currentStep"], "invite");
    assert_eq!(current["currentStepIndex"], 1);
    assert_eq!(current["doneSteps"], 1);
    assert_eq!(current["totalSteps"], 3);
    assert_eq!(
        current["steps"][2],
        json!({
            "key": "billing", "title": "Step billing", "optional": true, "status": "NOT_STARTED",
            "completedAt": null, "skippedAt": null, "data": null,
        })
    );
    // The same fields and values as a read of the state.
    let read = ok(
        read_state(&app, BOB, json!({ "flow": "setup" })).await,
        "flowState",
    );
    for field in [
        "id",
        "status",
        "revision",
        "currentStep",
        "steps",
        "createdAt",
        "updatedAt",
    ] {
        if field == "steps" {
            for (index, step) in read["steps"].as_array().expect("steps").iter().enumerate() {
                for key in ["key", "status", "completedAt"] {
                    assert_eq!(current["steps"][index][key], step[key], "{key}");
                }
            }
        } else {
            assert_eq!(current[field], read[field], "{field}");
        }
    }
}

async fn steps_carry_their_title_and_whether_they_are_optional(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    let query = "query { flowState(flow: \"setup\") { steps { key title optional } } }";
    let steps = ok(gql(&app, ANN, query, json!({})).await, "flowState")["steps"].clone();
    assert_eq!(
        steps,
        json!([
            { "key": "profile", "title": "Step profile", "optional": false },
            { "key": "invite", "title": "Step invite", "optional": false },
            { "key": "billing", "title": "Step billing", "optional": true },
        ])
    );
}

async fn flow_states_lists_the_users_or_the_groups_flows(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    let flows_of = |body: Value| -> Vec<String> {
        let states = ok(body, "flowStates");
        let mut flows: Vec<String> = states
            .as_array()
            .expect("a list")
            .iter()
            .map(|state| state["flow"].as_str().expect("a flow").to_owned())
            .collect();
        flows.sort();
        flows
    };
    let own = gql(&app, ANN, "{ flowStates { flow groupId } }", json!({})).await;
    assert_eq!(flows_of(own), ["onboarding", "tour"]);
    let group = gql(
        &app,
        ANN,
        "{ flowStates(groupId: \"acme\") { flow groupId } }",
        json!({}),
    )
    .await;
    assert_eq!(flows_of(group), ["setup"]);

    let query = "{ flows { key scope } }";
    let flows = ok(gql(&app, ANN, query, json!({})).await, "flows");
    let scopes: Vec<(String, String)> = flows
        .as_array()
        .expect("flows")
        .iter()
        .map(|flow| (flow["key"].to_string(), flow["scope"].to_string()))
        .collect();
    assert!(
        scopes.contains(&("\"setup\"".into(), "\"GROUP\"".into())),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&("\"tour\"".into(), "\"USER\"".into())),
        "{scopes:?}"
    );
}

async fn re_onboarding_policies_move_a_groups_state(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    write_ok(&app, ANN, "completeFlow", json!({ "flow": "setup" })).await;
    let mut v2 = declaration("setup", &["profile", "invite", "billing", "sso"]);
    v2["reonboarding"] = json!("RESTART_ALL");
    let flow = publish_ok(&app, v2).await;
    assert_eq!(flow["version"], 2);
    let state = ok(
        read_state(&app, BOB, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["version"], 2);
    assert_eq!(state["status"], "NOT_STARTED");
    assert_eq!(state["revision"], 1, "a read never writes");
    let done = write_ok(
        &app,
        BOB,
        "completeStep",
        json!({ "flow": "setup", "step": "sso" }),
    )
    .await;
    assert_eq!(done["version"], 2);
    assert_eq!(done["doneSteps"], 1);
    assert_eq!(done["revision"], 2);
    let events = all_events(&app, ANN, json!({ "flow": "setup" })).await;
    assert!(events.iter().any(|event| event["type"] == "REONBOARDED"));
}

async fn the_viewer_is_who_the_token_names(backend: Backend) {
    let app = spawn_app(backend).await;
    let query = "{ viewer { userId isAdmin groupIds } }";
    let viewer = ok(
        gql(
            &app,
            Who::Member("erin", &["acme", "globex"]),
            query,
            json!({}),
        )
        .await,
        "viewer",
    );
    assert_eq!(
        viewer,
        json!({ "userId": "erin", "isAdmin": false, "groupIds": ["acme", "globex"] })
    );
    let admin = ok(gql(&app, Who::Admin, query, json!({})).await, "viewer");
    assert_eq!(
        admin,
        json!({ "userId": ADMIN, "isAdmin": true, "groupIds": [] })
    );
    let nobody = gql(&app, Who::Nobody, query, json!({})).await;
    assert_error(&nobody, "UNAUTHENTICATED", &[]);
}

async fn bad_input_names_what_to_change_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    let refused = |body: &Value, mentions: &[&str]| assert_error(body, "BAD_USER_INPUT", mentions);

    for group in [String::new(), "g".repeat(256), "a\u{0}b".to_owned()] {
        let body = read_state(
            &app,
            Who::Admin,
            json!({ "flow": "setup", "groupId": group }),
        )
        .await;
        refused(&body, &["groupId"]);
    }
    let body = read_state(&app, ANN, json!({ "flow": "tour", "groupId": "acme" })).await;
    refused(&body, &["groupId", "`tour`", "USER"]);
    let body = write(
        &app,
        Who::Admin,
        "startFlow",
        json!({ "flow": "setup", "groupId": "acme", "userId": "ann" }),
    )
    .await;
    refused(&body, &["userId", "`setup`", "GROUP"]);

    let mut as_user = declaration("setup", &["profile"]);
    as_user["scope"] = json!("USER");
    refused(&publish(&app, as_user).await, &["`setup`", "GROUP", "USER"]);
    let mut as_group = declaration("tour", &["welcome"]);
    as_group["scope"] = json!("GROUP");
    refused(&publish(&app, as_group).await, &["`tour`", "GROUP", "USER"]);
    let mut onboarding = declaration("onboarding", &["welcome"]);
    onboarding["scope"] = json!("GROUP");
    refused(&publish(&app, onboarding).await, &["`onboarding`", "GROUP"]);
    // A later declaration without a scope keeps the flow's.
    let kept = publish_ok(&app, declaration("setup", &["profile", "invite"])).await;
    assert_eq!(kept["version"], 2);
    let query = "{ flow(key: \"setup\") { scope } }";
    let scope = ok(gql(&app, ANN, query, json!({})).await, "flow")["scope"].clone();
    assert_eq!(scope, "GROUP");

    let state = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["revision"], 0, "nothing was written");
}

async fn a_groups_claim_of_another_shape_refuses_the_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let claims = json!({ "sub": "ann", "org_id": 42, "exp": crate::helpers::unix_now() + 60 });
    let token = crate::helpers::sign(
        &claims,
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    );
    let response = post_graphql(
        &app.graphql_url(),
        Some(&token),
        "{ viewer { userId } }",
        json!({}),
    )
    .await;
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, 401, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`org_id`") && message.contains("JWT_GROUPS_CLAIM"),
        "{message}"
    );
}

/// Keycloak's `organization` array, and a dotted path, by JWT_GROUPS_CLAIM.
async fn the_groups_claim_follows_the_identity_provider(backend: Backend) {
    for (claim, claims) in [
        (
            "organization",
            json!({ "organization": ["acme", "globex"] }),
        ),
        ("app.teams", json!({ "app": { "teams": "acme" } })),
    ] {
        let app =
            spawn_app_with(backend, |args| args.jwt.jwt_groups_claim = claim.to_owned()).await;
        let mut claims = claims;
        claims["sub"] = json!("ann");
        claims["exp"] = json!(crate::helpers::unix_now() + 60);
        let token = crate::helpers::sign(
            &claims,
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
        );
        let body: Value = post_graphql(
            &app.graphql_url(),
            Some(&token),
            "{ viewer { groupIds } }",
            json!({}),
        )
        .await
        .json()
        .await
        .expect("a JSON body");
        let groups = &body["data"]["viewer"]["groupIds"];
        assert_eq!(groups[0], "acme", "{claim}: {body}");
        // The default claim is not read once another is set.
        let default_claim = member_token("ann", &["acme"], &[]);
        let body: Value = post_graphql(
            &app.graphql_url(),
            Some(&default_claim),
            "{ viewer { groupIds } }",
            json!({}),
        )
        .await
        .json()
        .await
        .expect("a JSON body");
        assert_eq!(body["data"]["viewer"]["groupIds"], json!([]), "{claim}");
    }
}

/// Keys are the caller's: an admin's key sent for a user is not the user's
/// key of the same name, either way round.
async fn an_admins_key_for_a_user_is_not_the_users_own(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("tour", &["welcome", "profile"])).await;
    let args = json!({ "flow": "tour", "step": "welcome", "idempotencyKey": "same" });
    let mut for_zed = args.clone();
    for_zed["userId"] = json!("zed");
    let by_admin = write_ok(&app, Who::Admin, "completeStep", for_zed.clone()).await;
    assert_eq!(by_admin["revision"], 1);
    let by_zed = write_ok(&app, Who::User("zed"), "completeStep", args.clone()).await;
    assert_eq!(
        by_zed["revision"], 2,
        "Zed's own key is another key: his write applies"
    );
    // Each retry replays its own sender's answer.
    let admin_again = write_ok(&app, Who::Admin, "completeStep", for_zed).await;
    assert_eq!(admin_again["revision"], 1);
    let zed_again = write_ok(&app, Who::User("zed"), "completeStep", args).await;
    assert_eq!(zed_again["revision"], 2);
    // Erasing Zed takes the admin's key for him too: it holds his state.
    let query = "mutation { deleteUserData(userId: \"zed\") { idempotencyKeys } }";
    let erased = ok(
        gql(&app, Who::Admin, query, json!({})).await,
        "deleteUserData",
    );
    assert_eq!(erased["idempotencyKeys"], 2);
}

/// A state id never meets another's: a user and a group of the same name.
async fn a_user_and_a_group_of_one_name_keep_apart(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    publish_ok(&app, declaration("tour", &["welcome"])).await;
    let acme_the_user = Who::Member("acme", &["acme"]);
    let group = write_ok(
        &app,
        acme_the_user,
        "completeFlow",
        json!({ "flow": "setup" }),
    )
    .await;
    let own = write_ok(&app, acme_the_user, "startFlow", json!({ "flow": "tour" })).await;
    assert_ne!(group["id"], own["id"]);
    let own_events = all_events(&app, acme_the_user, json!({})).await;
    assert!(
        own_events.iter().all(|event| event["flow"] == "tour"),
        "{own_events:?}"
    );
    // Erasing the user `acme` keeps the group `acme`'s state.
    let query =
        "mutation { deleteUserData(userId: \"acme\") { flowStates groupEventsAnonymized } }";
    let erased = ok(
        gql(&app, Who::Admin, query, json!({})).await,
        "deleteUserData",
    );
    assert_eq!(erased["flowStates"], 1, "{erased}");
    let state = ok(
        read_state(&app, ANN, json!({ "flow": "setup" })).await,
        "flowState",
    );
    assert_eq!(state["status"], "COMPLETED");
    let events = all_events(&app, ANN, json!({ "flow": "setup" })).await;
    assert!(
        events.iter().all(|event| event["actor"] == "(erased)"),
        "the user's group events are anonymized: {events:?}"
    );
}

/// Without a token nothing is looked up: an unknown flow and a group's flow
/// answer the same.
async fn an_anonymous_request_learns_nothing_of_the_flows(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_setup(&app).await;
    for flow in ["setup", "no-such-flow"] {
        let read = read_state(
            &app,
            Who::Nobody,
            json!({ "flow": flow, "groupId": "acme" }),
        )
        .await;
        assert_error(&read, "UNAUTHENTICATED", &[]);
        let events = events_page(&app, Who::Nobody, json!({ "flow": flow })).await;
        assert_error(&events, "UNAUTHENTICATED", &[]);
        let write = write(&app, Who::Nobody, "startFlow", json!({ "flow": flow })).await;
        assert_error(&write, "UNAUTHENTICATED", &[]);
    }
}

on_both_backends!(
    members_share_one_state_and_each_event_names_its_member,
    non_members_are_forbidden_and_learn_nothing,
    a_token_naming_several_groups_or_none_must_pass_group_id,
    an_admin_acts_on_any_group_as_the_actor,
    fifty_members_writing_at_once_are_each_applied_once,
    idempotency_keys_of_two_members_never_meet,
    a_stale_revision_conflicts_with_the_current_state,
    steps_carry_their_title_and_whether_they_are_optional,
    flow_states_lists_the_users_or_the_groups_flows,
    re_onboarding_policies_move_a_groups_state,
    the_viewer_is_who_the_token_names,
    bad_input_names_what_to_change_and_changes_nothing,
    a_groups_claim_of_another_shape_refuses_the_token,
    the_groups_claim_follows_the_identity_provider,
    a_user_and_a_group_of_one_name_keep_apart,
    an_admins_key_for_a_user_is_not_the_users_own,
    an_anonymous_request_learns_nothing_of_the_flows,
);
