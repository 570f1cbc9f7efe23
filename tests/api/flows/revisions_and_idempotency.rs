//! The revision every write increments, `expectedRevision` (optimistic
//! concurrency), and `idempotencyKey` (safe retries).

use serde_json::{Value, json};

use super::{
    Who, assert_error, datetime_from_now, events_of, publish_checklist, state_of, step_of, write,
    write_ok,
};
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

/// One of each write, in an order that lets every one of them apply.
fn every_write() -> Vec<(&'static str, Value)> {
    let until = datetime_from_now(chrono::Duration::days(1));
    vec![
        ("startFlow", json!({ "flow": "checklist" })),
        (
            "completeStep",
            json!({ "flow": "checklist", "step": "profile", "data": { "role": "pm" } }),
        ),
        ("skipStep", json!({ "flow": "checklist", "step": "invite" })),
        (
            "goToStep",
            json!({ "flow": "checklist", "step": "profile" }),
        ),
        ("dismissFlow", json!({ "flow": "checklist" })),
        ("snoozeFlow", json!({ "flow": "checklist", "until": until })),
        ("completeFlow", json!({ "flow": "checklist" })),
        ("restartFlow", json!({ "flow": "checklist" })),
    ]
}

/// `args` with `name: value` added.
fn with(mut args: Value, name: &str, value: Value) -> Value {
    args[name] = value;
    args
}

async fn every_write_increments_the_revision_by_one_and_appends_one_event(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    assert_eq!(state_of(&app, "alice", "checklist").await["revision"], 0);

    for (applied, (field, args)) in every_write().into_iter().enumerate() {
        let state = write_ok(&app, Who::User("alice"), field, args).await;
        let expected = applied as i64 + 1;
        assert_eq!(
            state["revision"], expected,
            "{field} returns the new revision"
        );
        assert_eq!(
            state_of(&app, "alice", "checklist").await["revision"],
            expected,
            "{field} stored it"
        );
        assert_eq!(
            events_of(&app, "alice", Some("checklist")).await.len() as i64,
            expected,
            "{field} appended one event"
        );
    }
}

async fn a_write_with_a_stale_expected_revision_is_a_conflict_and_changes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    write_ok(&app, alice, "startFlow", json!({ "flow": "checklist" })).await;
    write_ok(
        &app,
        alice,
        "goToStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    let before = state_of(&app, "alice", "checklist").await;
    assert_eq!(before["revision"], 2);

    for stale in [0, 1, 3, 100] {
        for (field, args) in every_write() {
            let body = write(
                &app,
                alice,
                field,
                with(args, "expectedRevision", json!(stale)),
            )
            .await;
            assert_error(&body, "CONFLICT", &[]);
            assert_eq!(
                body["errors"][0]["extensions"]["currentRevision"], 2,
                "{field} with expectedRevision {stale}: {body}"
            );
        }
    }

    assert_eq!(state_of(&app, "alice", "checklist").await, before);
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 2);
}

async fn a_write_with_the_current_expected_revision_applies(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let mut revision = state_of(&app, "alice", "checklist").await["revision"]
        .as_i64()
        .expect("a revision");
    assert_eq!(revision, 0);

    for (field, args) in every_write() {
        let args = with(args, "expectedRevision", json!(revision));
        let state = write_ok(&app, Who::User("alice"), field, args).await;
        assert_eq!(state["revision"], revision + 1, "{field}");
        revision += 1;
    }
    assert_eq!(
        state_of(&app, "alice", "checklist").await["revision"],
        revision
    );
}

