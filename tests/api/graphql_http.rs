//! GraphQL over HTTP: content types, status codes, limits and bad input.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, error_code, spawn_app, token};
use crate::on_both_backends;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// POSTs a raw body with the given headers, as user `alice`.
async fn post_raw(
    app: &TestApp,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.graphql_url())
        .bearer_auth(token("alice", &[]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.expect("the server answers")
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn first_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a GraphQL-shaped JSON body");
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const STATE: &str = r#"{"query":"{ onboardingState { id } }"}"#;

async fn a_post_whose_content_type_is_not_json_is_refused_with_415(backend: Backend) {
    let app = spawn_app(backend).await;
    let mutation = r#"{"query":"mutation { completeOnboarding { id } }"}"#;
    for media in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = post_raw(&app, &[("content-type", media)], mutation).await;
        assert_eq!(response.status(), 415, "{media}");
        assert!(first_message(response).await.contains("application/json"));
    }
    let response = post_raw(&app, &[], mutation).await;
    assert_eq!(response.status(), 415, "no content type");
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_json_content_type_with_a_charset_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = post_raw(
        &app,
        &[("content-type", "application/json; charset=utf-8")],
        STATE,
    )
    .await;
    assert_eq!(response.status(), 200);
}

async fn a_body_that_is_not_valid_json_gets_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = post_raw(&app, &[JSON], r#"{"query": "{ onboardingState { id } }""#).await;
    assert_eq!(response.status(), 400);
    assert!(first_message(response).await.contains("not valid JSON"));
}

async fn a_request_without_a_valid_query_or_parameters_gets_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let invalid = [
        r#"{}"#,
        r#"{"query": 42}"#,
        r#""just a string""#,
        r#"{"query":"{ a }","variables":[1]}"#,
        r#"{"query":"{ a }","extensions":"no"}"#,
    ];
    for body in invalid {
        for accept in [GRAPHQL_RESPONSE_JSON, "application/json", "*/*"] {
            let response = post_raw(&app, &[JSON, ("accept", accept)], body).await;
            assert_eq!(response.status(), 400, "{body} with Accept: {accept}");
            assert!(!first_message(response).await.is_empty(), "{body}");
        }
    }
    let response = app
        .client
        .get(app.graphql_url())
        .query(&[
            ("query", "{ onboardingState { id } }"),
            ("variables", "[1]"),
        ])
        .bearer_auth(token("alice", &[]))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(
        response.status(),
        400,
        "query-string variables must be an object"
    );
    assert!(first_message(response).await.contains("`variables`"));
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_batch_of_operations_is_refused_with_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let batch = format!("[{STATE},{STATE}]");
    let response = post_raw(&app, &[JSON], batch).await;
    assert_eq!(response.status(), 400);
    assert!(
        first_message(response)
            .await
            .contains("Batching is not supported")
    );
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_body_over_64_kib_gets_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let padding = " ".repeat(64 * 1024);
    let body = format!(r#"{{"query":"mutation {{ completeOnboarding {{ id }} }}{padding}"}}"#);
    let response = post_raw(&app, &[JSON], body.clone()).await;
    assert_eq!(response.status(), 413);
    assert!(first_message(response).await.contains("64 KiB"));

    // The same without a Content-Length: a streamed, chunked body.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = post_raw(&app, &[JSON], stream).await;
    assert_eq!(response.status(), 413);
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_query_over_get_runs(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.graphql_url())
        .query(&[
            (
                "query",
                "query Mine($u: String) { onboardingState(userId: $u) { userId } }",
            ),
            ("variables", r#"{"u":"alice"}"#),
            ("operationName", "Mine"),
        ])
        .bearer_auth(token("alice", &[]))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["onboardingState"]["userId"], "alice");
}

async fn a_mutation_over_get_is_refused_with_405_and_allow_post(backend: Backend) {
    let app = spawn_app(backend).await;
    for (query, operation) in [
        ("mutation { completeOnboarding { id } }", None),
        ("mutation Named { completeOnboarding { id } }", None),
        (
            "query A { onboardingState { id } } mutation B { resetOnboarding { id } }",
            Some("B"),
        ),
    ] {
        let mut params = vec![("query", query)];
        params.extend(operation.map(|name| ("operationName", name)));
        let response = app
            .client
            .get(app.graphql_url())
            .query(&params)
            .bearer_auth(token("alice", &[]))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "POST");
    }
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_parse_error_gets_400_and_no_data_when_the_client_accepts_graphql_response_json(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let response = post_raw(
        &app,
        &[JSON, ("accept", GRAPHQL_RESPONSE_JSON)],
        r#"{"query":"{ onboardingState { "}"#,
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(content_type(&response).starts_with(GRAPHQL_RESPONSE_JSON));
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("data").is_none(), "{body}");
    assert!(body["errors"][0]["message"].is_string());
}

async fn a_validation_error_gets_400_when_the_client_accepts_graphql_response_json(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let response = post_raw(
        &app,
        &[JSON, ("accept", GRAPHQL_RESPONSE_JSON)],
        r#"{"query":"{ onboardingState { nope } }"}"#,
    )
    .await;
    assert_eq!(response.status(), 400);
}

async fn a_parse_error_gets_200_with_errors_when_the_client_accepts_only_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = post_raw(
        &app,
        &[JSON, ("accept", "application/json")],
        r#"{"query":"{ onboardingState { "}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("application/json"));
    let body: Value = response.json().await.expect("JSON");
    assert!(body["errors"][0]["message"].is_string());
}

async fn a_refused_request_says_why_in_extensions_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let oversized = format!(r#"{{"query":"{{ a }}{}"}}"#, " ".repeat(64 * 1024));
    let json = "application/json";
    let cases = [
        ("text/plain", STATE.to_owned(), "BAD_REQUEST"),
        (json, r#"{"query":"#.to_owned(), "BAD_REQUEST"),
        (json, format!("[{STATE}]"), "BAD_REQUEST"),
        (json, oversized, "BAD_REQUEST"),
        (
            json,
            r#"{"query":"{ onboardingState { "}"#.to_owned(),
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            json,
            r#"{"query":"{ onboardingState { nope } }"}"#.to_owned(),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ];
    for (content_type, body, expected) in cases {
        for accept in [GRAPHQL_RESPONSE_JSON, "application/json"] {
            let headers = [("content-type", content_type), ("accept", accept)];
            let response = post_raw(&app, &headers, body.clone()).await;
            let body: Value = response.json().await.expect("a GraphQL-shaped JSON body");
            assert_eq!(error_code(&body), expected, "{body} with Accept: {accept}");
        }
    }
    let response = app
        .client
        .get(app.graphql_url())
        .query(&[("query", "mutation { resetOnboarding { id } }")])
        .bearer_auth(token("alice", &[]))
        .send()
        .await
        .expect("the server answers");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(error_code(&body), "BAD_REQUEST", "a mutation over GET");
}

async fn a_value_that_does_not_fit_its_type_or_a_missing_variable_is_a_validation_error(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let step = "mutation($step: Int!) { setOnboardingStep(step: $step) { currentStep } }";
    let requests = [
        json!({ "query": "mutation { setOnboardingStep(step: 2147483648) { currentStep } }" }),
        json!({ "query": step, "variables": { "step": 2147483648_i64 } }),
        json!({ "query": step, "variables": { "step": "three" } }),
        json!({ "query": step, "variables": { "step": null } }),
        json!({ "query": step }),
    ];
    for request in requests {
        for (accept, status) in [(GRAPHQL_RESPONSE_JSON, 400), ("application/json", 200)] {
            let response = post_raw(&app, &[JSON, ("accept", accept)], request.to_string()).await;
            assert_eq!(response.status(), status, "{request} with Accept: {accept}");
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(
                error_code(&body),
                "GRAPHQL_VALIDATION_FAILED",
                "{request}: {body}"
            );
            assert!(body.get("data").is_none(), "{request}: {body}");
        }
    }
    let named = "mutation Named($step: Int!) { setOnboardingStep(step: $step) { id } }";
    for query in [step, named] {
        let body: Value = post_raw(&app, &[JSON], json!({ "query": query }).to_string())
            .await
            .json()
            .await
            .expect("JSON");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("`$step` of type `Int!`"), "{message}");
    }
    assert_eq!(app.db.count_all_rows().await, 0, "nothing was written");
}

/// A document answered before is validated again whenever it comes with
/// variables or another operation name: those requests get the very answer
/// they got before it was ever answered.
async fn a_document_sent_again_is_validated_again_with_other_variables_or_operation(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let query = "query Own($user: String) { onboardingState(userId: $user) { id } }";
    let send = |body: Value| {
        let app = &app;
        async move {
            let headers = [JSON, ("accept", GRAPHQL_RESPONSE_JSON)];
            let response = post_raw(app, &headers, body.to_string()).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let others = [
        json!({ "query": query, "variables": { "user": 5 } }),
        json!({ "query": query, "operationName": "Other" }),
        json!({ "query": "{ onboardingState { nope } }" }),
    ];
    let mut first_answers = Vec::new();
    for request in &others {
        let (status, body) = send(request.clone()).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert!(body.get("data").is_none(), "{request}: {body}");
        first_answers.push((status, body));
    }

    for _ in 0..3 {
        let (status, body) = send(json!({ "query": query })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["onboardingState"]["id"], "alice", "{body}");
    }

    for (request, first) in others.iter().zip(&first_answers) {
        for _ in 0..2 {
            assert_eq!(&send(request.clone()).await, first, "{request}");
        }
    }
    let (status, body) = send(json!({ "query": query, "operationName": "Own" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["onboardingState"]["id"], "alice", "{body}");
}

async fn the_reply_is_graphql_response_json_when_accepted_and_json_otherwise(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (Some(GRAPHQL_RESPONSE_JSON), GRAPHQL_RESPONSE_JSON),
        (
            Some("application/graphql-response+json, application/json;q=0.9"),
            GRAPHQL_RESPONSE_JSON,
        ),
        (Some("application/json"), "application/json"),
        (
            Some("application/json, application/graphql-response+json;q=0.5"),
            "application/json",
        ),
        (Some("*/*"), "application/json"),
        (None, "application/json"),
    ];
    for (accept, expected) in cases {
        let mut headers = vec![JSON];
        headers.extend(accept.map(|accept| ("accept", accept)));
        let response = post_raw(&app, &headers, STATE).await;
        assert_eq!(response.status(), 200);
        let got = content_type(&response);
        assert!(got.starts_with(expected), "Accept {accept:?} gave {got}");
        assert!(got.contains("charset=utf-8"), "{got}");
    }
}

async fn a_query_nested_too_deeply_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut selection = String::from("name");
    for _ in 0..20 {
        selection = format!("ofType {{ {selection} }}");
    }
    let query = format!("{{ __schema {{ types {{ fields {{ type {{ {selection} }} }} }} }} }}");
    let response = post_raw(
        &app,
        &[JSON, ("accept", GRAPHQL_RESPONSE_JSON)],
        json!({ "query": query }).to_string(),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(
        first_message(response)
            .await
            .to_lowercase()
            .contains("nested too deep")
    );
}

async fn every_response_carries_an_x_request_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let ok = post_raw(&app, &[JSON], STATE).await;
    let refused = post_raw(&app, &[("content-type", "text/plain")], STATE).await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("answer");
    let missing = app
        .client
        .get(format!("{}/nowhere", app.address))
        .send()
        .await
        .expect("answer");
    let mut ids = Vec::new();
    for response in [ok, refused, health, missing] {
        let id = response
            .headers()
            .get("x-request-id")
            .expect("an x-request-id header");
        ids.push(id.to_str().expect("ASCII").to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each response has its own id");
}

async fn the_server_stays_healthy_after_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let long_user = format!(
        r#"{{"query":"{{ onboardingState(userId: \"{}\") {{ id }} }}"}}"#,
        "x".repeat(300)
    );
    let bad_bodies: Vec<String> = vec![
        "\u{0}\u{1}binary".into(),
        "{".into(),
        "[]".into(),
        "null".into(),
        r#"{"query":"{ onboardingState { id } }","variables":"not a map"}"#.into(),
        r#"{"query":"query($s: Int!) { x }","variables":{"s":"NaN"}}"#.into(),
        r#"{"query":"mutation { setOnboardingStep(step: 99999999999) { id } }"}"#.into(),
        long_user,
    ];
    for body in bad_bodies {
        let response = post_raw(&app, &[JSON], body.clone()).await;
        assert!(
            response.status().is_client_error() || response.status() == 200,
            "{body}"
        );
        let answer: Value = response.json().await.expect("a JSON answer to any input");
        assert!(
            answer["errors"][0]["message"].is_string(),
            "{body}: {answer}"
        );
    }
    assert_eq!(app.db.count_all_rows().await, 0);
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("answer");
    assert_eq!(health.status(), 200);
    assert_eq!(post_raw(&app, &[JSON], STATE).await.status(), 200);
}

async fn cross_origin_calls_are_allowed_only_from_configured_origins(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |args| {
        args.cors_allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.graphql_url())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("answer");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed.headers().contains_key("x-request-id"),
        "a preflight has a request id too"
    );
    let other = preflight("https://evil.example.com").await.expect("answer");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

on_both_backends!(
    a_document_sent_again_is_validated_again_with_other_variables_or_operation,
    a_refused_request_says_why_in_extensions_code,
    a_value_that_does_not_fit_its_type_or_a_missing_variable_is_a_validation_error,
    a_post_whose_content_type_is_not_json_is_refused_with_415,
    a_json_content_type_with_a_charset_is_accepted,
    a_body_that_is_not_valid_json_gets_400,
    a_request_without_a_valid_query_or_parameters_gets_400,
    a_batch_of_operations_is_refused_with_400,
    a_body_over_64_kib_gets_413,
    a_query_over_get_runs,
    a_mutation_over_get_is_refused_with_405_and_allow_post,
    a_parse_error_gets_400_and_no_data_when_the_client_accepts_graphql_response_json,
    a_validation_error_gets_400_when_the_client_accepts_graphql_response_json,
    a_parse_error_gets_200_with_errors_when_the_client_accepts_only_json,
    the_reply_is_graphql_response_json_when_accepted_and_json_otherwise,
    a_query_nested_too_deeply_is_refused,
    every_response_carries_an_x_request_id,
    the_server_stays_healthy_after_bad_input,
    cross_origin_calls_are_allowed_only_from_configured_origins,
);
