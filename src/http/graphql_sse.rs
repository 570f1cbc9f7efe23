//! GraphQL over server-sent events at `/graphql/stream`: the `graphql-sse`
//! protocol's distinct connections mode, for networks where WebSockets do
//! not pass. One request, one operation: its results as `next` events, then
//! `complete`. Subscriptions stream until they end, the client goes away or
//! the token expires; queries and mutations answer once.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};

use super::graphql_over_http::{self, GetParams, MediaType, Params, PreparedRequest};
use super::state::AppState;
use crate::domain::Error;

/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `POST /graphql/stream`: a JSON body holding one operation.
pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let media = MediaType::negotiate(&headers);
    if let Some(refused) = refused_accept(&headers, media) {
        return refused;
    }
    match graphql_over_http::read_params(&headers, body, media).await {
        Ok(params) => stream_operation(&state, &headers, media, params).await,
        Err(refused) => *refused,
    }
}

/// `GET /graphql/stream`: one query or subscription from the query string.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let media = MediaType::negotiate(&headers);
    if let Some(refused) = refused_accept(&headers, media) {
        return refused;
    }
    match graphql_over_http::query_params(params, media) {
        Ok(params) => stream_operation(&state, &headers, media, params).await,
        Err(refused) => *refused,
    }
}

/// A request that does not ask for an event stream gets 406, saying how to.
fn refused_accept(headers: &HeaderMap, media: MediaType) -> Option<Response> {
    let accepts = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"));
    (!accepts).then(|| {
        graphql_over_http::request_error(
            media,
            StatusCode::NOT_ACCEPTABLE,
            "/graphql/stream answers with server-sent events: send `Accept: text/event-stream` \
             (or use /graphql for JSON).",
        )
    })
}

async fn stream_operation(
    state: &AppState,
    headers: &HeaderMap,
    media: MediaType,
    params: Params,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    let (viewer, expires) = match state.verifier.viewer_until(authorization).await {
        Ok(verified) => verified,
        Err(error) => return graphql_over_http::unauthorized(media, &error),
    };
    let Some(slot) = state.subscriptions.take() else {
        return graphql_over_http::request_error(
            media,
            StatusCode::TOO_MANY_REQUESTS,
            "This server holds as many subscriptions as it may (MAX_SUBSCRIPTIONS); retry \
             shortly, or on another replica.",
        );
    };
    let request_id = graphql_over_http::request_id(headers);
    let prepared =
        graphql_over_http::prepare(state, viewer, params, request_id.as_deref(), media).await;
    let PreparedRequest { request, parsed } = match prepared {
        Ok(prepared) => prepared,
        Err(refused) => return *refused,
    };
    let results = state
        .schema
        .execute_stream(request)
        .map(move |mut response| {
            graphql_over_http::with_codes(&mut response, parsed);
            next_event(&response)
        })
        .chain(stream::once(async { complete_event() }));
    let events = until_expired(results, expires).map(move |event| {
        // The slot is freed when the stream is dropped, whatever ends it.
        let _held = &slot;
        Ok::<_, Infallible>(event)
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("a valid header value"),
    );
    response
}

fn next_event(response: &async_graphql::Response) -> Event {
    match serde_json::to_string(response) {
        Ok(data) => Event::default().event("next").data(data),
        Err(error) => {
            tracing::error!(%error, "cannot serialize a response");
            let internal = Error::Internal(Box::new(error));
            let body = graphql_over_http::error_body(internal.code(), &internal.to_string());
            Event::default().event("next").data(body.to_string())
        }
    }
}

fn complete_event() -> Event {
    Event::default().event("complete").data("")
}

/// `events`, cut short when the token expires: then an UNAUTHENTICATED
/// error and `complete`.
fn until_expired(
    events: impl Stream<Item = Event> + Send + 'static,
    valid_for: Option<Duration>,
) -> impl Stream<Item = Event> + Send + 'static {
    // Without a token, a deadline no stream reaches.
    let left = valid_for.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let expiry = Box::pin(tokio::time::sleep(left));
    stream::unfold(
        (Box::pin(events), expiry, false),
        |(mut events, mut expiry, ended)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                biased;
                event = events.next() => event.map(|event| (vec![event], (events, expiry, false))),
                () = &mut expiry => Some((expired(), (events, expiry, true))),
            }
        },
    )
    .flat_map(stream::iter)
}

fn expired() -> Vec<Event> {
    let body = graphql_over_http::error_body(
        Error::Unauthenticated.code(),
        "The bearer token has expired; sign in again and subscribe anew.",
    );
    vec![
        Event::default().event("next").data(body.to_string()),
        complete_event(),
    ]
}
