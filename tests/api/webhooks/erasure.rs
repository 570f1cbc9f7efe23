//! Erasure and webhooks: erasing a user or a group removes the messages
//! that carry their data, sends `user.erased` / `group.erased`, and wins
//! every race: once the erasure has answered, nothing erased is sent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Receiver, Reply, as_admin, create_endpoint, eventually, messages, ok, publish, write};
use crate::helpers::{Backend, TestApp, post_graphql, sign, spawn_app};
use crate::on_both_backends;

fn member_token(sub: &str, group: &str) -> String {
    sign(
        &json!({ "sub": sub, "org_id": group, "exp": crate::helpers::unix_now() + 600 }),
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    )
}

async fn member_write(app: &TestApp, sub: &str, group: &str, step: &str) {
    let response = post_graphql(
        &app.graphql_url(),
        Some(&member_token(sub, group)),
        &format!("mutation {{ completeStep(flow: \"setup\", step: \"{step}\") {{ revision }} }}"),
        json!({}),
    )
    .await;
    let body: Value = response.json().await.expect("JSON");
    ok(body, "completeStep");
}

/// The event ids a user's or a group's history holds now.
async fn event_ids(app: &TestApp, argument: &str) -> BTreeSet<String> {
    let body = as_admin(
        app,
        &format!("{{ flowEvents({argument}, first: 100) {{ edges {{ node {{ id }} }} }} }}"),
        json!({}),
    )
    .await;
    ok(body, "flowEvents")["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|edge| edge["node"]["id"].as_str().map(str::to_owned))
        .collect()
}

/// A receiver failing every attempt keeps the messages pending; erasing
/// Ann removes those of her own states, anonymizes her change to a group's
/// state (the group's receivers still learn of it, without her), keeps
/// Bob's, and sends `user.erased` with her id alone.
async fn erasing_a_user_removes_their_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    // Failing, and asking for the next attempt a second later.
    receiver.otherwise(Reply::RetryAfter(503, "1"));
    publish(&app, "tour", &["a"], "USER").await;
    publish(&app, "setup", &["one", "two"], "GROUP").await;
    let (id, secret) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    member_write(&app, "ann", "acme", "one").await;
    write(&app, "bob", "startFlow", r#"flow: "tour""#).await;
    assert!(
        eventually(Duration::from_secs(5), async || receiver.received().len()
            >= 3)
        .await
    );
    assert_eq!(messages(&app, &id).await.len(), 3);
    let body = as_admin(
        &app,
        "mutation { deleteUserData(userId: \"ann\") { userId } }",
        json!({}),
    )
    .await;
    ok(body, "deleteUserData");
    let erased_at = Instant::now();
    let left = messages(&app, &id).await;
    let mut kinds: Vec<&str> = left
        .iter()
        .filter_map(|m| m["eventType"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["flow.started", "flow.step.completed", "user.erased"],
        "Bob's message, the group's anonymized, and the erasure's: {left:?}"
    );
    receiver.otherwise(Reply::Status(200));
    // Past the first retry (about 5 s): Bob's message comes again, Ann's never.
    let settled = eventually(Duration::from_secs(10), async || {
        let after: Vec<_> = receiver
            .received()
            .into_iter()
            .filter(|r| r.at > erased_at)
            .collect();
        after.iter().any(|r| r.body["type"] == "user.erased")
            && after.iter().any(|r| r.body["data"]["userId"] == "bob")
            && after.iter().any(|r| r.body["data"]["groupId"] == "acme")
    })
    .await;
    assert!(settled, "{:?}", receiver.received());
    for message in receiver.received().iter().filter(|r| r.at > erased_at) {
        if message.body["type"] == "user.erased" {
            assert_eq!(message.body["data"], json!({ "userId": "ann" }));
            assert!(message.signed_with(&secret));
        } else {
            assert!(
                !message.raw.contains("\"ann\""),
                "nothing of Ann's after: {}",
                message.raw
            );
        }
    }
}

/// Erasing a group removes its messages and sends `group.erased`.
async fn erasing_a_group_removes_its_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::RetryAfter(503, "1"));
    publish(&app, "setup", &["one", "two"], "GROUP").await;
    let (id, _) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    member_write(&app, "ann", "acme", "one").await;
    member_write(&app, "gus", "globex", "one").await;
    assert!(
        eventually(Duration::from_secs(5), async || receiver.received().len()
            >= 2)
        .await
    );
    let body = as_admin(
        &app,
        "mutation { deleteGroupData(groupId: \"acme\") { groupId } }",
        json!({}),
    )
    .await;
    ok(body, "deleteGroupData");
    let erased_at = Instant::now();
    receiver.otherwise(Reply::Status(200));
    let left: Vec<String> = messages(&app, &id)
        .await
        .iter()
        .filter_map(|m| m["eventType"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(left.len(), 2, "globex's and the erasure's: {left:?}");
    assert!(
        eventually(Duration::from_secs(10), async || {
            receiver
                .received()
                .iter()
                .any(|r| r.at > erased_at && r.body["data"]["groupId"] == "globex")
        })
        .await
    );
    let erased = receiver.of_type("group.erased");
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0].body["data"], json!({ "groupId": "acme" }));
    for message in receiver.received().iter().filter(|r| r.at > erased_at) {
        if message.body["type"] != "group.erased" {
            assert!(
                !message.raw.contains("acme"),
                "nothing of acme's after: {}",
                message.raw
            );
        }
    }
}

