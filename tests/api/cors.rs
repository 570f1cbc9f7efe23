//! CORS: a refused origin is named in the server's log with the setting that
//! allows it, once per origin, while allowed and same-origin calls go quietly;
//! `serve --dev` also allows the loopback origins a local dev server runs on.

use serde_json::{Value, json};

use crate::helpers::{Backend, ServerProcess, TestDatabase};

const ALLOWED: &str = "https://app.example.com";
const REFUSED: &str = "https://elsewhere.example.com";

/// Loopback origins as browsers send them, on any port or none.
const LOOPBACK: &[&str] = &[
    "http://localhost:5173",
    "http://localhost",
    "http://127.0.0.1:3000",
    "http://127.0.0.1",
    "http://[::1]:8080",
    "http://[::1]",
    "https://localhost:5173",
];

/// Origins that merely look like loopback ones, or are not origins at all.
const LOOK_ALIKES: &[&str] = &[
    "http://localhost.evil.com",
    "http://127.0.0.1.evil.com:80",
    "http://localhostx:1",
    "http://evil.com#localhost",
    "http://evil.com?localhost",
    "http://evil.com/localhost",
    "http://localhost@evil.com",
    "http://localhost:5173@evil.com",
    "http://localhost:5173.evil.com",
    "http://[::1].evil.com",
    "http://localhost:5173/",
    "http://localhost:",
    "http://localhost:+80",
    "http://localhost:99999",
    "http://127.0.0.1:80:80",
    "ftp://localhost",
    "localhost:5173",
    "null",
];

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

/// A POST such as a page on `origin` sends with `fetch`.
async fn post_from(server: &ServerProcess, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.graphql_url())
        .header("origin", origin)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("the server answers")
}

/// The `Access-Control-Allow-Origin` a response carries, if any.
fn allowed_origin(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|value| value.to_str().expect("an ASCII header"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_allows_loopback_origins_on_any_port() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start_dev(&db.url, &[]).await;
    for &origin in LOOPBACK {
        let preflight = preflight(&server, origin).await;
        assert_eq!(
            allowed_origin(&preflight),
            Some(origin),
            "preflight from {origin}"
        );
        let post = post_from(&server, origin).await;
        assert_eq!(post.status(), 200);
        assert_eq!(allowed_origin(&post), Some(origin), "POST from {origin}");
    }
    preflight(&server, "https://later.example.com").await;
    server
        .wait_for_log("CORS refused origin https://later.example.com")
        .await;
    for &origin in LOOPBACK {
        assert!(
            warnings_for(&server, origin).is_empty(),
            "{origin} is not refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_refuses_origins_that_only_look_like_loopback() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start_dev(&db.url, &[]).await;
    for &origin in LOOK_ALIKES {
        let preflight = preflight(&server, origin).await;
        assert_eq!(allowed_origin(&preflight), None, "preflight from {origin}");
        let post = post_from(&server, origin).await;
        assert_eq!(allowed_origin(&post), None, "POST from {origin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_still_allows_the_configured_origins() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start_dev(&db.url, &[("CORS_ALLOWED_ORIGINS", ALLOWED)]).await;
    assert_eq!(
        allowed_origin(&preflight(&server, ALLOWED).await),
        Some(ALLOWED)
    );
    assert_eq!(allowed_origin(&preflight(&server, REFUSED).await), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dev_a_loopback_origin_is_refused_unless_configured() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&db.url, &[("CORS_ALLOWED_ORIGINS", ALLOWED)]).await;
    for &origin in LOOPBACK {
        assert_eq!(
            allowed_origin(&preflight(&server, origin).await),
            None,
            "{origin}"
        );
        assert_eq!(
            allowed_origin(&post_from(&server, origin).await),
            None,
            "{origin}"
        );
    }
    server
        .wait_for_log("CORS refused origin http://localhost:5173")
        .await;

    let configured = "http://localhost:5173";
    let server = ServerProcess::start(&db.url, &[("CORS_ALLOWED_ORIGINS", configured)]).await;
    assert_eq!(
        allowed_origin(&preflight(&server, configured).await),
        Some(configured)
    );
    assert_eq!(
        allowed_origin(&preflight(&server, "http://localhost:5174").await),
        None
    );
}
