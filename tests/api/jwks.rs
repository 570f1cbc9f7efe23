//! Tokens from an identity provider: the keys come from a JSON Web Key Set
//! that the test serves on loopback, and that it rotates, withdraws, breaks
//! and takes down while the server runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use onboarding::auth::REFETCH_INTERVAL;
use onboarding::config::ServeArgs;
use onboarding::http::Application;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TestApp, error_code, post_graphql, serve_args, spawn_app_with, unix_now,
};
use crate::on_both_backends;

/// What the provider publishes, and how often it was asked.
struct Published {
    body: String,
    down: bool,
    fetches: usize,
    issuer: String,
}

/// An identity provider on a random loopback port: `/jwks` and an OpenID
/// discovery document that points to it.
struct Provider {
    base: String,
    published: Arc<Mutex<Published>>,
    server: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let published = Arc::new(Mutex::new(Published {
            body: String::new(),
            down: false,
            fetches: 0,
            issuer: base.clone(),
        }));
        let router = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .with_state(Arc::clone(&published));
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the provider serves");
        });
        let provider = Self {
            base,
            published,
            server,
        };
        provider.publish(keys);
        provider
    }

    fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    fn publish(&self, keys: &[&SigningKey]) {
        let keys: Vec<&Value> = keys.iter().map(|key| &key.jwk).collect();
        self.publish_body(json!({ "keys": keys }).to_string());
    }

    fn publish_body(&self, body: String) {
        self.published.lock().expect("unpoisoned").body = body;
    }

    fn set_down(&self, down: bool) {
        self.published.lock().expect("unpoisoned").down = down;
    }

    fn fetches(&self) -> usize {
        self.published.lock().expect("unpoisoned").fetches
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_jwks(State(published): State<Arc<Mutex<Published>>>) -> Response {
    let mut published = published.lock().expect("unpoisoned");
    published.fetches += 1;
    if published.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=600"),
        ],
        published.body.clone(),
    )
        .into_response()
}

async fn serve_discovery(State(published): State<Arc<Mutex<Published>>>) -> Response {
    let issuer = published.lock().expect("unpoisoned").issuer.clone();
    let jwks_uri = format!("{issuer}/jwks");
    let document = json!({ "issuer": issuer, "jwks_uri": jwks_uri });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// A provider's private key, its `kid`, and the public JWK it publishes.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str, file: &str, algorithm: Algorithm) -> Self {
        let pem = std::fs::read(key_file(file)).expect("a test key");
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .expect("a private key");
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, algorithm).expect("a JWK"))
            .expect("JSON");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            kid: kid.to_owned(),
            algorithm,
            key,
            jwk,
        }
    }

    fn rsa(kid: &str) -> Self {
        Self::new(kid, "rsa-private.pem", Algorithm::RS256)
    }

    /// A second RSA key, for rotations.
    fn rsa_2(kid: &str) -> Self {
        Self::new(kid, "rsa-2-private.pem", Algorithm::RS256)
    }

    /// A token for `sub`, signed with this key under its `kid`.
    fn token(&self, sub: &str) -> String {
        self.token_with(&self.kid, self.algorithm, &claims(sub))
    }

    fn token_with(&self, kid: &str, algorithm: Algorithm, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signed")
    }
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": unix_now() + 3600 })
}

fn key_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/keys")
        .join(name)
}

async fn spawn_with_jwks(backend: Backend, provider: &Provider) -> TestApp {
    spawn_app_with(backend, |args| use_jwks(args, provider)).await
}

fn use_jwks(args: &mut ServeArgs, provider: &Provider) {
    args.jwt.jwt_secret = None;
    args.jwt.jwt_jwks_url = Some(provider.jwks_url());
}

const QUERY: &str = "{ onboardingState { userId } }";

