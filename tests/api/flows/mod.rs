//! Flows (issue 10): several onboarding flows per user, each with steps, a
//! lifecycle, versions and an audit trail. Written from the contract
//! (design/flows.md) before the implementation; one file per concern, and
//! here the helpers they share.

mod cli;
mod concurrency;
mod declarations;
mod erasure_races;
mod events;
mod grouped_writes;
mod groups;
mod groups_data;
mod lifecycle;
mod migration;
mod original_api;
mod replicas;
mod revisions_and_idempotency;
mod steps;
mod stored_values;
mod user_data;
mod user_data_at_scale;
mod versions;

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, post_graphql, token};

/// The `sub` of the admin token (the one `TestApp::graphql_as_admin` uses too).
const ADMIN: &str = "the-admin";

/// Every field of a `FlowState`.
const STATE: &str = "id userId groupId flow version status currentStepIndex currentStep \
     steps { key title optional status completedAt skippedAt data } doneSteps totalSteps \
     startedAt completedAt dismissedAt snoozedUntil revision createdAt updatedAt";

/// Every field of a `Flow`, with its versions.
const FLOW: &str = "key title version publishedAt steps { key title optional } \
     versions { version title reonboarding publishedAt steps { key title optional } }";

/// Every field of a `FlowEvent`.
const EVENT: &str = "id userId groupId flow version type step actor requestId at data";

/// The steps of the flow most tests use.
const CHECKLIST: [&str; 3] = ["profile", "invite", "connect"];

/// Who sends a request.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    User(&'a str),
    /// A user whose token names these groups in `org_id` (the default
    /// groups claim): one as a string, several as an array.
    Member(&'a str, &'a [&'a str]),
    Admin,
    Nobody,
}

impl Who<'_> {
    fn token(self) -> Option<String> {
        match self {
            Who::User(sub) => Some(token(sub, &[])),
            Who::Member(sub, groups) => Some(member_token(sub, groups, &[])),
            Who::Admin => Some(token(ADMIN, &["admin"])),
            Who::Nobody => None,
        }
    }
}

/// A token for `sub` with `roles`, naming `groups` in `org_id`: one as a
/// string (Auth0, Clerk), several as an array.
fn member_token(sub: &str, groups: &[&str], roles: &[&str]) -> String {
    let org_id = match groups {
        [one] => json!(one),
        several => json!(several),
    };
    let claims = json!({
        "sub": sub,
        "roles": roles,
        "org_id": org_id,
        "exp": crate::helpers::unix_now() + 3600,
    });
    crate::helpers::sign(
        &claims,
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    )
}

async fn send(app: &TestApp, who: Who<'_>, query: &str, variables: Value) -> reqwest::Response {
    post_graphql(&app.graphql_url(), who.token().as_deref(), query, variables).await
}

/// One GraphQL request; the answer must be a 200 with a JSON body.
async fn gql(app: &TestApp, who: Who<'_>, query: &str, variables: Value) -> Value {
    gql_with_request_id(app, who, query, variables).await.0
}

/// One GraphQL request, and the `x-request-id` of its response.
async fn gql_with_request_id(
    app: &TestApp,
    who: Who<'_>,
    query: &str,
    variables: Value,
) -> (Value, String) {
    let response = send(app, who, query, variables).await;
    assert_eq!(response.status(), 200, "a GraphQL response is a 200");
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("an x-request-id header")
        .to_str()
        .expect("ASCII")
        .to_owned();
    (response.json().await.expect("a JSON body"), request_id)
}

/// `data.<field>` of a body that must have no errors.
fn ok(body: Value, field: &str) -> Value {
    assert!(body.get("errors").is_none(), "{field} succeeds: {body}");
    let value = body["data"][field].clone();
    assert!(!value.is_null(), "{field} answers: {body}");
    value
}

/// The body is an error with `code` whose message names every one of `mentions`.
fn assert_error(body: &Value, code: &str, mentions: &[&str]) {
    assert_eq!(error_code(body), code, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    for mention in mentions {
        assert!(
            message.contains(mention),
            "the message names `{mention}`: {message}"
        );
    }
}

fn variable_type(name: &str) -> &'static str {
    match name {
        "flow" | "step" | "key" => "String!",
        "until" => "DateTime!",
        "data" => "JSON",
        "userId" | "groupId" | "idempotencyKey" | "after" => "String",
        "expectedRevision" | "first" => "Int",
        "input" => "PublishFlowInput!",
        other => panic!("no variable type for `{other}`"),
    }
}

