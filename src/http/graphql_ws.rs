//! GraphQL over WebSocket at `/graphql`: the `graphql-transport-ws`
//! protocol, which the `graphql-ws` library speaks for Apollo Client's
//! `GraphQLWsLink`, urql and GraphiQL.
//!
//! async-graphql ships this protocol (`async_graphql::http::WebSocket`), but
//! it closes with 1002 and 1011 where the live contract says 4400, 4401 and
//! 4403, replaces a subscription whose id is in use instead of closing with
//! 4409, bounds neither the subscriptions of a connection nor the wait for
//! `connection_init`, sends no pings of its own, and has no end for a token
//! that expires. The protocol is a handful of JSON messages, so it is spoken
//! here, over axum's WebSocket, and each operation is checked and executed
//! as GraphQL over HTTP checks and executes one.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tokio_stream::StreamMap;

use super::connections::ConnectionSlot;
use super::graphql_over_http::{self, MAX_BODY_BYTES, MediaType, Params, PreparedRequest};
use super::state::{AppState, SubscriptionSlot};
use crate::domain::Viewer;

/// The subprotocol, as `Sec-WebSocket-Protocol` names it.
const PROTOCOL: &str = "graphql-transport-ws";
/// How long a socket may stay open without `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a client may stay silent (no message, no pong) before its
/// connection is closed.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How long one message may take to be taken by the client: a subscriber
/// that stops reading is dropped, not buffered for.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a connection may have waiting to be written before sends wait.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// The read buffer each connection holds while open. Clients send a few
/// small messages; the default (128 KiB) would be most of what an idle
/// subscriber costs.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Most operations one connection runs at once.
pub const MAX_PER_CONNECTION: usize = 100;

/// The close codes of the live contract.
mod close {
    pub const BAD_MESSAGE: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const TIMEOUT: u16 = 4408;
    pub const ID_IN_USE: u16 = 4409;
    pub const TOO_MANY: u16 = 4429;
}

/// `GET /graphql`: a WebSocket when the client asks to upgrade, else
/// GraphQL over HTTP's GET.
pub async fn get(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if !is_upgrade(&parts.headers) {
        let params = Query::try_from_uri(&parts.uri);
        return graphql_over_http::get(State(state), parts.headers, params).await;
    }
    match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(websocket) => {
            let permit = parts
                .extensions
                .get::<ConnectionSlot>()
                .and_then(ConnectionSlot::take);
            upgrade(state, &parts.headers, websocket, permit)
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// Whether a request asks to become a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade when the client offers `graphql-transport-ws`; the
/// socket then holds `permit`, the connection's place under MAX_CONNECTIONS.
fn upgrade(
    state: AppState,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
    permit: Option<OwnedSemaphorePermit>,
) -> Response {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == PROTOCOL);
    if !offered {
        return graphql_over_http::request_error(
            MediaType::negotiate(headers),
            StatusCode::BAD_REQUEST,
            "Open the WebSocket with the subprotocol `graphql-transport-ws` (the graphql-ws \
             library's), or use server-sent events at /graphql/stream.",
        );
    }
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_BODY_BYTES)
        .max_frame_size(MAX_BODY_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every message is sent on its own and flushed: none waits for more.
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            Connection::new(state).run(socket).await;
            drop(permit);
        })
}

/// What the client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        payload: Option<Value>,
    },
    Ping {
        payload: Option<Value>,
    },
    Pong {
        #[serde(rename = "payload")]
        _payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: Params,
    },
    Complete {
        id: String,
    },
}

/// What the server sends.
#[derive(Serialize)]
struct ServerMessage<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
}

