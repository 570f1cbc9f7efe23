//! The identity provider's published keys (a JSON Web Key Set): fetched at
//! start, refreshed in the background as the provider's `Cache-Control`
//! allows, and refetched at once when a token names a key not seen yet, at
//! most once per `REFETCH_INTERVAL` whatever the tokens say. While the
//! provider is unreachable the keys already fetched keep working.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::Validation;
use jsonwebtoken::jwk::Jwk;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use serde::Deserialize;
use serde_json::Value;

use super::keys::VerifyingKey;
use super::{KeyError, TokenError};

/// Bounds on how long fetched keys are kept before the background refresh,
/// whatever the provider's `max-age` says; one hour when it says nothing.
const MIN_MAX_AGE: Duration = Duration::from_secs(5 * 60);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// After a failed background refresh, the next try comes this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Tokens naming unknown keys refetch the set at most this often, so a flood
/// of forged `kid`s costs the provider one request per interval.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// A key set or discovery document larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a key set or discovery document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Request(String),
    #[error("it answered HTTP {0}")]
    Status(u16),
    #[error("its answer is over {} KiB", MAX_DOCUMENT_BYTES / 1024)]
    TooLarge,
    #[error("its answer is not the JSON expected: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("it holds no key that can verify tokens ({0})")]
    NoUsableKey(String),
}

/// The keys of one fetch of the set, by `kid`.
struct KeySet {
    by_id: HashMap<String, Arc<VerifyingKey>>,
    /// The set's one key, when it has exactly one: it verifies tokens that
    /// name no `kid`.
    only: Option<Arc<VerifyingKey>>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyingKey>> {
        match kid {
            Some(kid) => self.by_id.get(kid).cloned(),
            None => self.only.clone(),
        }
    }
}

/// The provider's keys, kept fresh.
pub struct Jwks {
    url: Url,
    client: reqwest::Client,
    /// The checks every token must pass, whichever key signed it.
    checks: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// Held while a token's unknown `kid` refetches the set, so concurrent
    /// such tokens share one fetch; holds when the last one started.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Fetches the set at `url` (from `setting`), and starts refreshing it in
    /// the background. A failure here stops the start, naming the URL.
    pub async fn start(
        url: &str,
        setting: &'static str,
        checks: Validation,
    ) -> Result<Arc<Self>, KeyError> {
        let url = checked_url(url, setting)?;
        let client = http_client(&url)?;
        let (keys, max_age) =
            fetch_keys(&client, &url, &checks)
                .await
                .map_err(|reason| KeyError::Jwks {
                    url: url.to_string(),
                    reason,
                })?;
        tracing::info!(url = %url, keys = keys.by_id.len(), "fetched the JWKS");
        let jwks = Arc::new(Self {
            url,
            client,
            checks,
            keys: RwLock::new(Arc::new(keys)),
            refetch: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(refresh_in_background(Arc::downgrade(&jwks), max_age));
        Ok(jwks)
    }

    /// Finds the JWKS through `JWT_ISSUER`'s OpenID discovery document
    /// (`/.well-known/openid-configuration`), then starts as `start` does.
    pub async fn discover(issuer: &str, checks: Validation) -> Result<Arc<Self>, KeyError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let address = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = checked_url(&address, "JWT_ISSUER")?;
        let client = http_client(&url)?;
        let failed = |reason| KeyError::Discovery {
            url: url.to_string(),
            reason,
        };
        let (body, _) = fetch(&client, &url).await.map_err(failed)?;
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|error| failed(error.into()))?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name
        // the issuer it was fetched for, exactly; tokens carry that `iss`.
        if discovery.issuer != issuer {
            return Err(KeyError::IssuerMismatch {
                configured: issuer.to_owned(),
                published: discovery.issuer,
            });
        }
        Self::start(
            &discovery.jwks_uri,
            "the discovery document's jwks_uri",
            checks,
        )
        .await
    }

    /// The key a token's `kid` names: from the keys at hand, or else from a
    /// refetch of the set, unless one ran in the last `REFETCH_INTERVAL`.
    pub async fn key(&self, kid: Option<&str>) -> Result<Arc<VerifyingKey>, TokenError> {
        if let Some(key) = self.current().find(kid) {
            return Ok(key);
        }
        let Some(kid) = kid else {
            return Err(TokenError::NoKeyId);
        };
        let mut last_refetch = self.refetch.lock().await;
        // Another token may have refetched the set while this one waited.
        if let Some(key) = self.current().find(Some(kid)) {
            return Ok(key);
        }
        if last_refetch.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            tracing::debug!(
                kid,
                "a token names an unknown key; the JWKS was refetched moments ago"
            );
            return Err(TokenError::UnknownKey);
        }
        *last_refetch = Some(Instant::now());
        tracing::info!(kid, "a token names an unknown key: refetching the JWKS");
        if let Err(error) = self.refresh().await {
            tracing::warn!(url = %self.url, %error, "cannot refetch the JWKS; the keys fetched before still verify tokens");
        }
        self.current().find(Some(kid)).ok_or(TokenError::UnknownKey)
    }

    fn current(&self) -> Arc<KeySet> {
        // A panic while the lock was held cannot leave a half-written set: the
        // write is one assignment.
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Fetches the set and, when it holds usable keys, puts it in place of
    /// the old one. Returns how long the provider says to keep it.
    async fn refresh(&self) -> Result<Duration, FetchError> {
        let (keys, max_age) = fetch_keys(&self.client, &self.url, &self.checks).await?;
        let count = keys.by_id.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        tracing::debug!(url = %self.url, keys = count, "refreshed the JWKS");
        Ok(max_age)
    }
}