/// The user a token reads its own state as, or the refusal's message.
async fn read_as(app: &TestApp, token: &str) -> Result<String, String> {
    let response = post_graphql(&app.graphql_url(), Some(token), QUERY, json!({})).await;
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    match status.as_u16() {
        200 => Ok(body["data"]["onboardingState"]["userId"]
            .as_str()
            .unwrap_or_else(|| panic!("a state in {body}"))
            .to_owned()),
        401 => {
            assert_eq!(error_code(&body), "UNAUTHENTICATED");
            Err(body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

async fn tokens_of_every_supported_key_type_are_accepted(backend: Backend) {
    let rs256 = SigningKey::rsa("rs256");
    let ps256 = SigningKey::new("ps256", "rsa-2-private.pem", Algorithm::PS256);
    let es256 = SigningKey::new("es256", "ec-private.pem", Algorithm::ES256);
    let eddsa = SigningKey::new("eddsa", "ed25519-private.pem", Algorithm::EdDSA);
    // A JWK without `alg` verifies the algorithms its key type allows.
    let mut any_rsa = SigningKey::new("any-rsa", "rsa-private.pem", Algorithm::RS384);
    any_rsa
        .jwk
        .as_object_mut()
        .expect("an object")
        .remove("alg");
    let provider = Provider::start(&[&rs256, &ps256, &es256, &eddsa, &any_rsa]).await;
    let app = spawn_with_jwks(backend, &provider).await;

    for key in [&rs256, &ps256, &es256, &eddsa, &any_rsa] {
        let user = format!("user-of-{}", key.kid);
        assert_eq!(read_as(&app, &key.token(&user)).await, Ok(user));
    }
    let rs512 = any_rsa.token_with("any-rsa", Algorithm::RS512, &claims("carol"));
    assert_eq!(read_as(&app, &rs512).await, Ok("carol".to_owned()));
}

async fn a_rotated_key_is_fetched_at_once_and_a_withdrawn_key_stops_verifying(backend: Backend) {
    let old = SigningKey::rsa("2026-old");
    let new = SigningKey::rsa_2("2026-new");
    let provider = Provider::start(&[&old]).await;
    let app = spawn_with_jwks(backend, &provider).await;
    assert_eq!(
        read_as(&app, &old.token("alice")).await,
        Ok("alice".to_owned())
    );

    // The provider publishes the next key before signing with it.
    provider.publish(&[&old, &new]);
    assert_eq!(read_as(&app, &new.token("bob")).await, Ok("bob".to_owned()));

    // Then withdraws the old one; the next fetch drops it.
    provider.publish(&[&new]);
    tokio::time::sleep(REFETCH_INTERVAL + Duration::from_millis(200)).await;
    let unknown = new.token_with("not-published", Algorithm::RS256, &claims("mallory"));
    read_as(&app, &unknown)
        .await
        .expect_err("an unknown key is refused");
    let refused = read_as(&app, &old.token("alice"))
        .await
        .expect_err("withdrawn");
    assert!(refused.contains("`kid`"), "{refused}");
    assert_eq!(read_as(&app, &new.token("bob")).await, Ok("bob".to_owned()));
}

async fn a_flood_of_unknown_kids_costs_the_provider_one_fetch(backend: Backend) {
    let key = SigningKey::rsa("real");
    let provider = Provider::start(&[&key]).await;
    let app = spawn_with_jwks(backend, &provider).await;
    let before = provider.fetches();

    let forged: Vec<String> = (0..200)
        .map(|n| key.token_with(&format!("forged-{n}"), Algorithm::RS256, &claims("mallory")))
        .collect();
    let started = std::time::Instant::now();
    let refusals =
        futures_util::future::join_all(forged.iter().map(|token| read_as(&app, token))).await;
    // One fetch per interval that the flood lasted, however many tokens.
    let allowed = 1 + (started.elapsed().as_secs_f64() / REFETCH_INTERVAL.as_secs_f64()) as usize;
    for refusal in refusals {
        let message = refusal.expect_err("a forged kid is refused");
        assert!(message.contains("`kid`"), "{message}");
    }
    let fetches = provider.fetches() - before;
    assert!(
        fetches <= allowed,
        "200 forged kids made {fetches} fetches; at most {allowed} allowed"
    );
    assert_eq!(
        read_as(&app, &key.token("alice")).await,
        Ok("alice".to_owned())
    );
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), 200);
}

async fn while_the_provider_is_down_or_broken_the_fetched_keys_keep_working(backend: Backend) {
    let key = SigningKey::rsa("kept");
    let next = SigningKey::rsa_2("next");
    let provider = Provider::start(&[&key]).await;
    let app = spawn_with_jwks(backend, &provider).await;

    provider.set_down(true);
    // An unknown kid makes the server refetch, which fails.
    let fetches = provider.fetches();
    read_as(&app, &next.token("bob"))
        .await
        .expect_err("the new key cannot be fetched");
    assert_eq!(
        provider.fetches(),
        fetches + 1,
        "the server tried the provider"
    );
    assert_eq!(
        read_as(&app, &key.token("alice")).await,
        Ok("alice".to_owned())
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        ready.status(),
        200,
        "the provider being down does not make the service unready"
    );

    // Back up, but serving something that is not a key set.
    provider.set_down(false);
    provider.publish_body("<html>Service Unavailable</html>".to_owned());
    tokio::time::sleep(REFETCH_INTERVAL + Duration::from_millis(200)).await;
    read_as(&app, &next.token("bob"))
        .await
        .expect_err("still no new key");
    assert_eq!(provider.fetches(), fetches + 2);
    assert_eq!(
        read_as(&app, &key.token("alice")).await,
        Ok("alice".to_owned())
    );
}

async fn algorithm_confusion_and_unsigned_tokens_are_refused(backend: Backend) {
    let rsa = SigningKey::rsa("rsa");
    let es256 = SigningKey::new("es256", "ec-private.pem", Algorithm::ES256);
    let provider = Provider::start(&[&rsa]).await;
    let app = spawn_with_jwks(backend, &provider).await;
    let claims = claims("mallory");

    // HS256 with the published public key as the shared secret.
    let public_pem = std::fs::read(key_file("rsa-public.pem")).expect("the public key");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".to_owned());
    let hs256 = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&public_pem))
        .expect("signed");
    // `alg: none`, no signature.
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({ "alg": "none", "kid": "rsa" })),
        encode(&claims)
    );
    // Another key type's algorithm under the RSA key's kid, and an RSA
    // algorithm the key's `alg` does not name.
    let other_type = es256.token_with("rsa", Algorithm::ES256, &claims);
    let other_rsa = rsa.token_with("rsa", Algorithm::RS512, &claims);

    for token in [hs256, unsigned, other_type, other_rsa] {
        read_as(&app, &token).await.expect_err("refused");
    }
    assert_eq!(
        read_as(&app, &rsa.token("alice")).await,
        Ok("alice".to_owned())
    );
}

