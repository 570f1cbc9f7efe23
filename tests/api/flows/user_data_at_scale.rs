//! A user's data when there is a lot of it, or when it is spread over other
//! users' histories: an export costs a bounded amount however long the
//! history, and the whole history still comes out (page by page, or from
//! the command line in one stream); an erasure leaves neither the user's id
//! as an actor anywhere nor their bytes in the SQLite file.

use serde_json::{Value, json};

use super::{
    ADMIN, EVENT, STATE, Who, all_events, delete_user_data, events_of, gql, ok, publish_checklist,
    write_ok,
};
use crate::helpers::{
    Backend, ServerProcess, TestDatabase, command, post_graphql, spawn_app, token,
};
use crate::on_both_backends;

/// Events `bulk-user` gets, each with 4 KiB of data.
const EVENTS: usize = 10_000;

/// Gives `user` one real event, then `EVENTS - 1` copies of it with 4 KiB of
/// data each, straight in the database.
async fn a_long_history(db: &TestDatabase, server: &ServerProcess, user: &str) {
    let body = post_graphql(
        &server.graphql_url(),
        Some(&token(user, &[])),
        "mutation { completeStep(flow: \"checklist\", step: \"profile\") { revision } }",
        json!({}),
    )
    .await
    .json::<Value>()
    .await
    .expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    let pad = "x".repeat(4000);
    let copies = format!(
        "insert into flow_event (user_id, flow, version, type, step, actor, request_id, at, data) \
         select user_id, flow, version, type, step, actor, request_id, at, '{{\"pad\":\"{pad}\"}}' \
         from flow_event, series where user_id = '{user}'"
    );
    let statement = match db.backend {
        Backend::Sqlite => format!(
            "with recursive series(i) as (select 1 union all select i + 1 from series \
             where i < {}) {copies}",
            EVENTS - 1
        ),
        Backend::Postgres => format!(
            "with series as (select generate_series(1, {}) as i) {copies}",
            EVENTS - 1
        ),
    };
    assert_eq!(
        db.execute(&statement).await.expect("copies"),
        EVENTS as u64 - 1
    );
}