fn message<P: Serialize>(kind: &'static str, id: Option<&str>, payload: Option<P>) -> Message {
    let text = serde_json::to_string(&ServerMessage { kind, id, payload })
        .unwrap_or_else(|_| format!(r#"{{"type":"{kind}"}}"#));
    Message::Text(text.into())
}

/// What an operation has to say next.
enum Outgoing {
    /// A result: `next`.
    Next(async_graphql::Response),
    /// The operation could not run, or failed at its start: `error`, and
    /// nothing after it.
    Error(Value),
    /// The operation has ended: `complete`.
    Complete,
}

/// Why the server closes a connection.
type Close = (u16, String);

/// What one client message calls for.
enum Reply {
    Nothing,
    Send(Message),
    Close(Close),
}

struct Connection {
    state: AppState,
    init_received: bool,
    /// Who the token of `connection_init` speaks for, once acknowledged.
    viewer: Option<Viewer>,
    /// When that token expires.
    expires: Option<Instant>,
    operations: StreamMap<String, BoxStream<'static, Outgoing>>,
}

impl Connection {
    fn new(state: AppState) -> Self {
        Self {
            state,
            init_received: false,
            viewer: None,
            expires: None,
            operations: StreamMap::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let opened = Instant::now();
        let mut heard = Instant::now();
        let mut pings = tokio::time::interval_at(opened + PING_EVERY, PING_EVERY);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = opened + Duration::from_secs(400 * 24 * 3600);
        let close: Option<Close> = loop {
            let reply = tokio::select! {
                received = incoming.next() => match received {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Text(text))) => {
                        heard = Instant::now();
                        self.received(text.as_str()).await
                    }
                    Some(Ok(Message::Binary(_))) => Reply::Close((
                        close::BAD_MESSAGE,
                        "Binary messages are not part of graphql-transport-ws: send JSON text."
                            .into(),
                    )),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        heard = Instant::now();
                        Reply::Nothing
                    }
                },
                Some((id, outgoing)) = self.operations.next(), if !self.operations.is_empty() => {
                    self.outgoing(&id, outgoing)
                }
                () = sleep_until(opened + INIT_TIMEOUT), if !self.init_received => {
                    Reply::Close((close::TIMEOUT, "Connection initialisation timeout".into()))
                }
                _ = pings.tick() => Reply::Send(message::<()>("ping", None, None)),
                () = sleep_until(heard + SILENCE_LIMIT) => {
                    Reply::Close((close::TIMEOUT, "No answer to pings for 45 s".into()))
                }
                () = sleep_until(self.expires.unwrap_or(far)), if self.expires.is_some() => {
                    Reply::Close((close::FORBIDDEN, "token expired".into()))
                }
            };
            match reply {
                Reply::Nothing => {}
                Reply::Send(message) => {
                    if !sent(&mut sink, message).await {
                        break None;
                    }
                }
                Reply::Close(close) => break Some(close),
            }
        };
        // Dropping the operations ends their subscriptions and frees their slots.
        drop(self.operations);
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: within_close_frame(reason).into(),
            };
            let _ = sent(&mut sink, Message::Close(Some(frame))).await;
        }
    }

    async fn received(&mut self, text: &str) -> Reply {
        let received = match serde_json::from_str::<ClientMessage>(text) {
            Ok(received) => received,
            Err(error) => {
                return Reply::Close((
                    close::BAD_MESSAGE,
                    format!("Invalid message received: {error}"),
                ));
            }
        };
        match received {
            ClientMessage::ConnectionInit { payload } => self.connection_init(payload).await,
            ClientMessage::Ping { payload } => Reply::Send(message("pong", None, payload)),
            ClientMessage::Pong { .. } => Reply::Nothing,
            ClientMessage::Subscribe { id, payload } => self.subscribe(id, payload).await,
            ClientMessage::Complete { id } => {
                // Dropping the operation ends it and frees its slot.
                self.operations.remove(&id);
                Reply::Nothing
            }
        }
    }

    async fn connection_init(&mut self, payload: Option<Value>) -> Reply {
        if self.init_received {
            return Reply::Close((close::TOO_MANY, "Too many initialisation requests".into()));
        }
        self.init_received = true;
        let Some(authorization) = authorization(payload.as_ref()) else {
            return Reply::Close((
                close::FORBIDDEN,
                "Forbidden: connection_init must carry the token, as {\"Authorization\": \
                 \"Bearer <jwt>\"}"
                    .into(),
            ));
        };
        match self.state.verifier.viewer_until(Some(&authorization)).await {
            Ok((viewer, expires)) => {
                self.viewer = Some(viewer);
                self.expires = expires.map(|valid_for| Instant::now() + valid_for);
                Reply::Send(message::<()>("connection_ack", None, None))
            }
            Err(error) => Reply::Close((close::FORBIDDEN, format!("Forbidden: {error}"))),
        }
    }

    async fn subscribe(&mut self, id: String, params: Params) -> Reply {
        let Some(viewer) = self.viewer.clone() else {
            return Reply::Close((close::UNAUTHORIZED, "Unauthorized".into()));
        };
        if self.operations.contains_key(&id) {
            return Reply::Close((
                close::ID_IN_USE,
                format!("Subscriber for {id} already exists"),
            ));
        }
        if self.operations.len() >= MAX_PER_CONNECTION {
            return Reply::Close((
                close::TOO_MANY,
                format!("Too many subscriptions on one connection ({MAX_PER_CONNECTION} at most)"),
            ));
        }
        let Some(slot) = self.state.subscriptions.take() else {
            return Reply::Close((
                close::TOO_MANY,
                "Too many subscriptions on this server (MAX_SUBSCRIPTIONS)".into(),
            ));
        };
        // Refusals read as GraphQL over HTTP's legacy JSON ones, errors and all.
        let media = MediaType::Json;
        match graphql_over_http::prepare(&self.state, viewer, params, None, media).await {
            Ok(prepared) => {
                let operation = self.execute(prepared, slot);
                self.operations.insert(id, operation);
                Reply::Nothing
            }
            Err(refused) => {
                let errors = errors_of(*refused).await;
                Reply::Send(message("error", Some(&id), Some(errors)))
            }
        }
    }

    fn execute(
        &self,
        prepared: PreparedRequest,
        slot: SubscriptionSlot,
    ) -> BoxStream<'static, Outgoing> {
        let PreparedRequest { request, parsed } = prepared;
        let mut first = true;
        self.state
            .schema
            .execute_stream(request)
            .map(move |mut response| {
                // Held for as long as the operation runs.
                let _held = &slot;
                graphql_over_http::with_codes(&mut response, parsed);
                let failed =
                    response.data == async_graphql::Value::Null && !response.errors.is_empty();
                let outgoing = if first && failed {
                    Outgoing::Error(serde_json::to_value(&response.errors).unwrap_or_default())
                } else {
                    Outgoing::Next(response)
                };
                first = false;
                outgoing
            })
            .chain(stream::once(async { Outgoing::Complete }))
            .boxed()
    }

    fn outgoing(&mut self, id: &str, outgoing: Outgoing) -> Reply {
        match outgoing {
            Outgoing::Next(response) => Reply::Send(message("next", Some(id), Some(response))),
            Outgoing::Error(errors) => {
                self.operations.remove(id);
                Reply::Send(message("error", Some(id), Some(errors)))
            }
            Outgoing::Complete => {
                self.operations.remove(id);
                Reply::Send(message::<()>("complete", Some(id), None))
            }
        }
    }
}

