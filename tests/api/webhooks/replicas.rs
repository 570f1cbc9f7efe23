//! Server processes: two on one database send each message once (no
//! attempt twice at once), and a server killed mid-write loses no message
//! of an acknowledged write and sends none of a write that did not commit.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Receiver, Reply, eventually};
use crate::helpers::{
    Backend, ServerProcess, TestDatabase, post_graphql, postgres_server_url, token,
};
use crate::on_both_backends;

const ENV: [(&str, &str); 1] = [("WEBHOOK_ALLOW_PRIVATE", "true")];

async fn admin(server: &ServerProcess, query: &str, variables: Value) -> Value {
    let token = token("the-admin", &["admin"]);
    let response = post_graphql(&server.graphql_url(), Some(&token), query, variables).await;
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    body
}

async fn prepare(server: &ServerProcess, receiver: &Receiver) {
    admin(
        server,
        "mutation { publishFlow(input: {key: \"tour\", title: \"Tour\", steps: [{key: \"a\", \
         title: \"A\"}, {key: \"b\", title: \"B\"}]}) { key } }",
        json!({}),
    )
    .await;
    admin(
        server,
        "mutation($url: String!) { createWebhookEndpoint(input: {url: $url}) { secret } }",
        json!({ "url": receiver.url }),
    )
    .await;
}

/// `count` writes, `concurrency` at a time, spread over `addresses` and
/// over users: the (user, revision) of each acknowledged one.
async fn writes(addresses: Vec<String>, count: usize, concurrency: usize) -> Vec<(String, i64)> {
    let mut tasks = JoinSet::new();
    let per_task = count / concurrency;
    for task in 0..concurrency {
        let addresses = addresses.clone();
        tasks.spawn(async move {
            let mut acknowledged = Vec::new();
            let client = reqwest::Client::new();
            for n in 0..per_task {
                let user = format!("user-{task}-{}", n / 3);
                let mutation = match n % 3 {
                    0 => "mutation { startFlow(flow: \"tour\") { revision } }",
                    1 => "mutation { completeStep(flow: \"tour\", step: \"a\") { revision } }",
                    _ => "mutation { completeStep(flow: \"tour\", step: \"b\") { revision } }",
                };
                let address = &addresses[(task + n) % addresses.len()];
                let sent = client
                    .post(address)
                    .bearer_auth(token(&user, &[]))
                    .json(&json!({ "query": mutation }))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await;
                let Ok(response) = sent else { continue };
                let Ok(body) = response.json::<Value>().await else {
                    continue;
                };
                let revision = body["data"]
                    .as_object()
                    .and_then(|data| data.values().next())
                    .and_then(|state| state["revision"].as_i64());
                if let Some(revision) = revision {
                    acknowledged.push((user, revision));
                }
            }
            acknowledged
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

/// Every event the database holds arrived, none that it does not hold, and
/// every acknowledged write is told of by a message with its revision.
fn check_arrivals(receiver: &Receiver, stored: &[i64], acknowledged: &[(String, i64)]) {
    let received = receiver.received();
    let arrived: BTreeSet<i64> = received
        .iter()
        .filter_map(|r| r.body["data"]["eventId"].as_str()?.parse().ok())
        .collect();
    let stored: BTreeSet<i64> = stored.iter().copied().collect();
    let missing: Vec<&i64> = stored.difference(&arrived).take(10).collect();
    assert!(missing.is_empty(), "events with no message: {missing:?}");
    let unknown: Vec<&i64> = arrived.difference(&stored).take(10).collect();
    assert!(
        unknown.is_empty(),
        "messages of events that never committed: {unknown:?}"
    );
    let told: HashSet<(String, i64)> = received
        .iter()
        .filter_map(|r| {
            let data = &r.body["data"];
            Some((
                data["userId"].as_str()?.to_owned(),
                data["revision"].as_i64()?,
            ))
        })
        .collect();
    for write in acknowledged {
        assert!(
            told.contains(write),
            "no message tells of the acknowledged write {write:?}"
        );
    }
}

/// Two servers on one database, writes through both: each message arrives,
/// and never twice to a receiver that answered 200 every time.
async fn two_servers_send_each_message_once(backend: Backend) {
    if backend == Backend::Postgres && postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(backend).await;
    let receiver = Receiver::start().await;
    let servers = [
        ServerProcess::start(&db.url, &ENV).await,
        ServerProcess::start(&db.url, &ENV).await,
    ];
    prepare(&servers[0], &receiver).await;
    let addresses: Vec<String> = servers.iter().map(ServerProcess::graphql_url).collect();
    let count = match backend {
        Backend::Postgres => 10_020,
        Backend::Sqlite => 1_500,
    };
    let acknowledged = writes(addresses, count, 30).await;
    assert_eq!(acknowledged.len(), count / 30 * 30, "every write succeeds");
    let stored = db.webhook_event_ids().await;
    let all_arrived = eventually(Duration::from_secs(60), async || {
        let ids: HashSet<String> = receiver.received().into_iter().map(|r| r.id).collect();
        ids.len() >= stored.len()
    })
    .await;
    assert!(
        all_arrived,
        "{} of {} arrived",
        receiver.received().len(),
        stored.len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for message in receiver.received() {
        *seen.entry(message.id).or_default() += 1;
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, count)| **count > 1)
        .take(5)
        .collect();
    assert!(
        twice.is_empty(),
        "sent twice though answered 200: {twice:?}"
    );
    check_arrivals(&receiver, &stored, &acknowledged);
}

/// SIGKILL while writes are in flight and messages wait for a retry: after
/// a restart every acknowledged write's message arrives, and no message of
/// an event that did not commit.
async fn a_killed_server_loses_no_message(backend: Backend) {
    if backend == Backend::Postgres && postgres_server_url().is_none() {
        return;
    }
    let db = TestDatabase::create(backend).await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::RetryAfter(503, "1"));
    let server = ServerProcess::start(&db.url, &ENV).await;
    prepare(&server, &receiver).await;
    let address = server.graphql_url();
    let in_flight = tokio::spawn(writes(vec![address], 1_000, 50));
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    let acknowledged = in_flight.await.expect("the writes");
    assert!(
        !acknowledged.is_empty(),
        "some writes were acknowledged before the kill"
    );
    receiver.otherwise(Reply::Status(200));
    let _restarted = ServerProcess::start(&db.url, &ENV).await;
    let stored = db.webhook_event_ids().await;
    let all_arrived = eventually(Duration::from_secs(30), async || {
        let ids: HashSet<String> = receiver
            .received()
            .into_iter()
            .filter(|r| r.body["data"]["eventId"].is_string())
            .filter_map(|r| r.body["data"]["eventId"].as_str().map(str::to_owned))
            .collect();
        ids.len() >= stored.len()
    })
    .await;
    assert!(
        all_arrived,
        "every stored event's message after the restart"
    );
    check_arrivals(&receiver, &stored, &acknowledged);
}

on_both_backends!(
    two_servers_send_each_message_once,
    a_killed_server_loses_no_message
);
