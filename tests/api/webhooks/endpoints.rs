//! Registering endpoints: every bad input is a clear error that changes
//! nothing; admins only; the secret is shown once; the command line.

use serde_json::{Value, json};

use super::{ENDPOINT, Receiver, as_admin, as_user, create_endpoint, ok, publish};
use crate::helpers::{Backend, TestApp, command, error_code, spawn_app, spawn_app_with};
use crate::on_both_backends;

async fn create(app: &TestApp, input: Value) -> Value {
    as_admin(
        app,
        &format!(
            "mutation($input: WebhookEndpointInput!) {{ createWebhookEndpoint(input: $input) \
             {{ endpoint {{ {ENDPOINT} }} secret }} }}"
        ),
        json!({ "input": input }),
    )
    .await
}

async fn endpoint_count(app: &TestApp) -> usize {
    let body = as_admin(app, "{ webhookEndpoints { id } }", json!({})).await;
    ok(body, "webhookEndpoints").as_array().map_or(0, Vec::len)
}

fn assert_refused(body: &Value, code: &str, mention: &str) {
    assert_eq!(error_code(body), code, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mention),
        "the message names {mention:?}: {message}"
    );
}

/// Without WEBHOOK_ALLOW_PRIVATE: https:// only, public addresses only.
async fn urls_are_checked(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.webhook_allow_private = false).await;
    publish(&app, "tour", &["a"], "USER").await;
    let long = format!("https://example.com/{}", "a".repeat(2100));
    let cases: [(&str, &str); 11] = [
        ("http://example.com/hooks", "https://"),
        ("https://user:pw@example.com/hooks", "credentials"),
        ("https://127.0.0.1/hooks", "private"),
        ("https://10.0.0.8:8443/hooks", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::1]/hooks", "private"),
        ("https://localhost/hooks", "WEBHOOK_ALLOW_PRIVATE"),
        ("https://[::ffff:192.168.1.1]/", "private"),
        ("not a url", "not a URL"),
        ("ftp://example.com/", "https://"),
        (long.as_str(), "2048"),
    ];
    for (url, mention) in cases {
        let body = create(&app, json!({ "url": url })).await;
        assert_refused(&body, "BAD_USER_INPUT", mention);
    }
    assert_eq!(endpoint_count(&app).await, 0, "nothing was created");
    // A public name is taken (it need not resolve from here).
    let body = create(
        &app,
        json!({ "url": "https://hooks.example.com/onboarding" }),
    )
    .await;
    let created = ok(body, "createWebhookEndpoint");
    assert_eq!(
        created["endpoint"]["url"],
        "https://hooks.example.com/onboarding"
    );
    // A name is checked on the addresses it resolves to: this machine's
    // own name resolves to one of its addresses, a private one.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("a hostname");
    let host = host.trim();
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, 443))
        .await
        .expect("the machine's name resolves")
        .collect();
    assert!(
        addresses.iter().all(|a| a.ip().is_loopback()
            || matches!(a.ip(), std::net::IpAddr::V4(ip) if ip.is_private())),
        "{addresses:?}"
    );
    let body = create(&app, json!({ "url": format!("https://{host}/hooks") })).await;
    assert_refused(&body, "BAD_USER_INPUT", "private");
    assert_eq!(endpoint_count(&app).await, 1);
}

async fn filters_and_descriptions_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    publish(&app, "tour", &["a"], "USER").await;
    let receiver = Receiver::start().await;
    let cases = [
        (
            json!({ "url": receiver.url, "eventTypes": ["flow.finished"] }),
            "flow.finished",
        ),
        (json!({ "url": receiver.url, "flows": ["nope"] }), "nope"),
        (
            json!({ "url": receiver.url, "description": "a\u{0}b" }),
            "NUL",
        ),
        (
            json!({ "url": receiver.url, "description": "d".repeat(1001) }),
            "1000",
        ),
    ];
    for (input, mention) in cases {
        let body = create(&app, input).await;
        assert_refused(&body, "BAD_USER_INPUT", mention);
    }
    assert_eq!(endpoint_count(&app).await, 0, "nothing was created");
    let body = create(
        &app,
        json!({
            "url": receiver.url, "description": "CRM", "eventTypes": ["flow.completed", "flow.completed"],
            "flows": ["tour"],
        }),
    )
    .await;
    let created = ok(body, "createWebhookEndpoint");
    assert_eq!(created["endpoint"]["eventTypes"], json!(["flow.completed"]));
    assert_eq!(created["endpoint"]["flows"], json!(["tour"]));
    assert_eq!(created["endpoint"]["description"], "CRM");
    assert_eq!(created["endpoint"]["enabled"], true);
    assert_eq!(created["endpoint"]["disabledReason"], Value::Null);
    let secret = created["secret"].as_str().expect("a secret");
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 6 + 32,
        "{secret}"
    );

    // A left-out input keeps url and filters; a left-out `enabled` keeps it.
    let id = created["endpoint"]["id"].clone();
    let update = |input: Value| {
        let app = &app;
        async move {
            as_admin(
                app,
                &format!(
                    "mutation($id: ID!, $input: WebhookEndpointInput, $enabled: Boolean) {{ \
                     updateWebhookEndpoint(id: $id, input: $input, enabled: $enabled) {{ {ENDPOINT} }} }}"
                ),
                input,
            )
            .await
        }
    };
    let disabled = ok(
        update(json!({ "id": id, "enabled": false })).await,
        "updateWebhookEndpoint",
    );
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["flows"], json!(["tour"]));
    assert!(
        disabled["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("admin"))
    );
    let body = update(json!({ "id": id, "input": { "url": "ftp://x" } })).await;
    assert_refused(&body, "BAD_USER_INPUT", "https://");
    let changed = ok(
        update(json!({ "id": id, "input": { "url": receiver.url } })).await,
        "updateWebhookEndpoint",
    );
    assert_eq!(
        changed["flows"],
        json!([]),
        "the input replaces the filters"
    );
    assert_eq!(changed["enabled"], false, "enabled is kept");
}