async fn exporting_a_long_history_costs_a_bounded_page_and_the_rest_pages_on(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let server = ServerProcess::start(&db.url, &[]).await;
    let admin = token(ADMIN, &["admin"]);
    let publish = "mutation { publishFlow(input: { key: \"checklist\", title: \"Set up\", \
        steps: [{ key: \"profile\", title: \"Profile\" }, { key: \"invite\", title: \"Invite\" }] }) \
        { version } }";
    let body = post_graphql(&server.graphql_url(), Some(&admin), publish, json!({})).await;
    assert_eq!(body.status(), 200);
    a_long_history(&db, &server, "bulk-user").await;

    let export = format!(
        "{{ exportUserData(userId: \"bulk-user\") {{ userId flowStates {{ {STATE} }} \
         events {{ {EVENT} }} eventsPageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let four_exports_at_once = |user: &str| {
        let mut exports = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (url, admin) = (server.graphql_url(), admin.clone());
            let export = export.replace("bulk-user", user);
            exports.spawn(async move {
                let started = std::time::Instant::now();
                let response = post_graphql(&url, Some(&admin), &export, json!({})).await;
                let bytes = response.bytes().await.expect("a body");
                (bytes, started.elapsed())
            });
        }
        exports
    };
    // The same four exports of a short history first, so that what grows
    // next is what the long history costs.
    four_exports_at_once(ADMIN).join_all().await;
    let before = server.memory_kib("VmHWM");
    let exports = four_exports_at_once("bulk-user");
    let answers = exports.join_all().await;
    let grown_mib = server.memory_kib("VmHWM").saturating_sub(before) / 1024;
    assert!(
        grown_mib < 48,
        "four exports at once grew the server by {grown_mib} MiB"
    );
    for (bytes, took) in &answers {
        assert!(
            bytes.len() < 1 << 20,
            "an export answer is {} bytes",
            bytes.len()
        );
        assert!(took.as_secs() < 5, "an export took {took:?}");
    }
    let body: Value = serde_json::from_slice(&answers[0].0).expect("JSON");
    let data = &body["data"]["exportUserData"];
    let page = data["events"].as_array().expect("events");
    assert_eq!(page.len(), 100, "the newest 100 events");
    assert_eq!(data["eventsPageInfo"]["hasNextPage"], true);
    assert_eq!(data["flowStates"].as_array().map(Vec::len), Some(1));

    // The rest of the history pages on from the export's cursor.
    let mut after = data["eventsPageInfo"]["endCursor"].clone();
    let mut seen = page.len();
    let query = "query($after: String) { flowEvents(userId: \"bulk-user\", first: 100, \
        after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    loop {
        let body: Value = post_graphql(
            &server.graphql_url(),
            Some(&admin),
            query,
            json!({ "after": after }),
        )
        .await
        .json()
        .await
        .expect("JSON");
        let events = &body["data"]["flowEvents"];
        seen += events["edges"].as_array().expect("edges").len();
        if events["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = events["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, EVENTS, "every event of the history, once");

    // The command line streams the whole history as one JSON document.
    let mut export = command(
        &["users", "export", "bulk-user"],
        &[("DATABASE_URL", &db.url)],
    );
    let output = tokio::task::block_in_place(|| export.output().expect("the binary runs"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exported: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(exported["userId"], "bulk-user");
    assert_eq!(exported["events"].as_array().map(Vec::len), Some(EVENTS));
    assert_eq!(exported["flowStates"].as_array().map(Vec::len), Some(1));
}

async fn erasing_an_admin_anonymizes_them_as_the_actor_of_other_users_events(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let for_carol = json!({ "flow": "checklist", "step": "profile", "userId": "carol" });
    write_ok(&app, Who::Admin, "completeStep", for_carol).await;
    write_ok(
        &app,
        Who::User("carol"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    write_ok(
        &app,
        Who::Admin,
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;

    let query = "mutation($userId: String!) { deleteUserData(userId: $userId) { userId flowStates events idempotencyKeys eventsAnonymized } }";
    let erased = ok(
        gql(&app, Who::Admin, query, json!({ "userId": ADMIN })).await,
        "deleteUserData",
    );
    assert_eq!(
        erased,
        json!({ "userId": ADMIN, "flowStates": 1, "events": 1, "idempotencyKeys": 0, "eventsAnonymized": 1 })
    );
    let carols = events_of(&app, "carol", None).await;
    let actors: Vec<&Value> = carols.iter().map(|event| &event["actor"]).collect();
    assert_eq!(actors, [&json!("carol"), &json!("(erased)")]);
    let everyone = all_events(&app, Who::Admin, json!({ "userId": "carol" })).await;
    assert!(!Value::from(everyone).to_string().contains(ADMIN));
    let none = ok(
        delete_user_data(&app, Who::Admin, ADMIN).await,
        "deleteUserData",
    );
    assert_eq!(none["events"], 0);
}

on_both_backends!(
    exporting_a_long_history_costs_a_bounded_page_and_the_rest_pages_on,
    erasing_an_admin_anonymizes_them_as_the_actor_of_other_users_events,
);

/// Whether `needle` stands anywhere in the bytes of the SQLite database's
/// files (the database, its write-ahead log).
fn in_sqlite_files(url: &str, needle: &str) -> Vec<String> {
    let path = url.trim_start_matches("sqlite://");
    [path.to_owned(), format!("{path}-wal")]
        .into_iter()
        .filter(|file| {
            std::fs::read(file).is_ok_and(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_users_bytes_are_gone_from_the_sqlite_files() {
    let app = spawn_app(Backend::Sqlite).await;
    publish_checklist(&app).await;
    let (user, secret) = ("user-8d1f6a", "secret-c0ffee-4b2e");
    let who = Who::User(user);
    for (step, key) in [("profile", "key-1"), ("invite", "key-2")] {
        let args = json!({ "flow": "checklist", "step": step, "data": { "note": secret }, "idempotencyKey": key });
        write_ok(&app, who, "completeStep", args).await;
    }
    let body = gql(
        &app,
        who,
        "mutation { completeOnboarding(step: 3) { id } }",
        json!({}),
    )
    .await;
    ok(body, "completeOnboarding");
    write_ok(
        &app,
        Who::User("someone-else"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    assert!(
        !in_sqlite_files(&app.db.url, secret).is_empty(),
        "the test sees stored bytes"
    );

    ok(
        delete_user_data(&app, Who::Admin, user).await,
        "deleteUserData",
    );

    for needle in [user, secret] {
        let found = in_sqlite_files(&app.db.url, needle);
        assert!(found.is_empty(), "`{needle}` is still in {found:?}");
    }
    // The service goes on as before.
    write_ok(
        &app,
        Who::User("someone-else"),
        "completeStep",
        json!({ "flow": "checklist", "step": "profile" }),
    )
    .await;
}
