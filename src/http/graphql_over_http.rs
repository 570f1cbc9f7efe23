//! GraphQL over HTTP on `/graphql`: content types, status codes, body limits
//! and the bearer token, before and after async-graphql executes a request.

use async_graphql::Variables;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
};
use axum::body::Body;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::auth::TokenError;
use crate::domain::Error;
use crate::graphql::RequestId;
use crate::graphql::document::{self, LimitExceeded};
use crate::http::graphiql;
use crate::http::request_error::RequestErrorCode;
use crate::http::state::AppState;

/// Largest request body accepted; a GraphQL operation for this API is well under 1 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The media type a response is written in, chosen from the request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    /// The GraphQL over HTTP type: request errors get 4xx statuses.
    GraphqlResponseJson,
    /// The legacy type: every GraphQL response is a 200.
    Json,
}

impl MediaType {
    /// Picks `application/graphql-response+json` when the client names it at
    /// least as highly as `application/json`; otherwise, and for wildcards or
    /// no `Accept` at all, `application/json`, which every client reads.
    pub(super) fn negotiate(headers: &HeaderMap) -> Self {
        let (mut graphql_q, mut json_q) = (0.0_f32, 0.0_f32);
        for accept in headers.get_all(header::ACCEPT) {
            for range in accept.to_str().unwrap_or_default().split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|param| param.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                match media.as_str() {
                    GRAPHQL_RESPONSE_JSON => graphql_q = graphql_q.max(q),
                    JSON => json_q = json_q.max(q),
                    _ => {}
                }
            }
        }
        if graphql_q > 0.0 && graphql_q >= json_q {
            MediaType::GraphqlResponseJson
        } else {
            MediaType::Json
        }
    }

    /// The status of a well-formed request whose document cannot be parsed or
    /// validated: 400 where the client understands GraphQL over HTTP, and 200
    /// for legacy `application/json` clients, as the specification says.
    fn invalid_document_status(self) -> StatusCode {
        match self {
            MediaType::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            MediaType::Json => StatusCode::OK,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

/// The parameters of one GraphQL request, from a JSON body or a query string.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Params {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Map<String, Value>>,
    /// Accepted when it is a map, as the specification requires; not used.
    #[serde(rename = "extensions")]
    _extensions: Option<Map<String, Value>>,
}

/// The same parameters in a GET query string, where `variables` is JSON text.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// `POST /graphql`: a JSON body holding one operation.
pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let media = MediaType::negotiate(&headers);
    match read_params(&headers, body, media).await {
        Ok(params) => execute(&state, &headers, media, params, OperationsAllowed::All).await,
        Err(refused) => *refused,
    }
}

/// The parameters of a POST request's JSON body, or the response refusing it.
pub(super) async fn read_params(
    headers: &HeaderMap,
    body: Body,
    media: MediaType,
) -> Result<Params, Box<Response>> {
    if !is_json(headers) {
        let message = "Send the request body as JSON with `Content-Type: application/json`.";
        return Err(Box::new(request_error(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message,
        )));
    }
    let bytes = read_body(headers, body)
        .await
        .map_err(|error| Box::new(error.response(media)))?;
    let params = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(_)) => {
            let message = "Batching is not supported: send one operation per request.";
            return Err(Box::new(request_error(
                media,
                StatusCode::BAD_REQUEST,
                message,
            )));
        }
        Ok(value @ Value::Object(_)) => serde_json::from_value::<Params>(value),
        Ok(_) => {
            let message = "The body must be a JSON object with a `query` string.";
            return Err(Box::new(malformed_request(media, message)));
        }
        Err(error) => {
            let message = format!("The body is not valid JSON: {error}.");
            return Err(Box::new(request_error(
                media,
                StatusCode::BAD_REQUEST,
                &message,
            )));
        }
    };
    params.map_err(|error| {
        let message = format!("The body is not a valid GraphQL request: {error}.");
        Box::new(malformed_request(media, &message))
    })
}

/// `GET /graphql`: the explorer for a browser, else a query from the query string.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let media = MediaType::negotiate(&headers);
    if let Ok(Query(GetParams { query: None, .. })) = &params
        && accepts_html(&headers)
    {
        return graphiql::page(state.dev_token.as_deref());
    }
    let params = match query_params(params, media) {
        Ok(params) => params,
        Err(refused) => return *refused,
    };
    execute(
        &state,
        &headers,
        media,
        params,
        OperationsAllowed::QueriesOnly,
    )
    .await
}

