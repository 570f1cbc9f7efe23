//! Live updates (design/live.md) over server-sent events, the `graphql-sse`
//! protocol's distinct connections mode: the state first, then every
//! committed change, newest never missed; refused as `flowState` refuses;
//! ended by erasure; across two server processes on one Postgres, and
//! after the listening connection is killed.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, ServerProcess, TestApp, TestDatabase, post_graphql, spawn_app, spawn_app_with, token,
};
use crate::on_both_backends;

const SUBSCRIBE: &str = "subscription($flow: String, $userId: String) { \
     flowStateChanged(flow: $flow, userId: $userId) { flow status currentStep revision } }";

/// An open event stream and what has arrived of it.
struct Events {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Events {
    /// Subscribes at `address` (`http://host:port`) as `user`.
    async fn open(address: &str, user: &str, variables: Value) -> Self {
        let response = subscribe(address, Some(&token(user, &[])), SUBSCRIBE, variables).await;
        assert_eq!(response.status(), 200, "a subscription streams");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next event's name and data, waiting up to 10 s; none once the
    /// stream has ended.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, data));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")?
                .expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next `next` event's payload.
    async fn state(&mut self) -> Value {
        let (name, data) = self.next().await.expect("a next event");
        assert_eq!(name, "next", "{data}");
        serde_json::from_str(&data).expect("JSON")
    }

    /// Reads states until one has `revision`, and returns it; fails if the
    /// stream passes it.
    async fn until_revision(&mut self, revision: i64) -> Value {
        loop {
            let state = self.state().await;
            let seen = state["data"]["flowStateChanged"]["revision"]
                .as_i64()
                .unwrap();
            assert!(
                seen <= revision,
                "revision {seen} arrived past {revision}: {state}"
            );
            if seen == revision {
                return state;
            }
        }
    }
}

async fn subscribe(
    address: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{address}/graphql/stream"))
        .header("accept", "text/event-stream")
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the server answers")
}

async fn publish_tour(graphql_url: &str) {
    let published = post_graphql(
        graphql_url,
        Some(&token("the-admin", &["admin"])),
        "mutation { publishFlow(input: {key: \"tour\", title: \"Tour\", steps: [{key: \"a\", \
         title: \"A\"}, {key: \"b\", title: \"B\"}, {key: \"c\", title: \"C\"}]}) { key } }",
        json!({}),
    )
    .await;
    assert_eq!(published.status(), 200);
}

async fn complete(graphql_url: &str, user: &str, step: &str) -> i64 {
    let response = post_graphql(
        graphql_url,
        Some(&token(user, &[])),
        "mutation($step: String!) { completeStep(flow: \"tour\", step: $step) { revision } }",
        json!({ "step": step }),
    )
    .await;
    let body: Value = response.json().await.expect("JSON");
    body["data"]["completeStep"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("completeStep succeeds: {body}"))
}

async fn app_with_tour(backend: Backend) -> TestApp {
    let app = spawn_app(backend).await;
    publish_tour(&app.graphql_url()).await;
    app
}

async fn the_state_comes_first_then_every_change(backend: Backend) {
    let app = app_with_tour(backend).await;
    let mut events = Events::open(&app.address, "ada", json!({ "flow": "tour" })).await;
    let first = events.state().await;
    assert_eq!(
        first["data"]["flowStateChanged"],
        json!({ "flow": "tour", "status": "NOT_STARTED", "currentStep": "a", "revision": 0 })
    );
    let revision = complete(&app.graphql_url(), "ada", "a").await;
    let changed = events.until_revision(revision).await;
    assert_eq!(changed["data"]["flowStateChanged"]["currentStep"], "b");
    // Another user's change is not this subscriber's.
    complete(&app.graphql_url(), "grace", "a").await;
    let revision = complete(&app.graphql_url(), "ada", "b").await;
    let changed = events.until_revision(revision).await;
    assert_eq!(changed["data"]["flowStateChanged"]["currentStep"], "c");
}

async fn a_burst_of_changes_ends_with_the_newest_state(backend: Backend) {
    let app = app_with_tour(backend).await;
    let mut events = Events::open(&app.address, "ada", json!({ "flow": "tour" })).await;
    events.state().await;
    let mut last = 0;
    for _ in 0..10 {
        for step in ["a", "b", "c"] {
            complete(&app.graphql_url(), "ada", step).await;
        }
        let restarted = post_graphql(
            &app.graphql_url(),
            Some(&token("ada", &[])),
            "mutation { restartFlow(flow: \"tour\") { revision } }",
            json!({}),
        )
        .await;
        let body: Value = restarted.json().await.expect("JSON");
        last = body["data"]["restartFlow"]["revision"]
            .as_i64()
            .expect("restarted");
    }
    let newest = events.until_revision(last).await;
    assert_eq!(newest["data"]["flowStateChanged"]["currentStep"], "a");
}

async fn every_flow_of_the_user_comes_first_one_message_each(backend: Backend) {
    let app = app_with_tour(backend).await;
    let mut events = Events::open(&app.address, "ada", json!({ "flow": null })).await;
    // As `flowStates` lists them: `onboarding`, then the published flows.
    let mut flows = Vec::new();
    for _ in 0..2 {
        let state = events.state().await;
        flows.push(state["data"]["flowStateChanged"]["flow"].clone());
    }
    assert_eq!(flows, [json!("onboarding"), json!("tour")]);
    let revision = complete(&app.graphql_url(), "ada", "a").await;
    let changed = events.until_revision(revision).await;
    assert_eq!(changed["data"]["flowStateChanged"]["flow"], "tour");
}

async fn another_users_flow_is_forbidden_and_an_unknown_flow_is_bad_input(backend: Backend) {
    let app = app_with_tour(backend).await;
    let mut forbidden = Events::open(
        &app.address,
        "ada",
        json!({ "flow": "tour", "userId": "grace" }),
    )
    .await;
    let refused = forbidden.state().await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert_eq!(forbidden.next().await.expect("complete").0, "complete");

    let mut unknown = Events::open(&app.address, "ada", json!({ "flow": "no-such-flow" })).await;
    let refused = unknown.state().await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert_eq!(unknown.next().await.expect("complete").0, "complete");

    // A NUL byte in a key is refused the same way, before any read.
    let mut nul = Events::open(&app.address, "ada", json!({ "flow": "tour\u{0}x" })).await;
    let refused = nul.state().await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert_eq!(nul.next().await.expect("complete").0, "complete");
}

async fn an_admin_may_watch_anyone(backend: Backend) {
    let app = app_with_tour(backend).await;
    let response = subscribe(
        &app.address,
        Some(&token("the-admin", &["admin"])),
        SUBSCRIBE,
        json!({ "flow": "tour", "userId": "grace" }),
    )
    .await;
    let mut events = Events {
        body: response
            .bytes_stream()
            .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
            .boxed(),
        buffer: String::new(),
    };
    events.state().await;
    let revision = complete(&app.graphql_url(), "grace", "a").await;
    events.until_revision(revision).await;
}

async fn erasure_ends_the_subscription_with_nothing_of_theirs_after(backend: Backend) {
    let app = app_with_tour(backend).await;
    complete(&app.graphql_url(), "ada", "a").await;
    let mut events = Events::open(&app.address, "ada", json!({ "flow": "tour" })).await;
    events.state().await;
    let erased = app
        .graphql_as_admin(
            "mutation { deleteUserData(userId: \"ada\") { flowStates } }",
            json!({}),
        )
        .await;
    assert!(erased.get("errors").is_none(), "{erased}");
    let (name, data) = events.next().await.expect("the stream ends with complete");
    assert_eq!(
        name, "complete",
        "nothing of the erased user's follows: {data}"
    );
    assert!(events.next().await.is_none(), "the stream closes");
}

async fn refusals_say_what_to_change(backend: Backend) {
    let app = app_with_tour(backend).await;
    // A subscription over plain GraphQL over HTTP says where to go.
    let response = post_graphql(
        &app.graphql_url(),
        Some(&token("ada", &[])),
        SUBSCRIBE,
        json!({ "flow": "tour" }),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("/graphql/stream"), "{message}");
    // No event stream asked for.
    let response = reqwest::Client::new()
        .post(format!("{}/graphql/stream", app.address))
        .json(&json!({ "query": SUBSCRIBE }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    // A bad token.
    let response = subscribe(&app.address, Some("not-a-token"), SUBSCRIBE, json!({})).await;
    assert_eq!(response.status(), 401);
    // A document over the limits is refused before it runs.
    let deep = format!(
        "subscription {{ {}x{} }}",
        "a { ".repeat(70),
        " }".repeat(70)
    );
    let response = subscribe(&app.address, Some(&token("ada", &[])), &deep, json!({})).await;
    assert_eq!(
        response.status(),
        200,
        "legacy JSON clients get 200 with errors"
    );
    let healthz = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await;
    assert_eq!(healthz.unwrap().status(), 200);
}

async fn past_max_subscriptions_new_ones_are_refused_until_one_ends(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.max_subscriptions = 2).await;
    publish_tour(&app.graphql_url()).await;
    let mut first = Events::open(&app.address, "ada", json!({ "flow": "tour" })).await;
    first.state().await;
    let mut second = Events::open(&app.address, "grace", json!({ "flow": "tour" })).await;
    second.state().await;
    let third = subscribe(
        &app.address,
        Some(&token("alan", &[])),
        SUBSCRIBE,
        json!({ "flow": "tour" }),
    )
    .await;
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.expect("JSON");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("MAX_SUBSCRIPTIONS")
    );
    drop(first);
    // The slot comes back once the server sees the stream closed.
    let mut reopened = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = subscribe(
            &app.address,
            Some(&token("alan", &[])),
            SUBSCRIBE,
            json!({ "flow": "tour" }),
        )
        .await;
        if response.status() == 200 {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "a closed subscription frees its slot");
}

on_both_backends!(
    the_state_comes_first_then_every_change,
    a_burst_of_changes_ends_with_the_newest_state,
    every_flow_of_the_user_comes_first_one_message_each,
    another_users_flow_is_forbidden_and_an_unknown_flow_is_bad_input,
    an_admin_may_watch_anyone,
    erasure_ends_the_subscription_with_nothing_of_theirs_after,
    refusals_say_what_to_change,
    past_max_subscriptions_new_ones_are_refused_until_one_ends,
);

/// Two server processes on one Postgres: a change through one reaches a
/// subscriber of the other; killing that one's listening connection
/// brings its subscriber the current state again, and later changes still
/// arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_cross_replicas_and_survive_a_lost_listener() {
    if crate::helpers::postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let a = ServerProcess::start(&db.url, &[]).await;
    let b = ServerProcess::start(&db.url, &[]).await;
    publish_tour(&a.graphql_url()).await;
    let mut events = Events::open(&a.address, "ada", json!({ "flow": "tour" })).await;
    events.state().await;
    let revision = complete(&b.graphql_url(), "ada", "a").await;
    events.until_revision(revision).await;

    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("connect to the test database");
    let killed: i64 = sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("the listening connections");
    assert!(killed >= 1, "server A listens");
    let again = events.until_revision(revision).await;
    assert_eq!(again["data"]["flowStateChanged"]["currentStep"], "b");
    let revision = complete(&b.graphql_url(), "ada", "b").await;
    events.until_revision(revision).await;
}
