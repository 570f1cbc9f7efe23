//! CORS: which browser origins may call the API, and a warning in the log
//! when one that may not tries, since the browser alone sees why it failed.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How many refused origins get a warning, once each; any more are logged at
/// debug level, so forged origins can neither flood the log nor grow memory.
const MAX_WARNED: usize = 64;
/// Longer than any origin a browser sends (a host name is at most 253 bytes).
const MAX_ORIGIN_BYTES: usize = 300;
/// The host a browser sent its request to, as a proxy in front passes it on.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A `CORS_ALLOWED_ORIGINS` entry that no browser could send.
#[derive(Debug, thiserror::Error)]
#[error(
    "CORS_ALLOWED_ORIGINS holds `{0}`, which is not an origin like https://app.example.com \
     (scheme and host, an optional port, no path or wildcard)"
)]
pub struct BadOrigin(String);

/// The CORS layer: browsers may call the API from the allowed origins only
/// (none by default), and a refused origin is logged with the setting to change.
#[derive(Debug, Clone)]
pub struct Cors {
    layer: CorsLayer,
    refused: Arc<Refused>,
}

impl Cors {
    /// The layer for `origins`, as `CORS_ALLOWED_ORIGINS` lists them, and
    /// for every loopback origin too when `allow_loopback` (`serve --dev`,
    /// which listens on loopback only, so a page on `localhost:5173` works).
    pub fn new(origins: &[String], allow_loopback: bool) -> Result<Self, BadOrigin> {
        let origins = origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                HeaderValue::from_str(origin)
                    .ok()
                    .filter(|_| is_origin(origin))
                    .ok_or_else(|| BadOrigin(origin.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listed = origins
            .iter()
            .filter_map(|origin| origin.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let allow_origin = if allow_loopback {
            let listed = origins.clone();
            AllowOrigin::predicate(move |origin, _| {
                listed.contains(origin) || is_loopback_origin(origin)
            })
        } else {
            AllowOrigin::list(origins.clone())
        };
        let layer = CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(3600));
        Ok(Self {
            layer,
            refused: Arc::new(Refused {
                allowed: origins,
                allow_loopback,
                listed,
                warned: Mutex::default(),
            }),
        })
    }
}

impl<S> Layer<S> for Cors {
    type Service = WarnRefused<tower_http::cors::Cors<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        WarnRefused {
            inner: self.layer.layer(inner),
            refused: self.refused.clone(),
        }
    }
}

/// Logs a request whose origin CORS refuses, then passes it on.
#[derive(Debug, Clone)]
pub struct WarnRefused<S> {
    inner: S,
    refused: Arc<Refused>,
}

impl<S, B> Service<Request<B>> for WarnRefused<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Most requests carry no `Origin`: for them, this one lookup is all.
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            self.refused.check(origin, request.headers());
        }
        self.inner.call(request)
    }
}

/// The allowed origins, and the refused ones already warned about.
#[derive(Debug)]
struct Refused {
    allowed: Vec<HeaderValue>,
    allow_loopback: bool,
    /// `allowed` as `CORS_ALLOWED_ORIGINS` spells it, for the warning's example.
    listed: String,
    warned: Mutex<HashSet<Box<str>>>,
}

impl Refused {
    /// Logs `origin` unless it is allowed or the server's own: browsers send
    /// `Origin` on their same-origin POSTs too.
    fn check(&self, origin: &HeaderValue, headers: &HeaderMap) {
        if self.allowed.contains(origin)
            || (self.allow_loopback && is_loopback_origin(origin))
            || is_same_origin(origin, headers)
        {
            return;
        }
        let Some(origin) = origin
            .to_str()
            .ok()
            .filter(|origin| origin.len() <= MAX_ORIGIN_BYTES && is_origin(origin))
        else {
            tracing::debug!(?origin, "CORS refused an `Origin` that is not an origin");
            return;
        };
        if self.first_warning(origin) {
            let example = if self.listed.is_empty() {
                origin.to_owned()
            } else {
                format!("{},{origin}", self.listed)
            };
            let request_id = headers.get("x-request-id").and_then(|id| id.to_str().ok());
            tracing::warn!(
                origin,
                request_id,
                "CORS refused origin {origin}: browsers on it cannot call this API. To allow it, \
                 add it to CORS_ALLOWED_ORIGINS, e.g. CORS_ALLOWED_ORIGINS={example} (logged \
                 once per origin)"
            );
        } else {
            tracing::debug!(origin, "CORS refused origin {origin}");
        }
    }