/// The parameters of a GET request's query string, or the response refusing it.
pub(super) fn query_params(
    params: Result<Query<GetParams>, QueryRejection>,
    media: MediaType,
) -> Result<Params, Box<Response>> {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            let message = format!("The query string is not valid: {}.", rejection.body_text());
            return Err(Box::new(malformed_request(media, &message)));
        }
    };
    let Ok(variables) = json_object_parameter(params.variables.as_deref()) else {
        return Err(Box::new(malformed_request(
            media,
            "The `variables` parameter must be a JSON object.",
        )));
    };
    let Ok(extensions) = json_object_parameter(params.extensions.as_deref()) else {
        return Err(Box::new(malformed_request(
            media,
            "The `extensions` parameter must be a JSON object.",
        )));
    };
    Ok(Params {
        query: params.query,
        operation_name: params.operation_name,
        variables,
        _extensions: extensions,
    })
}

/// A request of a streaming transport, ready to execute.
pub(super) struct PreparedRequest {
    pub request: async_graphql::Request,
    /// Whether the document was parsed here (else async-graphql parses it).
    pub parsed: bool,
}

/// A request for a transport that streams its results, checked as
/// `execute` checks one: the document's limits and its variables.
pub(super) async fn prepare(
    state: &AppState,
    viewer: crate::domain::Viewer,
    params: Params,
    request_id: Option<&str>,
    media: MediaType,
) -> Result<PreparedRequest, Box<Response>> {
    let Some(query) = params.query else {
        let message = "The request has no `query`: send the GraphQL document as a string.";
        return Err(Box::new(malformed_request(media, message)));
    };
    let provided = provided_variables(params.variables.as_ref());
    let (query, document) = match state.documents.prepare(query).await {
        (query, Ok(document), _) => (query, document),
        (_, Err(limit), _) => return Err(Box::new(document_refused(media, &limit))),
    };
    let mut request = request_of(query, viewer, params.operation_name, params.variables);
    if let Some(id) = request_id {
        request = request.data(RequestId(id.to_owned()));
    }
    let parsed = document.is_some();
    if let Some(document) = document {
        let missing = selected_operation(&document, request.operation_name.as_deref())
            .and_then(|operation| missing_variable(operation, &provided));
        if let Some(message) = missing {
            let body = error_body(RequestErrorCode::ValidationFailed.as_str(), &message);
            return Err(Box::new(graphql_response(
                media,
                media.invalid_document_status(),
                body,
            )));
        }
        request.set_parsed_query(document);
    }
    Ok(PreparedRequest { request, parsed })
}

/// The names of the variables given a value other than null.
fn provided_variables(variables: Option<&Map<String, Value>>) -> Vec<String> {
    variables
        .into_iter()
        .flatten()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, _)| name.clone())
        .collect()
}

/// The request to execute: the document, its operation and variables, and
/// who asks.
fn request_of(
    query: String,
    viewer: crate::domain::Viewer,
    operation_name: Option<String>,
    variables: Option<Map<String, Value>>,
) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(query).data(viewer);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = variables {
        let mut variables = Value::Object(variables);
        document::read_negative_zero_in_json(&mut variables);
        request = request.variables(Variables::from_json(variables));
    }
    request
}

/// The request id the request-id layer set.
pub(super) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Whether a request may run mutations: GET requests must be safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationsAllowed {
    All,
    QueriesOnly,
}