/// Sends `message` unless the client takes longer than `SEND_TIMEOUT` to
/// read it; false when the connection is to be dropped.
async fn sent(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    message: Message,
) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "WebSocket closed while sending");
            false
        }
        Err(_) => {
            tracing::info!("dropped a WebSocket client that stopped reading");
            false
        }
    }
}

/// The `Authorization` value `connection_init`'s payload carries, as
/// `{"Authorization": "Bearer <jwt>"}`, `{"authorization": …}` or the bare
/// token as `{"token": "<jwt>"}`.
fn authorization(payload: Option<&Value>) -> Option<String> {
    let payload = payload?.as_object()?;
    for name in ["Authorization", "authorization"] {
        if let Some(value) = payload.get(name).and_then(Value::as_str) {
            return Some(value.to_owned());
        }
    }
    let token = payload.get("token").and_then(Value::as_str)?;
    Some(format!("Bearer {token}"))
}

/// The errors of a refused request's body.
async fn errors_of(refused: Response) -> Value {
    let body = axum::body::to_bytes(refused.into_body(), MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|mut body| body.get_mut("errors").map(Value::take))
        .unwrap_or_else(|| Value::Array(Vec::new()))
}

/// `reason`, cut to the 123 bytes a close frame holds, at a character's end.
fn within_close_frame(mut reason: String) -> String {
    const MAX_REASON_BYTES: usize = 123;
    if reason.len() > MAX_REASON_BYTES {
        let end = (0..=MAX_REASON_BYTES)
            .rev()
            .find(|&end| reason.is_char_boundary(end))
            .unwrap_or(0);
        reason.truncate(end);
    }
    reason
}