async fn keys_not_meant_for_signatures_are_skipped(backend: Backend) {
    let good = SigningKey::rsa("sig");
    let mut encryption = SigningKey::rsa_2("enc");
    encryption.jwk["use"] = json!("enc");
    let secret = b"a-symmetric-secret-that-anyone-who-reads-the-jwks-knows";
    let symmetric = json!({ "kty": "oct", "kid": "oct", "k": URL_SAFE_NO_PAD.encode(secret) });
    let provider = Provider::start(&[&good, &encryption]).await;
    let body = json!({ "keys": [good.jwk, encryption.jwk, symmetric] }).to_string();
    provider.publish_body(body);
    let app = spawn_with_jwks(backend, &provider).await;

    read_as(&app, &encryption.token("mallory"))
        .await
        .expect_err("an encryption key");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("oct".to_owned());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims("mallory"),
        &EncodingKey::from_secret(secret),
    )
    .expect("signed");
    read_as(&app, &hs256).await.expect_err("a symmetric key");
    assert_eq!(
        read_as(&app, &good.token("alice")).await,
        Ok("alice".to_owned())
    );
}

async fn the_jwks_is_found_by_openid_discovery_from_the_issuer(backend: Backend) {
    let key = SigningKey::rsa("discovered");
    let provider = Provider::start(&[&key]).await;
    let app = spawn_app_with(backend, |args| {
        args.jwt.jwt_secret = None;
        args.jwt.jwt_issuer = Some(provider.base.clone());
    })
    .await;
    let with_issuer = json!({ "sub": "alice", "exp": unix_now() + 3600, "iss": provider.base });
    let token = key.token_with("discovered", Algorithm::RS256, &with_issuer);
    assert_eq!(read_as(&app, &token).await, Ok("alice".to_owned()));
    read_as(&app, &key.token("alice"))
        .await
        .expect_err("a token without `iss` is refused");
}

