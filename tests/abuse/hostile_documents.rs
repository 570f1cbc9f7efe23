//! Documents whose cost grows faster than their size, refused before any of
//! that cost is paid.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, ServerProcess, TestDatabase};
use crate::{on_both_backends, one_at_a_time};

/// Generous for a debug build on a busy machine; the work these documents
/// asked for before they were bounded took seconds to minutes.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Peak resident memory allowed for a debug server that has answered every
/// shape here; a 25-level fan-out alone used to take 5 GB.
const PEAK_MEMORY_KIB: u64 = 200 * 1024;

/// `{ ...F0 }` where each fragment spreads the next one twice: 2^levels
/// selections from a document of about 40 bytes a level.
fn fan_out(levels: usize) -> String {
    let mut text = String::from("{ ...F0 }\n");
    for level in 0..levels {
        let next = level + 1;
        text.push_str(&format!(
            "fragment F{level} on Query {{ ...F{next} ...F{next} }}\n"
        ));
    }
    text.push_str(&format!("fragment F{levels} on Query {{ __typename }}\n"));
    text
}

/// Aliases of one field, as many as fit in the 64 KiB body limit.
fn alias_flood() -> String {
    let mut text = String::from("{");
    let mut alias = 0;
    while text.len() < 60 * 1024 {
        text.push_str(&format!(" a{alias}: __typename"));
        alias += 1;
    }
    text.push('}');
    text
}

/// Distinct names made of letters: a, b, ..., Z, aa, ab, ...
fn names(count: usize) -> Vec<String> {
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    (0..count)
        .map(|mut index| {
            let mut name = String::new();
            loop {
                name.push(letters[index % letters.len()]);
                index /= letters.len();
                if index == 0 {
                    break name;
                }
            }
        })
        .collect()
}

/// One hostile document: its name, its JSON body and a word of the message
/// that says which limit it passed.
struct Hostile {
    name: &'static str,
    body: String,
    says: &'static str,
}

fn document(name: &'static str, query: &str, says: &'static str) -> Hostile {
    Hostile {
        name,
        body: json!({ "query": query }).to_string(),
        says,
    }
}

fn hostile_documents() -> Vec<Hostile> {
    let operations: String = names(5000)
        .iter()
        .map(|name| format!("query {name}{{a}}"))
        .collect();
    let fragments: String = names(150)
        .iter()
        .map(|name| format!("fragment {name} on Query{{a}}"))
        .collect();
    let variables: String = names(100)
        .iter()
        .map(|name| format!("${name}: Int "))
        .collect();
    let arguments: String = names(100)
        .iter()
        .map(|name| format!("{name}: 1 "))
        .collect();
    vec![
        document("fan-out, 24 levels", &fan_out(24), "selections"),
        document("fan-out, 60 levels", &fan_out(60), "expanded"),
        document("alias flood", &alias_flood(), "selections"),
        document(
            "10,000 nested braces",
            &format!("{{{}b{}}}", "a{".repeat(10_000), "}".repeat(10_000)),
            "nests",
        ),
        document(
            "a list value nested 10,000 deep",
            &format!("{{ a(x: {}1{}) }}", "[".repeat(10_000), "]".repeat(10_000)),
            "nests",
        ),
        document(
            "a fragment cycle",
            "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
            "spreads itself",
        ),
        document("5,000 operations", &operations, "operations"),
        document("150 fragments", &format!("{{a}} {fragments}"), "fragments"),
        document(
            "directive flood",
            &format!("{{ __typename {} }}", "@include(if: true) ".repeat(3000)),
            "directives",
        ),
        document(
            "argument flood",
            &format!("{{ a({arguments}) }}"),
            "arguments",
        ),
        document(
            "variable flood",
            &format!("query({variables}) {{ __typename }}"),
            "variables",
        ),
    ]
}

/// POSTs `body` as a GraphQL-over-HTTP client, timing the answer.
async fn post(server: &ServerProcess, body: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(server.graphql_url())
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body, started.elapsed())
}

