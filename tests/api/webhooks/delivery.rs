//! Delivery: what arrives, once, signed, in the contract's shape; retries
//! with the same id, `Retry-After`, 410, redirects; filters; rotation; a
//! receiver that never answers slows nobody.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    MESSAGE, Receiver, Reply, as_admin, create_endpoint, endpoint, eventually, messages, ok,
    publish, write,
};
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

const SETTLE: Duration = Duration::from_secs(10);

/// Every flow event type, the erasure aside, from one user's and one
/// group's writes and the original API.
async fn every_change_arrives_once_signed_in_the_contracts_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    publish(&app, "tour", &["a", "b", "c"], "USER").await;
    publish(&app, "setup", &["invite"], "GROUP").await;
    let (_, secret) = create_endpoint(&app, json!({ "url": receiver.url })).await;

    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    write(
        &app,
        "ann",
        "completeStep",
        r#"flow: "tour", step: "a", data: {secret: 1}"#,
    )
    .await;
    write(&app, "ann", "skipStep", r#"flow: "tour", step: "b""#).await;
    write(&app, "ann", "goToStep", r#"flow: "tour", step: "a""#).await;
    let completed = write(&app, "ann", "completeStep", r#"flow: "tour", step: "c""#).await;
    write(&app, "ann", "dismissFlow", r#"flow: "tour""#).await;
    write(&app, "ann", "restartFlow", r#"flow: "tour""#).await;
    let until = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
    write(
        &app,
        "ann",
        "snoozeFlow",
        &format!(r#"flow: "tour", until: "{until}""#),
    )
    .await;
    publish(&app, "tour", &["a", "b", "c", "d"], "USER").await;
    let body = as_admin(
        &app,
        "mutation { publishFlow(input: {key: \"tour\", title: \"tour\", steps: [{key: \"a\", \
         title: \"a\"}, {key: \"z\", title: \"z\"}], reonboarding: RESTART_ALL}) { key } }",
        json!({}),
    )
    .await;
    ok(body, "publishFlow");
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    let body = super::as_user(
        &app,
        "ann",
        "mutation { completeOnboarding(step: 3) { revision } }",
        json!({}),
    )
    .await;
    ok(body, "completeOnboarding");
    let body = super::as_user(
        &app,
        "ann",
        "mutation { resetOnboarding { revision } }",
        json!({}),
    )
    .await;
    ok(body, "resetOnboarding");
    let token = crate::helpers::sign(
        &json!({ "sub": "bob", "org_id": "acme", "exp": crate::helpers::unix_now() + 600 }),
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    );
    let response = crate::helpers::post_graphql(
        &app.graphql_url(),
        Some(&token),
        "mutation { completeStep(flow: \"setup\", step: \"invite\") { revision } }",
        json!({}),
    )
    .await;
    let body: Value = response.json().await.expect("JSON");
    ok(body, "completeStep");

    // Every event of the history, as the API lists them.
    let history = as_admin(
        &app,
        "{ ann: flowEvents(userId: \"ann\", first: 100) { edges { node { id type flow } } } \
         onboarding: flowEvents(userId: \"ann\", flow: \"onboarding\", first: 100) { edges { node { id type } } } \
         acme: flowEvents(flow: \"setup\", groupId: \"acme\", first: 100) { edges { node { id type flow } } } }",
        json!({}),
    )
    .await;
    assert!(history.get("errors").is_none(), "{history}");
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for list in ["ann", "onboarding", "acme"] {
        for edge in history["data"][list]["edges"].as_array().expect("edges") {
            expected.insert(edge["node"]["id"].as_str().expect("an id").to_owned());
        }
    }
    let arrived = eventually(SETTLE, async || {
        let ids: BTreeSet<String> = receiver
            .received()
            .iter()
            .filter_map(|r| r.body["data"]["eventId"].as_str().map(str::to_owned))
            .collect();
        ids == expected
    })
    .await;
    let received = receiver.received();
    assert!(
        arrived,
        "a message for every event: {expected:?}, got {:?}",
        received.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for message in &received {
        *by_id.entry(message.id.as_str()).or_default() += 1;
        assert!(message.signed_with(&secret), "signed: {message:?}");
        assert_eq!(message.content_type, "application/json");
        assert!(
            message.user_agent.starts_with("onboarding/"),
            "{}",
            message.user_agent
        );
        assert!(message.id.starts_with("msg_"), "{}", message.id);
        let sent_at: i64 = message.timestamp.parse().expect("Unix seconds");
        assert!((sent_at - crate::helpers::unix_now() as i64).abs() < 60);
        let body = &message.body;
        let keys: BTreeSet<&str> = body
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["type", "timestamp", "data"]),
            "{body}"
        );
        let data = body["data"].as_object().expect("data");
        let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "eventId", "userId", "groupId", "flow", "version", "step", "actor", "revision",
                "at", "state"
            ]),
            "{body}"
        );
        let state: BTreeSet<&str> = body["data"]["state"]
            .as_object()
            .expect("state")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            state,
            BTreeSet::from([
                "status",
                "currentStep",
                "doneSteps",
                "totalSteps",
                "completedAt"
            ])
        );
        assert_eq!(body["timestamp"], body["data"]["at"], "the event's time");
        assert!(
            !message.raw.contains("secret"),
            "step data is never sent: {}",
            message.raw
        );
    }
    assert!(
        by_id.values().all(|count| *count == 1),
        "each message once to a receiver that answers 200: {by_id:?}"
    );
    let types: BTreeSet<&str> = received
        .iter()
        .filter_map(|r| r.body["type"].as_str())
        .collect();
    let every = BTreeSet::from([
        "flow.started",
        "flow.step.completed",
        "flow.step.skipped",
        "flow.step.set",
        "flow.completed",
        "flow.dismissed",
        "flow.snoozed",
        "flow.restarted",
        "flow.reset",
        "flow.reonboarded",
    ]);
    assert_eq!(types, every, "one type per FlowEventType");

    // Completing the last step sends both messages, with the same state.
    let last_step: Vec<&Value> = received
        .iter()
        .map(|r| &r.body)
        .filter(|body| body["data"]["revision"] == completed && body["data"]["flow"] == "tour")
        .collect();
    let kinds: BTreeSet<&str> = last_step
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["flow.step.completed", "flow.completed"])
    );
    for body in &last_step {
        assert_eq!(body["data"]["state"]["status"], "COMPLETED", "{body}");
        assert_eq!(body["data"]["state"]["doneSteps"], 3, "{body}");
        assert_eq!(body["data"]["state"]["totalSteps"], 3, "{body}");
        assert!(body["data"]["state"]["completedAt"].is_string(), "{body}");
        assert_eq!(body["data"]["userId"], "ann");
        assert_eq!(body["data"]["groupId"], Value::Null);
        assert_eq!(body["data"]["actor"], "ann");
    }
    // A group's change names the group, and its member as the user.
    let group = received
        .iter()
        .find(|r| r.body["data"]["flow"] == "setup")
        .expect("the group's message");
    assert_eq!(group.body["data"]["groupId"], "acme");
    assert_eq!(group.body["data"]["userId"], "bob");
    assert_eq!(group.body["data"]["state"]["totalSteps"], 1);
    // Messages of one state carry its revision, for receivers to order.
    let revisions: Vec<i64> = received
        .iter()
        .filter(|r| r.body["data"]["flow"] == "tour")
        .filter_map(|r| r.body["data"]["revision"].as_i64())
        .collect();
    assert!(
        revisions.iter().all(|revision| *revision >= 1),
        "{revisions:?}"
    );
}