/// Writes racing an erasure: once `deleteUserData` has answered, every
/// message that arrives about the user tells of an event that exists (a
/// write after the erasure), never of one the erasure removed.
async fn an_erasure_wins_the_race_with_writes_and_sends(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    publish(&app, "tour", &["a", "b", "c"], "USER").await;
    create_endpoint(&app, json!({ "url": receiver.url })).await;
    let url = app.graphql_url();
    let writer = tokio::spawn(async move {
        let token = crate::helpers::token("ann", &[]);
        for n in 0..90 {
            let mutation = match n % 3 {
                0 => "mutation { restartFlow(flow: \"tour\") { revision } }",
                1 => "mutation { completeStep(flow: \"tour\", step: \"a\") { revision } }",
                _ => "mutation { skipStep(flow: \"tour\", step: \"b\") { revision } }",
            };
            let _ = post_graphql(&url, Some(&token), mutation, json!({})).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = as_admin(
        &app,
        "mutation { deleteUserData(userId: \"ann\") { userId } }",
        json!({}),
    )
    .await;
    ok(body, "deleteUserData");
    let answered = Instant::now();
    writer.await.expect("the writes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let existing = event_ids(&app, "userId: \"ann\"").await;
    for message in receiver.received().iter().filter(|r| r.at > answered) {
        if message.body["type"] == "user.erased" {
            continue;
        }
        let event = message.body["data"]["eventId"].as_str().unwrap_or_default();
        assert!(
            existing.contains(event),
            "event {event} was erased, yet its message arrived after the erasure answered"
        );
    }
    assert_eq!(receiver.of_type("user.erased").len(), 1);
}

/// A message of the user on its way when the erasure runs: the erasure
/// answers only once that attempt has ended, so that nothing of theirs is
/// still leaving after it answered.
async fn an_erasure_answers_after_an_attempt_in_flight(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Reply::Slow(Duration::from_secs(3))]);
    publish(&app, "tour", &["a"], "USER").await;
    create_endpoint(&app, json!({ "url": receiver.url })).await;
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    assert!(
        eventually(Duration::from_secs(5), async || !receiver
            .received()
            .is_empty())
        .await
    );
    let arrived = receiver.received()[0].at;
    let body = as_admin(
        &app,
        "mutation { deleteUserData(userId: \"ann\") { userId } }",
        json!({}),
    )
    .await;
    ok(body, "deleteUserData");
    assert!(
        arrived.elapsed() >= Duration::from_secs(3),
        "the erasure answered while the attempt was on its way"
    );
}

on_both_backends!(
    an_erasure_answers_after_an_attempt_in_flight,
    erasing_a_user_removes_their_messages,
    erasing_a_group_removes_its_messages,
    an_erasure_wins_the_race_with_writes_and_sends,
);
