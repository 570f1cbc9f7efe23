//! Bearer tokens: what is accepted, what is refused and how, and who may act
//! on whose state.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, SECRET, TestApp, error_code, graphql, post_graphql, sign, spawn_app, spawn_app_with,
    token, unix_now,
};
use crate::on_both_backends;

const QUERY: &str = "{ onboardingState { userId isCompleted } }";

/// POSTs `QUERY` with `Authorization: Bearer <token>`.
async fn query_with_token(app: &TestApp, token: &str) -> reqwest::Response {
    post_graphql(&app.graphql_url(), Some(token), QUERY, json!({})).await
}

/// Asserts the contract's answer to a token that fails a check.
async fn assert_refused(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "got {challenge}"
    );
    let body: Value = response.json().await.expect("a GraphQL-shaped body");
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    body
}

fn hs256(claims: &Value, secret: &str) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn key_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/keys")
        .join(name)
}

async fn a_valid_token_reads_its_own_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = query_with_token(&app, &token("alice", &[])).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["onboardingState"]["userId"], "alice");
}

async fn a_request_without_a_token_may_run_introspection(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .graphql_as(
            None,
            "{ __schema { queryType { name } mutationType { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    assert_eq!(body["data"]["__schema"]["mutationType"]["name"], "Mutation");
    assert!(body.get("errors").is_none(), "{body}");
}

async fn every_onboarding_field_without_a_token_is_unauthenticated_and_writes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    for operation in [
        "{ onboardingState { id } }",
        "mutation { completeOnboarding(step: 1) { id } }",
        "mutation { setOnboardingStep(step: -1) { id } }",
        "mutation { resetOnboarding { id } }",
        "mutation { completeOnboarding(userId: \"bob\") { id } }",
    ] {
        let body = app.graphql_as(None, operation, json!({})).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{operation}: {body}");
    }
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn an_expired_token_is_refused_with_401_and_www_authenticate(backend: Backend) {
    let app = spawn_app(backend).await;
    let expired = hs256(&json!({ "sub": "alice", "exp": unix_now() - 3600 }), SECRET);
    let body = assert_refused(query_with_token(&app, &expired).await).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("expired"),
        "the message says why: {message}"
    );
}

async fn a_token_signed_with_another_secret_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let forged = hs256(
        &json!({ "sub": "alice", "exp": unix_now() + 3600 }),
        "another-secret-that-is-also-32-bytes-long",
    );
    assert_refused(query_with_token(&app, &forged).await).await;
}

async fn a_token_with_algorithm_none_is_refused(backend: Backend) {
    use base64::Engine;
    let app = spawn_app(backend).await;
    let encode =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(json!({ "alg": "none", "typ": "JWT" })),
        encode(json!({ "sub": "alice", "exp": unix_now() + 3600 }))
    );
    assert_refused(query_with_token(&app, &unsigned).await).await;
}

async fn a_token_without_exp_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let endless = hs256(&json!({ "sub": "alice" }), SECRET);
    assert_refused(query_with_token(&app, &endless).await).await;
}

async fn a_token_that_is_not_valid_yet_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let future = hs256(
        &json!({ "sub": "alice", "exp": unix_now() + 7200, "nbf": unix_now() + 3600 }),
        SECRET,
    );
    assert_refused(query_with_token(&app, &future).await).await;
}

async fn a_token_whose_sub_is_over_255_bytes_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let long = hs256(
        &json!({ "sub": "x".repeat(256), "exp": unix_now() + 3600 }),
        SECRET,
    );
    assert_refused(query_with_token(&app, &long).await).await;
    let empty = hs256(&json!({ "sub": "", "exp": unix_now() + 3600 }), SECRET);
    assert_refused(query_with_token(&app, &empty).await).await;
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn an_authorization_header_that_is_not_bearer_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(app.graphql_url())
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .json(&json!({ "query": QUERY }))
        .send()
        .await
        .expect("the server answers");
    assert_refused(response).await;
}

async fn issuer_and_audience_are_checked_when_configured(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.jwt.jwt_issuer = Some("https://auth.example.com".into());
        args.jwt.jwt_audience = Some("onboarding".into());
    })
    .await;
    let exp = unix_now() + 3600;
    let right = json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com", "aud": "onboarding" });
    let response = query_with_token(&app, &hs256(&right, SECRET)).await;
    assert_eq!(response.status(), 200);

    let wrong_issuer = json!({ "sub": "alice", "exp": exp, "iss": "https://evil.example.com", "aud": "onboarding" });
    let wrong_audience =
        json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com", "aud": "billing" });
    let neither = json!({ "sub": "alice", "exp": exp });
    for claims in [wrong_issuer, wrong_audience, neither] {
        assert_refused(query_with_token(&app, &hs256(&claims, SECRET)).await).await;
    }
}