async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    media: MediaType,
    params: Params,
    allowed: OperationsAllowed,
) -> Response {
    let Some(query) = params.query else {
        let message = "The request has no `query`: send the GraphQL document as a string.";
        return malformed_request(media, message);
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    let viewer = match state.verifier.viewer(authorization).await {
        Ok(viewer) => viewer,
        Err(error) => return unauthorized(media, &error),
    };
    let provided = provided_variables(params.variables.as_ref());
    let (query, document, kept) = match state.documents.prepare(query).await {
        (query, Ok(document), kept) => (query, document, kept),
        (_, Err(limit), _) => return document_refused(media, &limit),
    };
    // Validation depends on the document, the operation and the variables'
    // values: a kept document sent again, without variables, as the
    // operation it passed validation as, passes again.
    let without_variables = params
        .variables
        .as_ref()
        .is_none_or(|variables| variables.is_empty());
    let known_valid = without_variables
        && kept
            .as_ref()
            .is_some_and(|kept| kept.validated_as(params.operation_name.as_deref()));
    // A kept document to record as valid once this request passes.
    let to_record = match kept {
        Some(kept) if without_variables && !known_valid => {
            Some((kept, params.operation_name.clone()))
        }
        _ => None,
    };
    let mut request = request_of(query, viewer, params.operation_name, params.variables);
    let request_id = request_id(headers);
    if let Some(id) = &request_id {
        request = request.data(RequestId(id.clone()));
    }
    let parsed = document.is_some();
    let operation = document.as_ref().and_then(|document| {
        selected_operation(document, request.operation_name.as_deref())
            .map(|operation| (operation.ty, missing_variable(operation, &provided)))
    });
    if let Some(document) = document {
        request.set_parsed_query(document);
    }
    match operation {
        Some((OperationType::Subscription, _)) => {
            let message = "Subscriptions are served over WebSocket at /graphql (subprotocol \
                           graphql-transport-ws) and as server-sent events at /graphql/stream.";
            return request_error(media, StatusCode::BAD_REQUEST, message);
        }
        Some((OperationType::Mutation, _)) if allowed == OperationsAllowed::QueriesOnly => {
            let message = "Mutations must be sent with POST.";
            let mut response = request_error(media, StatusCode::METHOD_NOT_ALLOWED, message);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        Some((_, Some(message))) => {
            let body = error_body(RequestErrorCode::ValidationFailed.as_str(), &message);
            return graphql_response(media, media.invalid_document_status(), body);
        }
        _ => {}
    }
    // Lines the resolvers log (a state created, an error) carry the request id.
    let span = tracing::info_span!("request", request_id = request_id.as_deref());
    let schema = if known_valid {
        &state.schema_for_valid_documents
    } else {
        &state.schema
    };
    let response = schema.execute(request).instrument(span).await;
    if let Some((kept, operation_name)) = to_record
        && !refused_by_schema(&response)
    {
        kept.passed_validation_as(operation_name.as_deref());
    }
    executed(media, response, parsed)
}

/// The HTTP response for what async-graphql answered. Resolvers return only
/// the service's own errors, each with a code (`Error::into_graphql`); the
/// others are async-graphql refusing the request itself: its document, or an
/// argument or variable value that does not fit its type.
fn executed(media: MediaType, mut response: async_graphql::Response, parsed: bool) -> Response {
    let refused = with_codes(&mut response, parsed);
    if refused && response.data == async_graphql::Value::Null {
        let body = json!({ "errors": response.errors });
        return graphql_response(media, media.invalid_document_status(), body);
    }
    // Written straight from async-graphql's values: the response is most of
    // what a read costs to answer, and a detour through `serde_json::Value`
    // would build it twice.
    let body = ExecutedBody {
        errors: &response.errors,
        data: &response.data,
    };
    match serde_json::to_string(&body) {
        Ok(body) => graphql_text_response(media, StatusCode::OK, body),
        Err(error) => {
            tracing::error!(%error, "cannot serialize a response");
            let internal = Error::Internal(Box::new(error));
            let body = error_body(internal.code(), &internal.to_string());
            graphql_response(media, StatusCode::INTERNAL_SERVER_ERROR, body)
        }
    }
}

/// Gives async-graphql's own errors (the request itself refused) the code
/// of a request error, and says whether there were any.
pub(super) fn with_codes(response: &mut async_graphql::Response, parsed: bool) -> bool {
    let refused = !response.errors.is_empty() && !response.errors.iter().any(has_code);
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_some() {
            continue;
        }
        let code = if parsed {
            RequestErrorCode::ValidationFailed
        } else {
            RequestErrorCode::ParseFailed
        };
        extensions.set("code", code.as_str());
    }
    refused
}

/// Whether an error is the service's own, which always carries a code.
fn has_code(error: &async_graphql::ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.get("code").is_some())
}

/// Whether async-graphql refused part of the request (its document, or an
/// argument that does not fit its type): any error that is not the service's.
fn refused_by_schema(response: &async_graphql::Response) -> bool {
    !response.errors.iter().all(has_code)
}

/// The body of an executed request: its errors, if any, then its data.
#[derive(serde::Serialize)]
struct ExecutedBody<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
    data: &'a async_graphql::Value,
}