    /// Whether `origin` is new and there is still room to remember it.
    fn first_warning(&self, origin: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        warned.len() < MAX_WARNED && !warned.contains(origin) && warned.insert(origin.into())
    }
}

/// Whether `origin` names the host the request was sent to, directly or
/// through a proxy that passes the original in `X-Forwarded-Host`.
fn is_same_origin(origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let origin = origin.as_bytes();
    let Some(host) = origin
        .strip_prefix(b"https://")
        .or_else(|| origin.strip_prefix(b"http://"))
    else {
        return false;
    };
    [header::HOST, X_FORWARDED_HOST]
        .iter()
        .filter_map(|name| headers.get(name))
        .any(|sent| sent.as_bytes().eq_ignore_ascii_case(host))
}

/// Whether `text` is an origin as browsers send it: a scheme and a host with
/// an optional port, with no path, trailing slash or wildcard, since only an
/// exact match is ever allowed.
fn is_origin(text: &str) -> bool {
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    host.is_some_and(|host| !host.is_empty() && !host.contains(['/', '*', '?', '#', '@', ' ']))
}

/// Whether `origin` is exactly `http(s)://` and a loopback host (`localhost`,
/// `127.0.0.0/8`, `[::1]`) with an optional port: look-alikes such as
/// `http://localhost.evil.com` or `http://localhost@evil.com` are not.
fn is_loopback_origin(origin: &HeaderValue) -> bool {
    let Some(authority) = origin.to_str().ok().and_then(|origin| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
    }) else {
        return false;
    };
    let (loopback_host, port) = match authority.strip_prefix('[') {
        // Only an IPv6 address is written in brackets.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, port)) => (
                ip.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
                port,
            ),
            None => return false,
        },
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            let loopback =
                host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
            (loopback, port)
        }
    };
    // `u16::from_str` alone would take `+80`, which no browser sends.
    let valid_port = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            !digits.is_empty()
                && digits.bytes().all(|byte| byte.is_ascii_digit())
                && digits.parse::<u16>().is_ok()
        });
    loopback_host && valid_port
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(origin: &str) -> bool {
        is_loopback_origin(&HeaderValue::from_str(origin).expect("a header value"))
    }

    #[test]
    fn loopback_hosts_on_any_port_or_none_are_loopback_origins() {
        for origin in [
            "http://localhost",
            "http://localhost:5173",
            "https://localhost:5173",
            "http://127.0.0.1",
            "http://127.0.0.1:8080",
            "http://127.0.0.2:1",
            "http://[::1]",
            "http://[::1]:65535",
        ] {
            assert!(loopback(origin), "{origin}");
        }
    }

    #[test]
    fn look_alikes_are_not_loopback_origins() {
        for origin in [
            "http://localhost.evil.com",
            "http://127.0.0.1.evil.com:80",
            "http://localhostx:1",
            "http://evil.com#localhost",
            "http://localhost@evil.com",
            "http://localhost:1@evil.com",
            "http://[::1].evil.com",
            "http://[::1]evil.com",
            "http://[::ffff:127.0.0.1]",
            "http://::1",
            "http://[127.0.0.1]",
            "http://localhost/",
            "http://localhost:",
            "http://localhost:+80",
            "http://localhost:65536",
            "http://localhost:80:80",
            "http://127.1",
            "ws://localhost",
            "null",
        ] {
            assert!(!loopback(origin), "{origin}");
        }
    }
}