async fn user_and_roles_are_read_from_the_configured_claims(backend: Backend) {
    let key = SigningKey::rsa("keycloak");
    let provider = Provider::start(&[&key]).await;
    let app = spawn_app_with(backend, |args| {
        use_jwks(args, &provider);
        args.jwt.jwt_user_claim = "preferred_username".to_owned();
        args.jwt.jwt_roles_claim = "realm_access.roles".to_owned();
    })
    .await;
    let token = |roles: &[&str]| {
        let claims = json!({
            "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "preferred_username": "ann",
            "realm_access": { "roles": roles },
            "exp": unix_now() + 3600,
        });
        key.token_with("keycloak", Algorithm::RS256, &claims)
    };
    assert_eq!(read_as(&app, &token(&[])).await, Ok("ann".to_owned()));

    let other = r#"{ onboardingState(userId: "bob") { userId } }"#;
    let as_admin = post_graphql(
        &app.graphql_url(),
        Some(&token(&["admin"])),
        other,
        json!({}),
    )
    .await;
    let body: Value = as_admin.json().await.expect("JSON");
    assert_eq!(body["data"]["onboardingState"]["userId"], "bob", "{body}");
    let as_user = post_graphql(
        &app.graphql_url(),
        Some(&token(&["user"])),
        other,
        json!({}),
    )
    .await;
    let body: Value = as_user.json().await.expect("JSON");
    assert_eq!(error_code(&body), "FORBIDDEN");
}

/// The start-up error for these settings.
async fn start_error(adjust: impl FnOnce(&mut ServeArgs)) -> String {
    let mut args = serve_args("sqlite::memory:");
    args.jwt.jwt_secret = None;
    adjust(&mut args);
    match Application::build(&args).await {
        Ok(_) => panic!("the server must refuse to start"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_jwks_that_cannot_be_used_stops_the_start_naming_its_url() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        format!("http://{}/jwks", listener.local_addr().expect("an address"))
    };
    let message = start_error(|args| args.jwt.jwt_jwks_url = Some(closed.clone())).await;
    assert!(
        message.contains(&closed) && message.contains("JWKS"),
        "{message}"
    );

    let provider = Provider::start(&[]).await;
    provider.publish_body("not json".to_owned());
    let message = start_error(|args| args.jwt.jwt_jwks_url = Some(provider.jwks_url())).await;
    assert!(
        message.contains(&provider.jwks_url()) && message.contains("not the JSON"),
        "{message}"
    );

    let mut encryption = SigningKey::rsa("enc");
    encryption.jwk["use"] = json!("enc");
    provider.publish(&[&encryption]);
    let message = start_error(|args| args.jwt.jwt_jwks_url = Some(provider.jwks_url())).await;
    assert!(
        message.contains("no key that can verify") && message.contains("`use`"),
        "{message}"
    );

    let far = "http://auth.example.com/.well-known/jwks.json";
    let message = start_error(|args| args.jwt.jwt_jwks_url = Some(far.to_owned())).await;
    assert!(
        message.contains(far) && message.contains("https"),
        "{message}"
    );
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_stops_the_start() {
    let key = SigningKey::rsa("k");
    let provider = Provider::start(&[&key]).await;
    let configured = format!("{}/", provider.base);
    let message = start_error(|args| args.jwt.jwt_issuer = Some(configured.clone())).await;
    assert!(
        message.contains("JWT_ISSUER") && message.contains(&format!("`{}`", provider.base)),
        "{message}"
    );
}

on_both_backends!(
    tokens_of_every_supported_key_type_are_accepted,
    a_rotated_key_is_fetched_at_once_and_a_withdrawn_key_stops_verifying,
    a_flood_of_unknown_kids_costs_the_provider_one_fetch,
    while_the_provider_is_down_or_broken_the_fetched_keys_keep_working,
    algorithm_confusion_and_unsigned_tokens_are_refused,
    keys_not_meant_for_signatures_are_skipped,
    the_jwks_is_found_by_openid_discovery_from_the_issuer,
    user_and_roles_are_read_from_the_configured_claims,
);