async fn a_retry_with_the_same_idempotency_key_returns_the_first_result_and_changes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let args = json!({
        "flow": "checklist",
        "step": "profile",
        "data": { "role": "developer" },
        "idempotencyKey": "9b1c2a7e-request-1",
    });
    let first = write_ok(&app, alice, "completeStep", args.clone()).await;
    assert_eq!(first["revision"], 1);

    let retry = write_ok(&app, alice, "completeStep", args.clone()).await;
    assert_eq!(retry["revision"], first["revision"]);
    assert_eq!(retry["updatedAt"], first["updatedAt"]);
    assert_eq!(step_of(&retry, "profile"), step_of(&first, "profile"));
    assert_eq!(state_of(&app, "alice", "checklist").await["revision"], 1);
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 1);

    // A later write, then the retry again: still the first result, no change.
    let later = write_ok(
        &app,
        alice,
        "skipStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    let retry = write_ok(&app, alice, "completeStep", args).await;
    assert_eq!(retry["revision"], first["revision"]);
    assert_eq!(retry["updatedAt"], first["updatedAt"]);
    assert_eq!(state_of(&app, "alice", "checklist").await, later);
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 2);
}

async fn every_write_honours_an_idempotency_key(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");

    for (index, (field, args)) in every_write().into_iter().enumerate() {
        let args = with(args, "idempotencyKey", json!(format!("key-{index}")));
        let first = write_ok(&app, alice, field, args.clone()).await;
        let retry = write_ok(&app, alice, field, args).await;
        assert_eq!(
            (&retry["revision"], &retry["updatedAt"]),
            (&first["revision"], &first["updatedAt"]),
            "{field}"
        );
        assert_eq!(
            first["revision"],
            index as i64 + 1,
            "{field}: the retry changed nothing"
        );
    }
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 8);
}

async fn the_same_idempotency_key_with_other_arguments_is_a_conflict(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    let first = write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "idempotencyKey": "k-1" }),
    )
    .await;

    let body = write(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "invite", "idempotencyKey": "k-1" }),
    )
    .await;

    assert_error(&body, "CONFLICT", &[]);
    let state = state_of(&app, "alice", "checklist").await;
    assert_eq!(state, first);
    assert_eq!(step_of(&state, "invite")["status"], "NOT_STARTED");
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 1);
}

async fn an_idempotency_key_belongs_to_the_user_who_used_it(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let args = json!({ "flow": "checklist", "step": "profile", "idempotencyKey": "shared-key" });
    write_ok(&app, Who::User("alice"), "completeStep", args.clone()).await;

    let bobs = write_ok(&app, Who::User("bob"), "completeStep", args).await;

    assert_eq!(bobs["userId"], "bob");
    assert_eq!(bobs["revision"], 1);
    assert_eq!(step_of(&bobs, "profile")["status"], "COMPLETED");
    assert_eq!(state_of(&app, "bob", "checklist").await, bobs);
    assert_eq!(events_of(&app, "bob", Some("checklist")).await.len(), 1);
    assert_eq!(events_of(&app, "alice", Some("checklist")).await.len(), 1);
}

async fn an_idempotency_key_is_1_to_255_bytes(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");

    for key in [String::new(), "k".repeat(256), "é".repeat(128)] {
        let body = write(
            &app,
            alice,
            "startFlow",
            json!({ "flow": "checklist", "idempotencyKey": key }),
        )
        .await;
        assert_error(&body, "BAD_USER_INPUT", &[]);
    }
    assert_eq!(state_of(&app, "alice", "checklist").await["revision"], 0);

    for key in ["k".repeat(255), "1".to_owned()] {
        let state = write_ok(
            &app,
            alice,
            "startFlow",
            json!({ "flow": "checklist", "idempotencyKey": key }),
        )
        .await;
        assert_eq!(state["status"], "IN_PROGRESS");
    }
    assert_eq!(state_of(&app, "alice", "checklist").await["revision"], 2);
}

on_both_backends!(
    every_write_increments_the_revision_by_one_and_appends_one_event,
    a_write_with_a_stale_expected_revision_is_a_conflict_and_changes_nothing,
    a_write_with_the_current_expected_revision_applies,
    a_retry_with_the_same_idempotency_key_returns_the_first_result_and_changes_nothing,
    every_write_honours_an_idempotency_key,
    the_same_idempotency_key_with_other_arguments_is_a_conflict,
    an_idempotency_key_belongs_to_the_user_who_used_it,
    an_idempotency_key_is_1_to_255_bytes,
);
