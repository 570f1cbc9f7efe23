//! One attempt: a signed POST (Standard Webhooks) to a public address, no
//! redirects, at most `ATTEMPT_TIMEOUT`, at most `MAX_RESPONSE_BYTES` of the
//! answer read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;
use url::Url;

use crate::domain::webhook::{self, MAX_RESPONSE_BYTES, is_public, private_refusal};
use crate::domain::{Error, Result};

/// What one attempt gave.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's status; none when no answer came.
    pub status: Option<u16>,
    /// Why it failed; none on success.
    pub error: Option<String>,
    pub duration: Duration,
    /// The wait a 429 or 503 asked for.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// The receiver said the endpoint is gone for good.
    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

/// The HTTP client that sends messages.
pub struct Sender {
    client: Option<reqwest::Client>,
    allow_private: bool,
}

/// A name that resolves to an address messages may not go to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Resolves names as the system does, and refuses any that resolves to an
/// address messages may not go to: checked as the connection is made, so a
/// name cannot resolve one way when checked and another when used.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addrs.iter().find(|addr| !is_public(addr.ip())) {
                let what = format!("{host} ({})", private.ip());
                return Err(
                    Box::new(Refused(format!("the URL {}", private_refusal(&what))))
                        as Box<dyn std::error::Error + Send + Sync>,
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl Sender {
    pub fn new(allow_private: bool) -> Self {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!(
                "onboarding/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .connect_timeout(webhook::ATTEMPT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64);
        let builder = if allow_private {
            builder
        } else {
            builder.dns_resolver(Arc::new(PublicOnly))
        };
        // Without the client nothing is sent: every attempt fails and says
        // why, rather than going out without the rules above.
        let client = builder
            .build()
            .map_err(|error| {
                tracing::error!(%error, "cannot build the webhook client; no message will be sent");
            })
            .ok();
        Self {
            client,
            allow_private,
        }
    }

    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Refuses a URL whose name resolves, now, to an address messages may
    /// not go to. A name that does not resolve yet passes: it is checked
    /// again at every attempt.
    pub async fn check_resolves_public(&self, url: &Url) -> Result<()> {
        if self.allow_private {
            return Ok(());
        }
        let Some(url::Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let lookup = tokio::net::lookup_host((name, 0));
        let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(2), lookup).await else {
            return Ok(());
        };
        for addr in addrs {
            if !is_public(addr.ip()) {
                return Err(Error::BadUserInput(format!(
                    "`url` {}",
                    private_refusal(&format!("{name} ({})", addr.ip()))
                )));
            }
        }
        Ok(())
    }

    /// Sends `body` as message `id` to `url`, signed with each of
    /// `secrets`, ending by `deadline` at the latest.
    pub async fn attempt(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secrets: &[String],
        deadline: Instant,
    ) -> Attempt {
        let at = crate::domain::now();
        let started = Instant::now();
        let outcome = match self.refusal(url) {
            Some(refusal) => Err(refusal),
            None => {
                let timeout = deadline.saturating_duration_since(started);
                let post = self.post(url, id, body, secrets, at);
                match tokio::time::timeout(timeout, post).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!(
                        "no answer within {} s",
                        webhook::ATTEMPT_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        let duration = started.elapsed();
        match outcome {
            Ok((status, retry_after)) => Attempt {
                at,
                status: Some(status),
                error: (!(200..300).contains(&status)).then(|| status_error(status)),
                duration,
                retry_after: matches!(status, 429 | 503)
                    .then_some(retry_after)
                    .flatten()
                    .and_then(|header| webhook::retry_after(&header, at)),
            },
            Err(error) => Attempt {
                at,
                status: None,
                error: Some(error),
                duration,
                retry_after: None,
            },
        }
    }

    /// Why `url` may not be sent to, as far as it says by itself: its
    /// scheme, or an address written into it.
    fn refusal(&self, url: &str) -> Option<String> {
        let parsed = match Url::parse(url) {
            Ok(parsed) => parsed,
            Err(error) => return Some(format!("the URL does not parse: {error}")),
        };
        if self.allow_private {
            return None;
        }
        if parsed.scheme() != "https" {
            return Some("the URL is not https:// (WEBHOOK_ALLOW_PRIVATE is not set)".to_owned());
        }
        let ip = match parsed.host()? {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        (!is_public(ip)).then(|| format!("the URL {}", private_refusal(&ip.to_string())))
    }

    async fn post(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secrets: &[String],
        at: DateTime<Utc>,
    ) -> Result<(u16, Option<String>), String> {
        let timestamp = at.timestamp().to_string();
        let signature = signatures(id, &timestamp, body, secrets);
        let Some(client) = &self.client else {
            return Err("the server could not build its HTTP client (see its log)".to_owned());
        };
        let response = client
            .post(url)
            .header("webhook-id", id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|error| describe(&error))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        // Read what the receiver answered, up to the cap, so that the
        // connection can carry the next message; past it, the connection
        // is dropped.
        let mut response = response;
        let mut read = 0;
        while read <= MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        Ok((status, retry_after))
    }
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256>` per secret,
/// space-separated.
pub fn signatures(id: &str, timestamp: &str, body: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter_map(|secret| {
            let key = STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .ok()?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            Some(format!(
                "v1,{}",
                STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_error(status: u16) -> String {
    match status {
        300..=399 => format!("the receiver answered {status}; redirects are not followed"),
        410 => "the receiver answered 410 Gone".to_owned(),
        _ => format!("the receiver answered {status}"),
    }
}

/// Why a request got no answer, without its URL (which may hold a token).
fn describe(error: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut innermost = None;
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
        innermost = Some(current);
        source = current.source();
    }
    let cause = innermost
        .filter(|cause| !std::ptr::addr_eq(*cause as *const _, error as *const _))
        .map(ToString::to_string);
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "no answer"
    };
    match cause {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test vectors.
    #[test]
    fn signs_as_the_specification_does() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
        let signature = signatures(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#,
            &[secret],
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
