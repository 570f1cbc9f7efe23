//! A receiver on loopback: records every POST it gets, and answers as the
//! test scripts it (a status, a `Retry-After`, or no answer at all).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// What the receiver answers one request with.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// 429 or 503 with this `Retry-After`.
    RetryAfter(u16, &'static str),
    /// Accepts the request and never answers.
    Hang,
    /// Answers 200 after this long.
    Slow(std::time::Duration),
}

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub user_agent: String,
    pub raw: String,
    pub body: Value,
    pub at: Instant,
}

impl Received {
    /// Whether one of the signatures is `secret`'s over this message.
    pub fn signed_with(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .expect("a base64 secret");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("an HMAC key");
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.raw).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.signature
            .split(' ')
            .any(|signature| signature == expected)
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    otherwise: Option<Reply>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
    server: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if Arc::strong_count(&self.server) == 1 {
            self.server.abort();
        }
    }
}

impl Receiver {
    /// A receiver that answers 200 unless told otherwise.
    pub async fn start() -> Self {
        let script: Arc<Mutex<Script>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!(
            "http://{}/hooks",
            listener.local_addr().expect("a bound address")
        );
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(script.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            script,
            server: Arc::new(server),
        }
    }

    /// The next requests get these replies, in order.
    pub fn then(&self, replies: &[Reply]) {
        self.script
            .lock()
            .expect("script")
            .replies
            .extend(replies.iter().cloned());
    }

    /// Requests past the scripted ones get `reply`.
    pub fn otherwise(&self, reply: Reply) {
        self.script.lock().expect("script").otherwise = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    /// The messages of `message_type` received.
    pub fn of_type(&self, message_type: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|received| received.body["type"] == message_type)
            .collect()
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        at: Instant::now(),
    };
    let reply = {
        let mut script = script.lock().expect("script");
        script.received.push(received);
        script
            .replies
            .pop_front()
            .or_else(|| script.otherwise.clone())
            .unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::OK)
            .into_response(),
        Reply::RetryAfter(status, after) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            [("retry-after", after)],
        )
            .into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
    }
}
