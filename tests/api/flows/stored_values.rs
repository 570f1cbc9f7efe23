//! What the service stores is what it gives back, on both backends alike:
//! text that a database cannot hold (NUL) and numbers that JSON clients
//! cannot read exactly are refused before anything is written, with a
//! message that says what to change; every limit is reachable through the API.

use serde_json::{Value, json};

use super::{
    Who, assert_error, declaration, events_of, publish, publish_checklist, published_keys,
    state_of, step_of, write, write_ok,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

/// A write that must be refused as BAD_USER_INPUT naming `mentions`, and
/// leave the user's checklist untouched.
async fn refused(app: &TestApp, who: Who<'_>, field: &str, args: Value, mentions: &[&str]) {
    let body = write(app, who, field, args).await;
    assert_error(&body, "BAD_USER_INPUT", mentions);
    assert!(body["data"].is_null(), "{body}");
}

async fn nul_in_any_string_the_service_would_store_is_refused_and_changes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let user = Who::User("nul-sender");
    let complete = |extra: Value| {
        let mut args = json!({ "flow": "checklist", "step": "profile" });
        args.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        args
    };
    refused(
        &app,
        user,
        "completeStep",
        complete(json!({ "idempotencyKey": "a\u{0}b" })),
        &["idempotencyKey", "NUL"],
    )
    .await;
    refused(
        &app,
        user,
        "completeStep",
        complete(json!({ "data": { "name": "a\u{0}b" } })),
        &["data", "NUL"],
    )
    .await;
    refused(
        &app,
        user,
        "completeStep",
        complete(json!({ "data": { "nested": [{ "k\u{0}ey": 1 }] } })),
        &["data", "NUL"],
    )
    .await;
    refused(
        &app,
        Who::Admin,
        "completeStep",
        complete(json!({ "userId": "nul\u{0}user" })),
        &["userId", "NUL"],
    )
    .await;
    refused(
        &app,
        user,
        "startFlow",
        json!({ "flow": "check\u{0}list" }),
        &["check"],
    )
    .await;
    let state = state_of(&app, "nul-sender", "checklist").await;
    assert_eq!(state["revision"], 0, "nothing was written: {state}");
    assert!(events_of(&app, "nul-sender", None).await.is_empty());

    let mut nul_title = declaration("nul-flow", &["a"]);
    nul_title["title"] = json!("Wel\u{0}come");
    assert_error(&publish(&app, nul_title).await, "BAD_USER_INPUT", &["NUL"]);
    let mut nul_step_title = declaration("nul-flow", &["a"]);
    nul_step_title["steps"][0]["title"] = json!("St\u{0}ep");
    assert_error(
        &publish(&app, nul_step_title).await,
        "BAD_USER_INPUT",
        &["NUL"],
    );
    assert_eq!(published_keys(&app).await, vec!["checklist".to_owned()]);
}

async fn numbers_in_step_data_come_back_exactly_or_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let user = Who::User("numbers");
    let exact = json!({
        "largest": 9_007_199_254_740_991_i64,
        "smallest": -9_007_199_254_740_991_i64,
        "fraction": 0.1,
        "zero": 0,
    });
    let state = write_ok(
        &app,
        user,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": exact }),
    )
    .await;
    assert_eq!(step_of(&state, "profile")["data"], exact);
    let read = state_of(&app, "numbers", "checklist").await;
    assert_eq!(
        step_of(&read, "profile")["data"],
        exact,
        "read back exactly"
    );

    for number in [
        json!(9_007_199_254_740_993_i64),
        json!(-9_007_199_254_740_993_i64),
        json!(18_446_744_073_709_551_615_u64),
        json!(1e300),
    ] {
        let args = json!({
            "flow": "checklist", "step": "invite", "data": { "big": [number] },
        });
        let body = write(&app, user, "completeStep", args).await;
        assert_error(&body, "BAD_USER_INPUT", &["data", "9007199254740991"]);
    }
    // The same number written in the document rather than in a variable.
    let body = super::gql(
        &app,
        user,
        "mutation { completeStep(flow: \"checklist\", step: \"invite\", data: { big: 123456789012345678901234567890 }) { revision } }",
        json!({}),
    )
    .await;
    assert!(body.get("errors").is_some(), "{body}");
    let state = state_of(&app, "numbers", "checklist").await;
    assert_eq!(
        state["revision"], 1,
        "only the exact data was written: {state}"
    );
}

async fn a_declaration_over_its_limit_gets_the_declaration_limit_not_the_body_limit(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    // 95 steps titled with 200 two- and three-byte characters: about 52 KB
    // of declaration, in a body under the 64 KiB request limit.
    let title: String = "é".repeat(100) + &"€".repeat(100);
    let steps: Vec<Value> = (0..95)
        .map(|i| json!({ "key": format!("step-{i}"), "title": title }))
        .collect();
    let input = json!({ "key": "big", "title": "Big", "steps": steps });
    let body = publish(&app, input).await;
    assert_error(&body, "BAD_USER_INPUT", &["48 KiB"]);
}

async fn only_an_admin_publishes_flows_or_erases_users_and_the_message_says_so(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = super::gql(
        &app,
        Who::User("not-an-admin"),
        "mutation($input: PublishFlowInput!) { publishFlow(input: $input) { key } }",
        json!({ "input": declaration("tour", &["a"]) }),
    )
    .await;
    assert_error(&body, "FORBIDDEN", &["admin", "publish"]);
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("onboarding state"), "{message}");

    let body = super::delete_user_data(&app, Who::User("not-an-admin"), "someone").await;
    assert_error(&body, "FORBIDDEN", &["admin", "erase"]);
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("onboarding state"), "{message}");
}

on_both_backends!(
    nul_in_any_string_the_service_would_store_is_refused_and_changes_nothing,
    numbers_in_step_data_come_back_exactly_or_are_refused,
    a_declaration_over_its_limit_gets_the_declaration_limit_not_the_body_limit,
    only_an_admin_publishes_flows_or_erases_users_and_the_message_says_so,
);