/// Refreshes the set when the provider says it goes stale, until the
/// verifier is dropped.
async fn refresh_in_background(jwks: Weak<Jwks>, first_wait: Duration) {
    let mut wait = first_wait;
    loop {
        tokio::time::sleep(wait).await;
        let Some(jwks) = jwks.upgrade() else { return };
        wait = match jwks.refresh().await {
            Ok(max_age) => max_age,
            Err(error) => {
                tracing::warn!(
                    url = %jwks.url,
                    %error,
                    "cannot refresh the JWKS; the keys fetched before still verify tokens, \
                     retrying in {} s",
                    RETRY_AFTER_FAILURE.as_secs()
                );
                RETRY_AFTER_FAILURE
            }
        };
    }
}

/// HTTPS, or plain HTTP to this machine only (tests, a provider on a laptop):
/// keys fetched over plain HTTP from afar could be swapped on the way.
fn checked_url(text: &str, setting: &'static str) -> Result<Url, KeyError> {
    let refused = |reason: &str| KeyError::JwksUrl {
        setting,
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(text).map_err(|error| refused(&error.to_string()))?;
    let loopback = match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(refused(
            "plain http is allowed for loopback addresses only; use https",
        )),
        _ => Err(refused("it must be an https:// URL")),
    }
}

fn http_client(url: &Url) -> Result<reqwest::Client, KeyError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .https_only(url.scheme() == "https")
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("onboarding/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| KeyError::Jwks {
            url: url.to_string(),
            reason: FetchError::Request(error_chain(&error)),
        })
}

async fn fetch_keys(
    client: &reqwest::Client,
    url: &Url,
    checks: &Validation,
) -> Result<(KeySet, Duration), FetchError> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let (body, headers) = fetch(client, url).await?;
    let raw: RawSet = serde_json::from_slice(&body)?;
    let mut by_id = HashMap::new();
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (index, raw_key) in raw.keys.into_iter().enumerate() {
        let parsed = serde_json::from_value::<Jwk>(raw_key)
            .map_err(|error| format!("it is not a JWK: {error}"))
            .and_then(|jwk| {
                VerifyingKey::from_jwk(&jwk, checks).map(|key| (jwk.common.key_id, key))
            });
        match parsed {
            Ok((kid, key)) => {
                let key = Arc::new(key);
                if let Some(kid) = kid {
                    by_id.insert(kid, Arc::clone(&key));
                }
                usable.push(key);
            }
            Err(reason) => skipped.push(format!("key {index} is skipped: {reason}")),
        }
    }
    for reason in &skipped {
        tracing::warn!(url = %url, "JWKS {reason}");
    }
    if usable.is_empty() {
        let reasons = if skipped.is_empty() {
            "the set is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(FetchError::NoUsableKey(reasons));
    }
    let only = (usable.len() == 1).then(|| usable.remove(0));
    Ok((KeySet { by_id, only }, max_age(&headers)))
}

/// GETs a JSON document, at most `MAX_DOCUMENT_BYTES` of it.
async fn fetch(client: &reqwest::Client, url: &Url) -> Result<(Vec<u8>, HeaderMap), FetchError> {
    let request_failed = |error: reqwest::Error| FetchError::Request(error_chain(&error));
    let mut response = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(request_failed)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, response.headers().clone()))
}

/// How long the provider lets the set be kept (`Cache-Control: max-age`),
/// within `MIN_MAX_AGE` and `MAX_MAX_AGE`.
fn max_age(headers: &HeaderMap) -> Duration {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            let (name, seconds) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| seconds.trim().trim_matches('"').parse().ok())?
        })
        .map_or(DEFAULT_MAX_AGE, Duration::from_secs)
        .clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// An error and its causes on one line: reqwest's own message leaves out
/// why ("connection refused", "certificate expired").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn cache_control(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_str(value).expect("a header value"),
        );
        headers
    }

    #[test]
    fn keys_are_kept_as_long_as_the_provider_says_within_bounds() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(max_age(&cache_control("public, max-age=7200")), hours(2));
        assert_eq!(
            max_age(&cache_control("max-age=15, must-revalidate")),
            MIN_MAX_AGE
        );
        assert_eq!(max_age(&cache_control("max-age=999999999")), MAX_MAX_AGE);
        assert_eq!(max_age(&cache_control("no-cache")), DEFAULT_MAX_AGE);
        assert_eq!(max_age(&HeaderMap::new()), DEFAULT_MAX_AGE);
    }

    #[test]
    fn key_sets_are_fetched_over_https_or_from_loopback_only() {
        for allowed in [
            "https://example.eu.auth0.com/.well-known/jwks.json",
            "http://127.0.0.1:8081/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(checked_url(allowed, "JWT_JWKS_URL").is_ok(), "{allowed}");
        }
        for refused in [
            "http://auth.example.com/jwks",
            "ftp://127.0.0.1/jwks",
            "not a url",
        ] {
            let message = checked_url(refused, "JWT_JWKS_URL")
                .expect_err(refused)
                .to_string();
            assert!(
                message.contains("JWT_JWKS_URL") && message.contains(refused),
                "{message}"
            );
        }
    }
}