/// The operation a request would run, if the document names it.
fn selected_operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(operation_name, _)| operation_name.as_str() == name)
            .map(|(_, operation)| &operation.node),
        // The parser keeps a lone named operation (`mutation M { .. }`) among
        // "multiple"; with no name given, it is the one that runs.
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Why a request that leaves out a required variable cannot run, as the
/// specification's variable coercion says, before anything executes.
fn missing_variable(operation: &OperationDefinition, provided: &[String]) -> Option<String> {
    operation
        .variable_definitions
        .iter()
        .map(|definition| &definition.node)
        .find(|definition| {
            definition.default_value().is_none()
                && !provided
                    .iter()
                    .any(|name| *name == definition.name.node.as_str())
        })
        .map(|definition| {
            format!(
                "Variable `${}` of type `{}` needs a value in `variables`.",
                definition.name.node, definition.var_type.node
            )
        })
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    Unreadable,
}

impl BodyError {
    fn response(self, media: MediaType) -> Response {
        match self {
            BodyError::TooLarge => {
                let limit = MAX_BODY_BYTES / 1024;
                let message = format!("The request body must be at most {limit} KiB.");
                request_error(media, StatusCode::PAYLOAD_TOO_LARGE, &message)
            }
            BodyError::Unreadable => {
                let message = "The request body could not be read.";
                request_error(media, StatusCode::BAD_REQUEST, message)
            }
        }
    }
}

/// Reads the body, keeping at most `MAX_BODY_BYTES`. The rest of a larger body
/// is read and dropped, up to `DRAINED_BYTES`, so that a client still sending
/// it gets the 413 rather than a reset connection.
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Vec<u8>, BodyError> {
    const DRAINED_BYTES: usize = 1024 * 1024;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > DRAINED_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let mut kept = Vec::new();
    let mut seen = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        } else if seen > DRAINED_BYTES {
            return Err(BodyError::TooLarge);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    Ok(kept)
}

/// Whether `Content-Type` is `application/json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(JSON))
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/html"))
}

/// A JSON object passed as text in a query string parameter, if given.
fn json_object_parameter(
    text: Option<&str>,
) -> Result<Option<Map<String, Value>>, serde_json::Error> {
    text.map_or(Ok(None), serde_json::from_str)
}

/// A request that is not a well-formed GraphQL-over-HTTP request: a missing or
/// mistyped `query`, `operationName`, `variables` or `extensions`. It gets 400
/// whatever the media type, as the specification's examples show.
fn malformed_request(media: MediaType, message: &str) -> Response {
    request_error(media, StatusCode::BAD_REQUEST, message)
}

/// A document over one of the limits in `document`: refused as a validation
/// failure, before async-graphql does any work on it.
fn document_refused(media: MediaType, limit: &LimitExceeded) -> Response {
    let body = error_body(
        RequestErrorCode::ValidationFailed.as_str(),
        &limit.to_string(),
    );
    graphql_response(media, media.invalid_document_status(), body)
}

/// A refusal of a request that never reached `/graphql`'s handlers, in the
/// same shape and media type as the handlers' own.
pub fn refusal(headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    request_error(MediaType::negotiate(headers), status, message)
}

/// A GraphQL-shaped error for a request that was not executed.
pub(super) fn request_error(media: MediaType, status: StatusCode, message: &str) -> Response {
    let body = error_body(RequestErrorCode::BadRequest.as_str(), message);
    graphql_response(media, status, body)
}

/// A response body holding one error and its `extensions.code`, and no `data`.
pub(super) fn error_body(code: &str, message: &str) -> Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
}

/// A 401 for a token that failed a check, as RFC 6750 describes.
pub(super) fn unauthorized(media: MediaType, error: &TokenError) -> Response {
    let message = error.to_string();
    let body = error_body(Error::Unauthenticated.code(), &message);
    let mut response = graphql_response(media, StatusCode::UNAUTHORIZED, body);
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{message}\"");
    if let Ok(challenge) = HeaderValue::from_str(&challenge.replace('`', "'")) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

fn graphql_response(media: MediaType, status: StatusCode, body: Value) -> Response {
    graphql_text_response(media, status, body.to_string())
}

fn graphql_text_response(media: MediaType, status: StatusCode, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, media.content_type()),
        // Onboarding states are per user: no shared cache may keep them.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::VARY,
            HeaderValue::from_static("Accept, Authorization"),
        ),
    ];
    (status, headers, body).into_response()
}
