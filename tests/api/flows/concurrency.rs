//! Many writes to one user's flow at once: each applied exactly once, the
//! revision and the events matching them one for one; concurrent first
//! accesses; optimistic concurrency letting exactly one writer through.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{
    STATE, Who, declaration, events_of, operation, publish_checklist, publish_ok, state_of,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

/// Sends every `(query, variables)` at once as `who`; the bodies, in order.
async fn all_at_once(app: &TestApp, who: Who<'_>, requests: Vec<(String, Value)>) -> Vec<Value> {
    let token = who.token();
    let mut tasks = JoinSet::new();
    for (index, (query, variables)) in requests.into_iter().enumerate() {
        let mut request = app
            .client
            .post(app.graphql_url())
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        tasks.spawn(async move {
            let response = request.send().await.expect("the server answers");
            assert_eq!(response.status(), 200);
            (index, response.json::<Value>().await.expect("JSON"))
        });
    }
    let mut bodies = tasks.join_all().await;
    bodies.sort_by_key(|(index, _)| *index);
    bodies.into_iter().map(|(_, body)| body).collect()
}

async fn a_hundred_concurrent_complete_steps_each_apply_once_and_match_the_events(
    backend: Backend,
) {
    const STEPS: usize = 10;
    const WRITES: usize = 100;
    let app = spawn_app(backend).await;
    let keys: Vec<String> = (0..STEPS).map(|i| format!("step-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    publish_ok(&app, declaration("checklist", &key_refs)).await;

    let requests = (0..WRITES)
        .map(|i| {
            let args = json!({ "flow": "checklist", "step": keys[i % STEPS] });
            (operation("mutation", "completeStep", &args, STATE), args)
        })
        .collect();
    let bodies = all_at_once(&app, Who::User("alice"), requests).await;

    let mut revisions = BTreeSet::new();
    for body in &bodies {
        assert!(body.get("errors").is_none(), "every write succeeds: {body}");
        revisions.insert(
            body["data"]["completeStep"]["revision"]
                .as_i64()
                .expect("a revision"),
        );
    }
    assert_eq!(
        revisions,
        (1..=WRITES as i64).collect::<BTreeSet<_>>(),
        "each write got a revision of its own"
    );
    let state = state_of(&app, "alice", "checklist").await;
    assert_eq!(state["revision"], WRITES as i64);
    assert_eq!(state["status"], "COMPLETED");
    assert_eq!(state["doneSteps"], STEPS as i64);
    for step in state["steps"].as_array().expect("steps") {
        assert_eq!(step["status"], "COMPLETED", "{step}");
        assert!(step["completedAt"].is_string(), "{step}");
    }
    // The first completion of a step sets its time; the others keep it.
    for body in &bodies {
        for step in body["data"]["completeStep"]["steps"]
            .as_array()
            .expect("steps")
        {
            if step["status"] == "COMPLETED" {
                let stored = super::step_of(&state, step["key"].as_str().expect("a key"));
                assert_eq!(step["completedAt"], stored["completedAt"], "{step}");
            }
        }
    }

    let mut events = events_of(&app, "alice", Some("checklist")).await;
    let completed: Vec<_> = events
        .iter()
        .filter(|event| event["type"] == "FLOW_COMPLETED")
        .collect();
    assert_eq!(completed.len(), 1, "the flow completed once");
    events.retain(|event| event["type"] != "FLOW_COMPLETED");
    assert_eq!(events.len(), WRITES, "one event per write");
    let mut per_step: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        assert_eq!(event["type"], "STEP_COMPLETED", "{event}");
        *per_step
            .entry(event["step"].as_str().expect("a step").to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = keys
        .iter()
        .map(|key| (key.clone(), WRITES / STEPS))
        .collect();
    assert_eq!(per_step, expected);
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|event| event["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids.len(), WRITES, "no event is listed twice");
    assert_eq!(
        events_of(&app, "alice", None).await.len(),
        WRITES + 1,
        "and nothing else"
    );
}

async fn fifty_concurrent_first_flow_state_reads_all_see_one_state(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let args = json!({ "flow": "checklist" });
    let query = operation("query", "flowState", &args, STATE);

    let bodies = all_at_once(&app, Who::User("alice"), vec![(query, args); 50]).await;

    for body in &bodies {
        assert!(body.get("errors").is_none(), "every read succeeds: {body}");
    }
    let states: Vec<&Value> = bodies
        .iter()
        .map(|body| &body["data"]["flowState"])
        .collect();
    for state in &states {
        assert_eq!(
            state["createdAt"], states[0]["createdAt"],
            "all see the one state"
        );
        assert_eq!(state["revision"], 0);
        assert_eq!(state["status"], "NOT_STARTED");
    }
    assert_eq!(&state_of(&app, "alice", "checklist").await, states[0]);
    assert_eq!(events_of(&app, "alice", None).await, Vec::<Value>::new());
}

async fn of_two_concurrent_writes_with_the_same_expected_revision_exactly_one_applies(
    backend: Backend,
) {
    const ROUNDS: i64 = 5;
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    state_of(&app, "alice", "checklist").await;

    for revision in 0..ROUNDS {
        let args = json!({ "flow": "checklist", "expectedRevision": revision });
        let query = operation("mutation", "dismissFlow", &args, STATE);
        let bodies = all_at_once(&app, Who::User("alice"), vec![(query, args); 2]).await;

        let applied: Vec<&Value> = bodies
            .iter()
            .filter(|body| body.get("errors").is_none())
            .collect();
        let refused: Vec<&Value> = bodies
            .iter()
            .filter(|body| body.get("errors").is_some())
            .collect();
        assert_eq!(applied.len(), 1, "exactly one applies: {bodies:?}");
        assert_eq!(applied[0]["data"]["dismissFlow"]["revision"], revision + 1);
        assert_eq!(refused.len(), 1, "{bodies:?}");
        assert_eq!(
            refused[0]["errors"][0]["extensions"]["code"], "CONFLICT",
            "{bodies:?}"
        );
        assert_eq!(
            refused[0]["errors"][0]["extensions"]["currentRevision"],
            revision + 1
        );
    }

    assert_eq!(
        state_of(&app, "alice", "checklist").await["revision"],
        ROUNDS
    );
    let events = events_of(&app, "alice", Some("checklist")).await;
    assert_eq!(events.len() as i64, ROUNDS);
    assert!(events.iter().all(|event| event["type"] == "FLOW_DISMISSED"));
}

/// The original API's mutations and flow mutations of `onboarding` write
/// one row: sent together, each applies once, in one history.
async fn original_and_flow_writes_of_onboarding_at_once_each_apply_once(backend: Backend) {
    const EACH: usize = 25;
    let app = spawn_app(backend).await;
    let mut requests = Vec::new();
    for i in 0..EACH {
        let args = json!({ "step": i + 1 });
        let query =
            "mutation($step: Int!) { setOnboardingStep(step: $step) { currentStep updatedAt } }";
        requests.push((query.to_owned(), args));
        let args = json!({ "flow": "onboarding" });
        requests.push((operation("mutation", "dismissFlow", &args, STATE), args));
    }
    let bodies = all_at_once(&app, Who::User("alice"), requests).await;

    let mut revisions = BTreeSet::new();
    for body in &bodies {
        assert!(body.get("errors").is_none(), "every write succeeds: {body}");
        if let Some(revision) = body["data"]["dismissFlow"]["revision"].as_i64() {
            revisions.insert(revision);
        }
    }
    assert_eq!(
        revisions.len(),
        EACH,
        "each flow write got a revision of its own"
    );
    let state = state_of(&app, "alice", "onboarding").await;
    assert_eq!(
        state["revision"],
        2 * EACH as i64,
        "every write counted once"
    );
    let latest = bodies
        .iter()
        .filter_map(|body| {
            let written = body["data"].as_object()?.values().next()?;
            written["updatedAt"].as_str().map(str::to_owned)
        })
        .max()
        .expect("times");
    assert_eq!(
        state["updatedAt"], latest,
        "the state carries the time of the write that landed last"
    );
    let events = events_of(&app, "alice", Some("onboarding")).await;
    let count = |kind: &str| events.iter().filter(|event| event["type"] == kind).count();
    assert_eq!(count("STEP_SET"), EACH, "{events:?}");
    assert_eq!(count("FLOW_DISMISSED"), EACH, "{events:?}");
    assert_eq!(events.len(), 2 * EACH);
}

/// Writes refused while others apply at the same time change nothing, and
/// the others are unaffected.
async fn refused_writes_among_concurrent_ones_change_nothing(backend: Backend) {
    const STEPS: usize = 10;
    let app = spawn_app(backend).await;
    let keys: Vec<String> = (0..STEPS).map(|i| format!("step-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    publish_ok(&app, declaration("checklist", &key_refs)).await;
    let mut requests = Vec::new();
    for key in &keys {
        let args = json!({ "flow": "checklist", "step": key });
        requests.push((operation("mutation", "completeStep", &args, STATE), args));
        let stale = json!({ "flow": "checklist", "step": key, "expectedRevision": 1000 });
        requests.push((operation("mutation", "completeStep", &stale, STATE), stale));
    }
    let bodies = all_at_once(&app, Who::User("alice"), requests).await;

    for (index, body) in bodies.iter().enumerate() {
        if index % 2 == 0 {
            assert!(body.get("errors").is_none(), "applies: {body}");
        } else {
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "CONFLICT",
                "{body}"
            );
            assert_eq!(body["data"], Value::Null, "{body}");
        }
    }
    let state = state_of(&app, "alice", "checklist").await;
    assert_eq!(state["revision"], STEPS as i64);
    assert_eq!(state["status"], "COMPLETED");
    let events = events_of(&app, "alice", Some("checklist")).await;
    assert_eq!(
        events.len(),
        STEPS + 1,
        "an event per applied write, and FLOW_COMPLETED; none of a refused write: {events:?}"
    );
}

on_both_backends!(
    a_hundred_concurrent_complete_steps_each_apply_once_and_match_the_events,
    original_and_flow_writes_of_onboarding_at_once_each_apply_once,
    refused_writes_among_concurrent_ones_change_nothing,
    fifty_concurrent_first_flow_state_reads_all_see_one_state,
    of_two_concurrent_writes_with_the_same_expected_revision_exactly_one_applies,
);