/// A 500 then a 200: the same message again, with the same `webhook-id`,
/// after the first wait of the schedule (about 5 s).
async fn a_failed_attempt_is_sent_again_with_the_same_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Reply::Status(500)]);
    publish(&app, "tour", &["a"], "USER").await;
    let (endpoint_id, _) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    assert!(
        eventually(Duration::from_secs(12), async || receiver.received().len()
            >= 2)
        .await,
        "sent again: {:?}",
        receiver.received()
    );
    let received = receiver.received();
    assert_eq!(received[0].id, received[1].id, "the same webhook-id");
    assert_eq!(received[0].raw, received[1].raw, "the same body");
    let wait = received[1].at - received[0].at;
    assert!(
        wait >= Duration::from_millis(4_400) && wait < Duration::from_secs(7),
        "about 5 s later: {wait:?}"
    );
    let listed = messages(&app, &endpoint_id).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let message = &listed[0];
    assert_eq!(message["id"], received[0].id.as_str());
    assert_eq!(message["status"], "SUCCEEDED");
    assert_eq!(message["eventType"], "flow.started");
    assert_eq!(message["nextAttemptAt"], Value::Null);
    let attempts = message["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{message}");
    assert_eq!(attempts[0]["responseStatus"], 500);
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{message}"
    );
    assert_eq!(attempts[1]["responseStatus"], 200);
    assert_eq!(attempts[1]["error"], Value::Null);
}