/// `kind(...) { field(...) { selection } }`, every argument a variable of the
/// same name: pass `args` as the variables.
fn operation(kind: &str, field: &str, args: &Value, selection: &str) -> String {
    let names: Vec<&str> = args
        .as_object()
        .expect("arguments as a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    if names.is_empty() {
        return format!("{kind} {{ {field} {{ {selection} }} }}");
    }
    let declarations: Vec<String> = names
        .iter()
        .map(|name| format!("${name}: {}", variable_type(name)))
        .collect();
    let arguments: Vec<String> = names
        .iter()
        .map(|name| format!("{name}: ${name}"))
        .collect();
    format!(
        "{kind}({}) {{ {field}({}) {{ {selection} }} }}",
        declarations.join(", "),
        arguments.join(", ")
    )
}

/// A flow mutation (`startFlow`, `completeStep`, ...) returning the whole state.
async fn write(app: &TestApp, who: Who<'_>, field: &str, args: Value) -> Value {
    let query = operation("mutation", field, &args, STATE);
    gql(app, who, &query, args).await
}

/// A flow mutation that must succeed: the state it returns.
async fn write_ok(app: &TestApp, who: Who<'_>, field: &str, args: Value) -> Value {
    ok(write(app, who, field, args).await, field)
}

/// `flowState(flow, userId)`, the whole body.
async fn read_state(app: &TestApp, who: Who<'_>, args: Value) -> Value {
    let query = operation("query", "flowState", &args, STATE);
    gql(app, who, &query, args).await
}

/// The user's own state in `flow`.
async fn state_of(app: &TestApp, user: &str, flow: &str) -> Value {
    ok(
        read_state(app, Who::User(user), json!({ "flow": flow })).await,
        "flowState",
    )
}

/// The user's own `flowStates`.
async fn flow_states_of(app: &TestApp, user: &str) -> Vec<Value> {
    let query = format!("{{ flowStates {{ {STATE} }} }}");
    let states = ok(
        gql(app, Who::User(user), &query, json!({})).await,
        "flowStates",
    );
    states.as_array().expect("a list").clone()
}

/// The state of `flow` in a `flowStates` list.
fn state_in<'a>(states: &'a [Value], flow: &str) -> &'a Value {
    states
        .iter()
        .find(|state| state["flow"] == flow)
        .unwrap_or_else(|| panic!("a state of {flow} in {states:?}"))
}

/// The step `key` of a state (or of a flow).
fn step_of<'a>(state: &'a Value, key: &str) -> &'a Value {
    state["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|step| step["key"] == key)
        .unwrap_or_else(|| panic!("a step {key} in {state}"))
}

/// The keys of a state's (or a flow's) steps, in order.
fn step_keys(state: &Value) -> Vec<String> {
    state["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| step["key"].as_str().expect("a key").to_owned())
        .collect()
}

/// `(key, status)` of every step of a state, in order.
fn step_statuses(state: &Value) -> Vec<(String, String)> {
    state["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| {
            (
                step["key"].as_str().expect("a key").to_owned(),
                step["status"].as_str().expect("a status").to_owned(),
            )
        })
        .collect()
}

/// `[(key, status)]` from literals, to compare with `step_statuses`.
fn statuses(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(key, status)| (key.to_string(), status.to_string()))
        .collect()
}

/// Required steps with these keys, titled after them.
fn steps(keys: &[&str]) -> Value {
    keys.iter()
        .map(|key| json!({ "key": key, "title": format!("Step {key}") }))
        .collect()
}

/// A `PublishFlowInput` with required steps and the default policy.
fn declaration(key: &str, keys: &[&str]) -> Value {
    json!({ "key": key, "title": format!("Flow {key}"), "steps": steps(keys) })
}

/// `publishFlow(input)` as an admin, the whole body.
async fn publish(app: &TestApp, input: Value) -> Value {
    let args = json!({ "input": input });
    let query = operation("mutation", "publishFlow", &args, FLOW);
    gql(app, Who::Admin, &query, args).await
}