async fn unknown_ids_and_strangers_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let (id, _) = create_endpoint(&app, json!({ "url": receiver.url })).await;
    // Unknown, NUL-holding and overlong ids alike: a clear error, never a 500.
    let long = "e".repeat(10_000);
    for unknown in ["ep_nope", "ep_\u{0}x", long.as_str()] {
        for mutation in [
            "deleteWebhookEndpoint",
            "rotateWebhookSecret",
            "testWebhookEndpoint",
            "resendWebhookMessage",
            "updateWebhookEndpoint",
        ] {
            let body = as_admin(
                &app,
                &format!(
                    "mutation($id: ID!) {{ {mutation}(id: $id) {} }}",
                    selection(mutation)
                ),
                json!({ "id": unknown }),
            )
            .await;
            assert_refused(&body, "BAD_USER_INPUT", "There is no webhook");
        }
    }
    let body = as_admin(
        &app,
        "{ webhookMessages(endpointId: \"ep_nope\") { edges { cursor } } }",
        json!({}),
    )
    .await;
    assert_refused(&body, "BAD_USER_INPUT", "ep_nope");
    let body = as_admin(
        &app,
        "query($id: ID!) { webhookMessages(endpointId: $id, first: 101) { edges { cursor } } }",
        json!({ "id": id }),
    )
    .await;
    assert_refused(&body, "BAD_USER_INPUT", "100");
    let body = as_admin(
        &app,
        "query($id: ID!) { webhookMessages(endpointId: $id, after: \"x\") { edges { cursor } } }",
        json!({ "id": id }),
    )
    .await;
    assert_refused(&body, "BAD_USER_INPUT", "cursor");
    // A user who is not an admin learns nothing and changes nothing.
    let body = as_user(&app, "ann", "{ webhookEndpoints { id url } }", json!({})).await;
    assert_refused(&body, "FORBIDDEN", "admin");
    let body = as_user(
        &app,
        "ann",
        "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }",
        json!({ "id": id }),
    )
    .await;
    assert_refused(&body, "FORBIDDEN", "admin");
    let response = crate::helpers::post_graphql(
        &app.graphql_url(),
        None,
        "mutation { createWebhookEndpoint(input: {url: \"https://example.com\"}) { secret } }",
        json!({}),
    )
    .await;
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    assert_eq!(endpoint_count(&app).await, 1);
    let body = as_admin(
        &app,
        "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(ok(body, "deleteWebhookEndpoint"), true);
    assert_eq!(endpoint_count(&app).await, 0);
}

fn selection(mutation: &str) -> &'static str {
    match mutation {
        "deleteWebhookEndpoint" => "",
        "rotateWebhookSecret" => "{ secret }",
        "updateWebhookEndpoint" => "{ enabled }",
        _ => "{ id }",
    }
}

/// At most 50 endpoints, however many are asked for at once.
async fn at_most_fifty_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut creations = tokio::task::JoinSet::new();
    for n in 0..60 {
        let url = app.graphql_url();
        creations.spawn(async move {
            let token = crate::helpers::token("the-admin", &["admin"]);
            let response = crate::helpers::post_graphql(
                &url,
                Some(&token),
                "mutation($input: WebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
                json!({ "input": { "url": format!("https://hooks-{n}.example.com/") } }),
            )
            .await;
            response.json::<Value>().await.expect("JSON")
        });
    }
    let answers = creations.join_all().await;
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("errors").is_some())
        .collect();
    assert_eq!(refused.len(), 10, "{refused:?}");
    for body in refused {
        assert_refused(body, "BAD_USER_INPUT", "50");
    }
    assert_eq!(endpoint_count(&app).await, 50);
}

/// `onboarding webhooks add`, `list` and `remove`, for operators who
/// configure by script.
async fn the_command_line_adds_lists_and_removes(backend: Backend) {
    let app = spawn_app(backend).await;
    publish(&app, "tour", &["a"], "USER").await;
    let url = app.db.url.clone();
    let env = [("DATABASE_URL", url.as_str())];
    let refused = command(&["webhooks", "add", "http://127.0.0.1:9/hooks"], &env)
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("WEBHOOK_ALLOW_PRIVATE"), "{stderr}");
    let added = command(
        &[
            "webhooks",
            "add",
            "https://hooks.example.com/x",
            "--event",
            "flow.completed",
            "--flow",
            "tour",
            "--description",
            "CRM",
        ],
        &env,
    )
    .output()
    .expect("runs");
    let stdout = String::from_utf8_lossy(&added.stdout).into_owned();
    assert!(
        added.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
            .to_owned()
    };
    let (id, secret) = (field("id"), field("secret"));
    assert!(secret.starts_with("whsec_"), "{stdout}");
    let listed = command(&["webhooks", "list"], &env).output().expect("runs");
    let list = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        list.contains(&id) && list.contains("flow.completed") && list.contains("tour"),
        "{list}"
    );
    assert!(!list.contains(&secret), "the secret is shown once: {list}");
    let removed = command(&["webhooks", "remove", &id], &env)
        .output()
        .expect("runs");
    assert!(removed.status.success());
    let again = command(&["webhooks", "remove", &id], &env)
        .output()
        .expect("runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&id));
    assert_eq!(endpoint_count(&app).await, 0);
}

on_both_backends!(
    urls_are_checked,
    filters_and_descriptions_are_checked,
    unknown_ids_and_strangers_are_refused,
    at_most_fifty_endpoints,
    the_command_line_adds_lists_and_removes,
);