async fn healthz(server: &ServerProcess) -> Duration {
    let started = Instant::now();
    let response = reqwest::get(format!("{}/healthz", server.address))
        .await
        .expect("/healthz answers");
    assert_eq!(response.status(), 200, "/healthz");
    started.elapsed()
}

async fn every_hostile_document_is_refused_quickly_with_the_limit_it_passed(backend: Backend) {
    let _turn = one_at_a_time().await;
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    for hostile in hostile_documents() {
        assert!(
            hostile.body.len() <= 64 * 1024,
            "{} fits the body limit",
            hostile.name
        );
        let (status, body, took) = post(&server, &hostile.body).await;
        assert_eq!(status, 400, "{}: {body}", hostile.name);
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{}",
            hostile.name
        );
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(hostile.says),
            "{}: {message}",
            hostile.name
        );
        assert!(body.get("data").is_none(), "{}: no data", hostile.name);
        assert!(took < ANSWER_WITHIN, "{} took {took:?}", hostile.name);
        healthz(&server).await;
    }
    assert!(
        server.memory_kib("VmHWM") < PEAK_MEMORY_KIB,
        "peak memory {} KiB",
        server.memory_kib("VmHWM")
    );
}

async fn a_sixty_level_fan_out_costs_milliseconds_of_processor_time(backend: Backend) {
    let _turn = one_at_a_time().await;
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    let body = json!({ "query": fan_out(60) }).to_string();
    let before = server.cpu_time();
    for _ in 0..50 {
        let (status, _, _) = post(&server, &body).await;
        assert_eq!(status, 400);
    }
    // 50 answers; expanding the document even once would take longer than
    // the age of the universe.
    let used = server.cpu_time() - before;
    assert!(
        used < Duration::from_secs(1),
        "50 refusals took {used:?} of processor time"
    );
}

async fn healthz_keeps_answering_while_four_clients_send_hostile_documents(backend: Backend) {
    let _turn = one_at_a_time().await;
    let db = TestDatabase::create(backend).await;
    let server = std::sync::Arc::new(ServerProcess::start(&db.url, &[]).await);
    let bodies: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        hostile_documents()
            .into_iter()
            .map(|hostile| hostile.body)
            .collect(),
    );
    let until = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (server, bodies) = (server.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut refused = 0;
                let mut next = client;
                while Instant::now() < until {
                    let (status, _, _) = post(&server, &bodies[next % bodies.len()]).await;
                    assert_eq!(status, 400);
                    refused += 1;
                    next += 1;
                }
                refused
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        slowest = slowest.max(healthz(&server).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = 0;
    for client in clients {
        refused += client.await.expect("a client ran to the end");
    }
    assert!(refused > 4, "the clients kept sending: {refused} refusals");
    assert!(
        slowest < Duration::from_millis(200),
        "/healthz took {slowest:?} under load"
    );
    assert!(
        server.memory_kib("VmHWM") < PEAK_MEMORY_KIB,
        "peak memory {} KiB",
        server.memory_kib("VmHWM")
    );
}

async fn huge_and_deep_variables_are_answered_quickly(backend: Backend) {
    let _turn = one_at_a_time().await;
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    let many: serde_json::Map<String, Value> = names(5000)
        .into_iter()
        .map(|name| (name, json!(1)))
        .collect();
    let body = json!({ "query": "{ __typename }", "variables": many }).to_string();
    let (status, answer, took) = post(&server, &body).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({ "data": { "__typename": "Query" } }))
    );
    assert!(took < ANSWER_WITHIN, "5,000 variables took {took:?}");

    let deep = format!(
        r#"{{"query":"{{ __typename }}","variables":{{"v":{}1{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (status, answer, took) = post(&server, &deep).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    assert!(took < ANSWER_WITHIN, "deep variables took {took:?}");
    healthz(&server).await;
}

on_both_backends!(
    every_hostile_document_is_refused_quickly_with_the_limit_it_passed,
    a_sixty_level_fan_out_costs_milliseconds_of_processor_time,
    healthz_keeps_answering_while_four_clients_send_hostile_documents,
    huge_and_deep_variables_are_answered_quickly,
);