/// `publishFlow(input)` that must succeed: the `Flow`.
async fn publish_ok(app: &TestApp, input: Value) -> Value {
    ok(publish(app, input).await, "publishFlow")
}

/// Publishes `key` with required steps `keys` under `policy`.
async fn publish_with(app: &TestApp, key: &str, keys: &[&str], policy: &str) -> Value {
    let mut input = declaration(key, keys);
    input["reonboarding"] = json!(policy);
    publish_ok(app, input).await
}

/// Publishes the flow `checklist`: profile, invite, connect, all required.
async fn publish_checklist(app: &TestApp) -> Value {
    publish_ok(app, declaration("checklist", &CHECKLIST)).await
}

/// `flow(key)`, null for an unknown key.
async fn read_flow(app: &TestApp, who: Who<'_>, key: &str) -> Value {
    let args = json!({ "key": key });
    let query = operation("query", "flow", &args, FLOW);
    let body = gql(app, who, &query, args).await;
    assert!(body.get("errors").is_none(), "flow(key) succeeds: {body}");
    body["data"]["flow"].clone()
}

/// The keys `flows` lists, in its order, leaving out the built-in `onboarding`.
async fn published_keys(app: &TestApp) -> Vec<String> {
    let query = format!("{{ flows {{ {FLOW} }} }}");
    let flows = ok(gql(app, Who::Admin, &query, json!({})).await, "flows");
    flows
        .as_array()
        .expect("a list")
        .iter()
        .map(|flow| flow["key"].as_str().expect("a key").to_owned())
        .filter(|key| key != "onboarding")
        .collect()
}

/// `flowEvents(...)`, the whole body.
async fn events_page(app: &TestApp, who: Who<'_>, args: Value) -> Value {
    let selection =
        format!("edges {{ cursor node {{ {EVENT} }} }} pageInfo {{ hasNextPage endCursor }}");
    let query = operation("query", "flowEvents", &args, &selection);
    gql(app, who, &query, args).await
}

/// Every event `flowEvents(args)` lists, newest first, read page after page.
async fn all_events(app: &TestApp, who: Who<'_>, args: Value) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let mut page_args = args.clone();
        page_args["first"] = json!(100);
        if let Some(cursor) = &after {
            page_args["after"] = json!(cursor);
        }
        let page = ok(events_page(app, who, page_args).await, "flowEvents");
        for edge in page["edges"].as_array().expect("edges") {
            events.push(edge["node"].clone());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return events;
        }
        after = Some(
            page["pageInfo"]["endCursor"]
                .as_str()
                .expect("an endCursor when there is a next page")
                .to_owned(),
        );
    }
    panic!("flowEvents never ended");
}

/// The user's own events in `flow` (every flow when `None`), newest first.
async fn events_of(app: &TestApp, user: &str, flow: Option<&str>) -> Vec<Value> {
    let args = match flow {
        Some(flow) => json!({ "flow": flow }),
        None => json!({}),
    };
    all_events(app, Who::User(user), args).await
}

/// The `type` of each event, in order.
fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["type"].as_str().expect("a type").to_owned())
        .collect()
}

/// `deleteUserData(userId)` as `who`, the whole body.
async fn delete_user_data(app: &TestApp, who: Who<'_>, user: &str) -> Value {
    let query = "mutation($userId: String!) { deleteUserData(userId: $userId) { userId flowStates events idempotencyKeys } }";
    gql(app, who, query, json!({ "userId": user })).await
}

/// `exportUserData(userId)` as `who`, the whole body.
async fn export_user_data(app: &TestApp, who: Who<'_>, user: &str) -> Value {
    let query = format!(
        "query($userId: String) {{ exportUserData(userId: $userId) {{ userId flowStates {{ {STATE} }} events {{ {EVENT} }} }} }}"
    );
    gql(app, who, &query, json!({ "userId": user })).await
}

/// A `DateTime` `offset` from now, as the contract writes them.
fn datetime_from_now(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A `DateTime` as the contract writes it: UTC with six fraction digits.
fn assert_datetime(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a DateTime string, got {value}"));
    let shape = text.len() == 27
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && text.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok();
    assert!(shape, "{text} is not like 2025-01-01T10:00:00.000000Z");
}
