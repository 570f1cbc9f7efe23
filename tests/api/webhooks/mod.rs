//! Webhooks (design/webhooks.md): every change leaves the service as a
//! signed POST, at least once, to the endpoints admins register. A real
//! receiver on loopback records what arrives and answers as each test
//! scripts it; the tests' servers allow private receivers
//! (WEBHOOK_ALLOW_PRIVATE), but for the test of that rule.

mod delivery;
mod endpoints;
mod erasure;
mod receiver;
mod replicas;

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, post_graphql, token};
pub use receiver::{Receiver, Reply};

const ADMIN: &str = "the-admin";

/// Every field of a `WebhookEndpoint`.
const ENDPOINT: &str = "id url description eventTypes flows enabled disabledReason createdAt";
/// Every field of a `WebhookMessage`.
const MESSAGE: &str = "id endpointId eventType status \
     attempts { at responseStatus error durationMs } nextAttemptAt createdAt";

async fn as_admin(app: &TestApp, query: &str, variables: Value) -> Value {
    let token = token(ADMIN, &["admin"]);
    let response = post_graphql(&app.graphql_url(), Some(&token), query, variables).await;
    assert_eq!(response.status(), 200, "a GraphQL response is a 200");
    response.json().await.expect("a JSON body")
}

async fn as_user(app: &TestApp, user: &str, query: &str, variables: Value) -> Value {
    let token = token(user, &[]);
    let response = post_graphql(&app.graphql_url(), Some(&token), query, variables).await;
    assert_eq!(response.status(), 200, "a GraphQL response is a 200");
    response.json().await.expect("a JSON body")
}

/// `data.<field>` of a body that must have no errors.
fn ok(body: Value, field: &str) -> Value {
    assert!(body.get("errors").is_none(), "{field} succeeds: {body}");
    body["data"][field].clone()
}

/// Publishes a USER flow (or GROUP, with `scope`) with `steps`.
async fn publish(app: &TestApp, key: &str, steps: &[&str], scope: &str) {
    let steps: Vec<Value> = steps
        .iter()
        .map(|step| json!({ "key": step, "title": step }))
        .collect();
    let input = json!({ "key": key, "title": key, "steps": steps, "scope": scope });
    ok(
        as_admin(
            app,
            "mutation($input: PublishFlowInput!) { publishFlow(input: $input) { key } }",
            json!({ "input": input }),
        )
        .await,
        "publishFlow",
    );
}

/// Registers an endpoint; its id and secret.
async fn create_endpoint(app: &TestApp, input: Value) -> (String, String) {
    let created = ok(
        as_admin(
            app,
            &format!(
                "mutation($input: WebhookEndpointInput!) {{ createWebhookEndpoint(input: \
                 $input) {{ endpoint {{ {ENDPOINT} }} secret }} }}"
            ),
            json!({ "input": input }),
        )
        .await,
        "createWebhookEndpoint",
    );
    (
        created["endpoint"]["id"]
            .as_str()
            .expect("an id")
            .to_owned(),
        created["secret"].as_str().expect("a secret").to_owned(),
    )
}

/// A user's write of a flow; the state's revision after it.
async fn write(app: &TestApp, user: &str, mutation: &str, arguments: &str) -> i64 {
    let body = as_user(
        app,
        user,
        &format!("mutation {{ {mutation}({arguments}) {{ revision }} }}"),
        json!({}),
    )
    .await;
    ok(body, mutation)["revision"].as_i64().expect("a revision")
}

async fn endpoint(app: &TestApp, id: &str) -> Value {
    let endpoints = ok(
        as_admin(
            app,
            &format!("{{ webhookEndpoints {{ {ENDPOINT} }} }}"),
            json!({}),
        )
        .await,
        "webhookEndpoints",
    );
    endpoints
        .as_array()
        .expect("a list")
        .iter()
        .find(|endpoint| endpoint["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn messages(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let page = ok(
        as_admin(
            app,
            &format!(
                "query($id: ID!) {{ webhookMessages(endpointId: $id, first: 100) {{ \
                 edges {{ cursor node {{ {MESSAGE} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
            ),
            json!({ "id": endpoint }),
        )
        .await,
        "webhookMessages",
    );
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

/// Waits until `check` holds, up to `limit`; whether it did.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
