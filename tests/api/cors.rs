//! CORS: a refused origin is named in the server's log with the setting that
//! allows it, once per origin, while allowed and same-origin calls go quietly.

use serde_json::{Value, json};

use crate::helpers::{Backend, ServerProcess, TestDatabase};

const ALLOWED: &str = "https://app.example.com";
const REFUSED: &str = "https://elsewhere.example.com";

async fn preflight(server: &ServerProcess, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.graphql_url())
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("the server answers")
}

/// The warnings logged for `origin`.
fn warnings_for(server: &ServerProcess, origin: &str) -> Vec<Value> {
    server
        .all_logged("CORS refused origin")
        .into_iter()
        .filter(|line| line["origin"] == origin)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_origin_is_warned_about_once_with_the_setting_that_allows_it() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&db.url, &[("CORS_ALLOWED_ORIGINS", ALLOWED)]).await;

    let allowed = preflight(&server, ALLOWED).await;
    assert_eq!(allowed.headers()["access-control-allow-origin"], ALLOWED);
    // Browsers send `Origin` on a same-origin POST too: not a refusal.
    let same_origin = reqwest::Client::new()
        .post(server.graphql_url())
        .header("origin", &server.address)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(same_origin.status(), 200);

    for _ in 0..3 {
        let refused = preflight(&server, REFUSED).await;
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }
    // A later origin's warning shows that every earlier request was logged.
    preflight(&server, "https://later.example.com").await;
    server
        .wait_for_log("CORS refused origin https://later.example.com")
        .await;

    let warnings = warnings_for(&server, REFUSED);
    assert_eq!(warnings.len(), 1, "once per origin: {warnings:?}");
    let message = warnings[0]["message"].as_str().unwrap_or_default();
    assert_eq!(warnings[0]["level"], "WARN");
    assert!(
        message.contains(REFUSED)
            && message.contains(&format!("CORS_ALLOWED_ORIGINS={ALLOWED},{REFUSED}")),
        "names the origin and the setting: {message}"
    );
    assert!(warnings_for(&server, ALLOWED).is_empty());
    assert!(warnings_for(&server, &server.address).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_origins_does_not_flood_the_log() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&db.url, &[("CORS_ALLOWED_ORIGINS", ALLOWED)]).await;
    for n in 0..100 {
        preflight(&server, &format!("https://forged-{n}.example.com")).await;
    }
    // Each request's access log line follows any warning about it.
    let preflights_logged = || {
        server
            .all_logged("request")
            .iter()
            .filter(|line| line["method"] == "OPTIONS")
            .count()
    };
    for _ in 0..500 {
        if preflights_logged() >= 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let warnings = server.all_logged("CORS refused origin");
    assert_eq!(warnings.len(), 64, "at most 64 origins are warned about");
    assert!(warnings_for(&server, "https://forged-99.example.com").is_empty());
}