/// 429 with `Retry-After: 2`: the next attempt waits 2 s, not the schedule's 5 s.
async fn retry_after_is_honoured(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Reply::RetryAfter(429, "2")]);
    publish(&app, "tour", &["a"], "USER").await;
    create_endpoint(&app, json!({ "url": receiver.url })).await;
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    assert!(
        eventually(Duration::from_secs(8), async || receiver.received().len()
            >= 2)
        .await
    );
    let received = receiver.received();
    let wait = received[1].at - received[0].at;
    assert!(
        wait >= Duration::from_millis(1_900) && wait < Duration::from_millis(4_000),
        "Retry-After: 2 waits 2 s: {wait:?}"
    );
}

/// 410 disables the endpoint at once and says why; enabling it again
/// sends what was pending.
async fn gone_disables_the_endpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Reply::Status(410)]);
    publish(&app, "tour", &["a", "b"], "USER").await;
    let (id, _) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    assert!(
        eventually(SETTLE, async || !endpoint(&app, &id).await["enabled"]
            .as_bool()
            .unwrap_or(true))
        .await
    );
    let disabled = endpoint(&app, &id).await;
    assert!(
        disabled["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{disabled}"
    );
    // Nothing more is sent while it is disabled.
    write(&app, "ann", "completeStep", r#"flow: "tour", step: "a""#).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 1);
    // Enabled again: the message that met the 410 is sent.
    let body = as_admin(
        &app,
        "mutation($id: ID!) { updateWebhookEndpoint(id: $id, enabled: true) { enabled disabledReason } }",
        json!({ "id": id }),
    )
    .await;
    let updated = ok(body, "updateWebhookEndpoint");
    assert_eq!(updated, json!({ "enabled": true, "disabledReason": null }));
    let first = receiver.received()[0].id.clone();
    assert!(
        eventually(SETTLE, async || receiver.received()[1..]
            .iter()
            .any(|r| r.id == first))
        .await,
        "the message that met the 410 is sent again: {:?}",
        receiver
            .received()
            .iter()
            .map(|r| &r.raw)
            .collect::<Vec<_>>()
    );
}

/// Redirects are not followed: a 3xx is a failed attempt.
async fn redirects_are_not_followed(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(307));
    publish(&app, "tour", &["a"], "USER").await;
    let (id, _) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    let failed = eventually(SETTLE, async || {
        messages(&app, &id)
            .await
            .first()
            .is_some_and(|m| !m["attempts"].as_array().expect("attempts").is_empty())
    })
    .await;
    assert!(failed);
    let message = messages(&app, &id).await.remove(0);
    assert_eq!(message["status"], "PENDING");
    assert_eq!(message["attempts"][0]["responseStatus"], 307);
    assert!(
        message["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("redirect")),
        "{message}"
    );
    assert!(
        message["nextAttemptAt"].is_string(),
        "a retry is scheduled: {message}"
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing followed the redirect"
    );
}

/// Type and flow filters both apply; erasures ignore the flow filter.
async fn filters_by_type_and_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    let (all, completions) = (Receiver::start().await, Receiver::start().await);
    publish(&app, "tour", &["a"], "USER").await;
    publish(&app, "other", &["a"], "USER").await;
    create_endpoint(&app, json!({ "url": all.url })).await;
    create_endpoint(
        &app,
        json!({
            "url": completions.url,
            "eventTypes": ["flow.completed", "user.erased"],
            "flows": ["tour"],
        }),
    )
    .await;
    write(&app, "ann", "completeStep", r#"flow: "tour", step: "a""#).await;
    write(&app, "ann", "completeStep", r#"flow: "other", step: "a""#).await;
    assert!(
        eventually(SETTLE, async || all.received().len() >= 4).await,
        "{:?}",
        all.received()
    );
    let body = as_admin(
        &app,
        "mutation { deleteUserData(userId: \"ann\") { userId } }",
        json!({}),
    )
    .await;
    ok(body, "deleteUserData");
    assert!(
        eventually(SETTLE, async || all.received().len() >= 5).await,
        "{:?}",
        all.received()
    );
    assert!(eventually(SETTLE, async || completions.received().len() >= 2).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<(String, String)> = completions
        .received()
        .iter()
        .map(|r| {
            (
                r.body["type"].as_str().unwrap_or_default().to_owned(),
                r.body["data"]["flow"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert!(
        got.contains(&("flow.completed".to_owned(), "tour".to_owned())),
        "{got:?}"
    );
    assert!(
        got.contains(&("user.erased".to_owned(), "-".to_owned())),
        "{got:?}"
    );
    assert_eq!(got.len(), 2, "only those: {got:?}");
}

/// After a rotation both secrets sign, so a receiver on either verifies.
async fn a_rotation_signs_with_both_secrets(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    publish(&app, "tour", &["a"], "USER").await;
    let (id, old) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    let rotated = ok(
        as_admin(
            &app,
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { endpoint { id } secret } }",
            json!({ "id": id }),
        )
        .await,
        "rotateWebhookSecret",
    );
    let new = rotated["secret"].as_str().expect("a secret").to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with("whsec_"), "{new}");
    write(&app, "ann", "startFlow", r#"flow: "tour""#).await;
    assert!(eventually(SETTLE, async || !receiver.received().is_empty()).await);
    let message = receiver.received().remove(0);
    assert_eq!(
        message.signature.split(' ').count(),
        2,
        "{}",
        message.signature
    );
    assert!(message.signed_with(&old) && message.signed_with(&new));
}

/// `testWebhookEndpoint` and `resendWebhookMessage` send at once and answer
/// with the attempt; a resend keeps the message's id.
async fn test_and_resend_send_now(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let (id, secret) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    let tested = ok(
        as_admin(
            &app,
            &format!("mutation($id: ID!) {{ testWebhookEndpoint(id: $id) {{ {MESSAGE} }} }}"),
            json!({ "id": id }),
        )
        .await,
        "testWebhookEndpoint",
    );
    assert_eq!(tested["eventType"], "webhook.test");
    assert_eq!(tested["status"], "SUCCEEDED", "{tested}");
    assert_eq!(tested["attempts"][0]["responseStatus"], 200);
    let received = receiver.received();
    assert_eq!(received.len(), 1, "sent before the answer");
    assert_eq!(received[0].body["type"], "webhook.test");
    assert!(received[0].signed_with(&secret));
    let resent = ok(
        as_admin(
            &app,
            &format!("mutation($id: ID!) {{ resendWebhookMessage(id: $id) {{ {MESSAGE} }} }}"),
            json!({ "id": tested["id"] }),
        )
        .await,
        "resendWebhookMessage",
    );
    assert_eq!(resent["id"], tested["id"]);
    assert_eq!(
        resent["attempts"].as_array().map(Vec::len),
        Some(2),
        "{resent}"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].id, received[0].id);
}

/// A receiver that accepts and never answers holds up its own messages
/// only: the writes keep their pace and another endpoint gets everything.
async fn a_receiver_that_never_answers_slows_nobody(backend: Backend) {
    let app = spawn_app(backend).await;
    let (stuck, healthy) = (Receiver::start().await, Receiver::start().await);
    stuck.otherwise(Reply::Hang);
    publish(&app, "tour", &["a"], "USER").await;
    create_endpoint(&app, json!({ "url": stuck.url })).await;
    create_endpoint(&app, json!({ "url": healthy.url })).await;
    let mut slowest = Duration::ZERO;
    for n in 0..100 {
        let started = Instant::now();
        write(&app, &format!("user-{n}"), "startFlow", r#"flow: "tour""#).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "the slowest write: {slowest:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), async || healthy.received().len()
            >= 100)
        .await,
        "the other endpoint got {} of 100",
        healthy.received().len()
    );
    let body = as_admin(&app, "{ webhookEndpoints { id } }", json!({})).await;
    ok(body, "webhookEndpoints");
}

on_both_backends!(
    every_change_arrives_once_signed_in_the_contracts_shape,
    a_failed_attempt_is_sent_again_with_the_same_id,
    retry_after_is_honoured,
    gone_disables_the_endpoint,
    redirects_are_not_followed,
    filters_by_type_and_flow,
    a_rotation_signs_with_both_secrets,
    test_and_resend_send_now,
    a_receiver_that_never_answers_slows_nobody,
);