async fn public_keys_verify_rs256_es256_and_eddsa_tokens(backend: Backend) {
    let cases = [
        (
            "rsa",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem as fn(&[u8]) -> _,
        ),
        ("ec", Algorithm::ES256, EncodingKey::from_ec_pem),
        ("ed25519", Algorithm::EdDSA, EncodingKey::from_ed_pem),
    ];
    for (name, algorithm, load) in cases {
        let app = spawn_app_with(backend, |args| {
            args.jwt.jwt_secret = None;
            args.jwt.jwt_public_key_file = Some(key_file(&format!("{name}-public.pem")));
        })
        .await;
        let private = std::fs::read(key_file(&format!("{name}-private.pem"))).expect("a test key");
        let key = load(&private).expect("a private key");
        let claims = json!({ "sub": "alice", "exp": unix_now() + 3600 });
        let response = query_with_token(&app, &sign(&claims, algorithm, &key)).await;
        assert_eq!(response.status(), 200, "{name} token accepted");

        // Algorithm switching: the public key used as an HMAC secret.
        let public =
            std::fs::read_to_string(key_file(&format!("{name}-public.pem"))).expect("a key");
        assert_refused(query_with_token(&app, &hs256(&claims, &public)).await).await;
    }
}

async fn a_user_acting_on_another_user_is_forbidden_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    for operation in [
        "{ onboardingState(userId: \"bob\") { id } }",
        "mutation { completeOnboarding(userId: \"bob\") { id } }",
        "mutation { setOnboardingStep(step: 2, userId: \"bob\") { id } }",
        "mutation { resetOnboarding(userId: \"bob\") { id } }",
    ] {
        let body = app.graphql_as(Some("alice"), operation, json!({})).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{operation}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(
                "admin role (JWT_ADMIN_ROLE, default `admin`) in its roles claim (JWT_ROLES_CLAIM"
            ),
            "says what makes an admin: {message}"
        );
    }
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_user_may_name_itself_as_user_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .graphql_as(
            Some("alice"),
            "{ onboardingState(userId: \"alice\") { userId } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["onboardingState"]["userId"], "alice");
}

async fn an_admin_may_read_and_change_another_users_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .graphql_as_admin(
            "mutation { completeOnboarding(step: 3, userId: \"bob\") { userId currentStep } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["completeOnboarding"]["userId"], "bob");

    let seen_by_bob = app
        .graphql_as(
            Some("bob"),
            "{ onboardingState { isCompleted currentStep } }",
            json!({}),
        )
        .await;
    assert_eq!(seen_by_bob["data"]["onboardingState"]["isCompleted"], true);
    assert_eq!(seen_by_bob["data"]["onboardingState"]["currentStep"], 3);
    assert_eq!(
        app.db.count_rows("the-admin").await,
        0,
        "the admin's own state is untouched"
    );
}

async fn an_admin_passing_an_over_long_or_nul_user_id_gets_bad_user_input(backend: Backend) {
    let app = spawn_app(backend).await;
    for id in ["x".repeat(256), "a\u{0}b".to_owned()] {
        let body = app
            .graphql_as_admin(
                "query($id: String) { onboardingState(userId: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn a_token_whose_claims_have_the_wrong_shape_is_refused_and_says_so(backend: Backend) {
    let app = spawn_app(backend).await;
    let exp = unix_now() + 3600;
    for claims in [
        json!({ "sub": "alice", "exp": exp, "roles": "admin" }),
        json!({ "sub": 42, "exp": exp }),
        json!({ "sub": "a\u{0}b", "exp": exp }),
    ] {
        let body = assert_refused(query_with_token(&app, &hs256(&claims, SECRET)).await).await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("claims are malformed"),
            "{claims}: {message}"
        );
    }
    // Not a token at all: its header is not JSON, and nothing was signed.
    let body = assert_refused(query_with_token(&app, "aGVsbG8.e30.c2ln").await).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not a valid token"), "{message}");
    assert_eq!(app.db.count_all_rows().await, 0);
}

async fn the_admin_role_is_the_one_configured(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.jwt.jwt_admin_role = "support".into()).await;
    let query = "{ onboardingState(userId: \"bob\") { userId } }";
    let as_carol = |roles: &[&str]| token("carol", roles);
    let admin = graphql(&app.graphql_url(), Some(&as_carol(&["admin"])), query).await;
    assert_eq!(
        error_code(&admin),
        "FORBIDDEN",
        "`admin` is no longer the admin role"
    );
    let support = graphql(&app.graphql_url(), Some(&as_carol(&["support"])), query).await;
    assert_eq!(support["data"]["onboardingState"]["userId"], "bob");
}

on_both_backends!(
    a_valid_token_reads_its_own_state,
    a_request_without_a_token_may_run_introspection,
    every_onboarding_field_without_a_token_is_unauthenticated_and_writes_nothing,
    an_expired_token_is_refused_with_401_and_www_authenticate,
    a_token_signed_with_another_secret_is_refused,
    a_token_with_algorithm_none_is_refused,
    a_token_without_exp_is_refused,
    a_token_that_is_not_valid_yet_is_refused,
    a_token_whose_sub_is_over_255_bytes_is_refused,
    an_authorization_header_that_is_not_bearer_is_refused,
    issuer_and_audience_are_checked_when_configured,
    public_keys_verify_rs256_es256_and_eddsa_tokens,
    a_user_acting_on_another_user_is_forbidden_and_nothing_is_written,
    a_user_may_name_itself_as_user_id,
    an_admin_may_read_and_change_another_users_state,
    an_admin_passing_an_over_long_or_nul_user_id_gets_bad_user_input,
    a_token_whose_claims_have_the_wrong_shape_is_refused_and_says_so,
    the_admin_role_is_the_one_configured,
);
