//! The command line: `onboarding flows publish FILE` and `flows list` for
//! operators who keep their flows in their app's repository; `users export`
//! and `users delete` for a person's data.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};

use super::{Who, export_user_data, ok, publish_checklist, read_flow, write_ok};
use crate::helpers::{Backend, TestApp, TestDatabase, command, spawn_app, spawn_app_with};
use crate::on_both_backends;

/// Runs the binary against `database_url` and waits for it to exit.
fn run(args: &[&str], database_url: &str) -> Output {
    let mut command = command(args, &[("DATABASE_URL", database_url)]);
    tokio::task::block_in_place(|| command.output().expect("the binary runs"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Everything the command said, on either stream.
fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn succeeded(output: &Output, args: &[&str]) {
    assert!(output.status.success(), "{args:?} failed: {}", said(output));
}

/// The numbers in `text`, in order.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse().ok())
        .collect()
}

/// A file of declarations, removed when dropped.
struct DeclarationFile(PathBuf);

impl DeclarationFile {
    fn new(content: &Value) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "onboarding-flows-{}-{}.json",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(content).expect("JSON"))
            .expect("write the declarations");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for DeclarationFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A migrated database of the test's own.
async fn migrated_database(backend: Backend) -> TestDatabase {
    let db = TestDatabase::create(backend).await;
    succeeded(&run(&["migrate"], &db.url), &["migrate"]);
    db
}

/// `onboarding flows publish` with `content` as the file.
fn publish_file(db: &TestDatabase, content: &Value) -> Output {
    let file = DeclarationFile::new(content);
    run(&["flows", "publish", file.path()], &db.url)
}

/// A server on `db`, started after the command line has written to it.
async fn server_on(backend: Backend, db: &TestDatabase) -> TestApp {
    let url = db.url.clone();
    spawn_app_with(backend, move |args| args.database.database_url = url).await
}

/// The line of `text` that names `key`.
fn line_of<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|line| line.contains(key))
        .unwrap_or_else(|| panic!("a line for {key} in {text}"))
}

fn checklist(titles: &[(&str, &str)]) -> Value {
    let steps: Vec<Value> = titles
        .iter()
        .map(|(key, title)| json!({ "key": key, "title": title }))
        .collect();
    json!({ "key": "checklist", "title": "Setup checklist", "steps": steps })
}

async fn flows_publish_publishes_a_file_of_declarations_and_says_what_it_did(backend: Backend) {
    let db = migrated_database(backend).await;
    let tour = json!({
        "key": "tour",
        "title": "Product tour",
        "steps": [
            { "key": "welcome", "title": "Welcome" },
            { "key": "search", "title": "Search", "optional": true },
        ],
        "reonboarding": "RESTART_ALL",
    });
    let first = checklist(&[("profile", "Profile"), ("invite", "Invite")]);

    let output = publish_file(&db, &json!([first, tour]));
    succeeded(&output, &["flows", "publish"]);
    let printed = stdout(&output);
    for key in ["checklist", "tour"] {
        let line = line_of(&printed, key);
        assert!(
            line.contains("version 1") && line.contains("published"),
            "{printed}"
        );
    }

    let output = publish_file(&db, &json!([first, tour]));
    succeeded(&output, &["flows", "publish"]);
    let printed = stdout(&output);
    for key in ["checklist", "tour"] {
        let line = line_of(&printed, key);
        assert!(
            line.contains("version 1") && line.contains("unchanged"),
            "{printed}"
        );
    }

    let second = checklist(&[
        ("profile", "Profile"),
        ("invite", "Invite"),
        ("connect", "Connect"),
    ]);
    let output = publish_file(&db, &second);
    succeeded(&output, &["flows", "publish"]);
    let line = line_of(&stdout(&output), "checklist").to_owned();
    assert!(
        line.contains("version 2") && line.contains("published"),
        "{line}"
    );

    let app = server_on(backend, &db).await;
    let flow = read_flow(&app, Who::Admin, "checklist").await;
    assert_eq!(flow["version"], 2);
    assert_eq!(super::step_keys(&flow), ["profile", "invite", "connect"]);
    assert_eq!(
        flow["versions"][0]["reonboarding"], "KEEP",
        "KEEP when left out"
    );
    let tour = read_flow(&app, Who::Admin, "tour").await;
    assert_eq!(tour["title"], "Product tour");
    assert_eq!(
        tour["steps"][1],
        json!({ "key": "search", "title": "Search", "optional": true })
    );
    assert_eq!(tour["steps"][0]["optional"], false, "false when left out");
    assert_eq!(tour["versions"][0]["reonboarding"], "RESTART_ALL");
}

async fn a_bad_declaration_in_the_file_publishes_nothing_and_names_the_problem(backend: Backend) {
    let db = migrated_database(backend).await;
    let good = json!({ "key": "tour", "title": "Product tour", "steps": [{ "key": "welcome", "title": "Welcome" }] });
    let duplicate = checklist(&[("profile", "Profile"), ("twice", "A"), ("twice", "B")]);

    let output = publish_file(&db, &json!([good, duplicate]));

    assert!(!output.status.success(), "{}", said(&output));
    assert!(
        said(&output).contains("twice"),
        "names the duplicate key: {}",
        said(&output)
    );
    for bad in [
        json!({ "key": "Bad Key", "title": "T", "steps": [{ "key": "a", "title": "A" }] }),
        json!({ "key": "empty", "title": "T", "steps": [] }),
        json!([good, { "key": "x", "title": "T", "steps": [{ "key": "a", "title": "A" }], "reonboarding": "SOMETIMES" }]),
    ] {
        let output = publish_file(&db, &bad);
        assert!(
            !output.status.success(),
            "{bad} is refused: {}",
            said(&output)
        );
    }
    let file = DeclarationFile(std::env::temp_dir().join(format!(
        "onboarding-flows-{}-not-json.json",
        std::process::id()
    )));
    std::fs::write(&file.0, "{ this is not JSON").expect("write");
    let output = run(&["flows", "publish", file.path()], &db.url);
    assert!(!output.status.success(), "{}", said(&output));

    let list = run(&["flows", "list"], &db.url);
    succeeded(&list, &["flows", "list"]);
    assert!(
        !stdout(&list).contains("tour"),
        "nothing was published: {}",
        stdout(&list)
    );
    let app = server_on(backend, &db).await;
    assert_eq!(read_flow(&app, Who::Admin, "tour").await, Value::Null);
}

async fn a_declaration_over_64_kib_in_the_file_is_refused(backend: Backend) {
    let db = migrated_database(backend).await;
    let steps: Vec<Value> = (0..100)
        .map(|i| json!({ "key": format!("s{i}"), "title": "t".repeat(700) }))
        .collect();
    let huge = json!({ "key": "huge", "title": "Huge", "steps": steps });
    assert!(serde_json::to_string(&huge).expect("JSON").len() > 64 * 1024);

    let output = publish_file(&db, &huge);

    assert!(!output.status.success(), "{}", said(&output));
    let app = server_on(backend, &db).await;
    assert_eq!(read_flow(&app, Who::Admin, "huge").await, Value::Null);
}

async fn flows_list_prints_each_flow_with_its_version_title_and_number_of_steps(backend: Backend) {
    let db = migrated_database(backend).await;
    let first = checklist(&[("profile", "Profile"), ("invite", "Invite")]);
    let second = checklist(&[
        ("profile", "Profile"),
        ("invite", "Invite"),
        ("connect", "Connect"),
        ("billing", "Billing"),
        ("launch", "Launch"),
    ]);
    let tour = json!({
        "key": "tour",
        "title": "Product tour",
        "steps": [{ "key": "welcome", "title": "Welcome" }, { "key": "search", "title": "Search" }, { "key": "share", "title": "Share" }],
    });
    let hello =
        json!({ "key": "hello", "title": "Hello", "steps": [{ "key": "wave", "title": "Wave" }] });
    succeeded(
        &publish_file(&db, &json!([first, tour, hello])),
        &["flows", "publish"],
    );
    succeeded(&publish_file(&db, &second), &["flows", "publish"]);

    let output = run(&["flows", "list"], &db.url);

    succeeded(&output, &["flows", "list"]);
    let printed = stdout(&output);
    let line = line_of(&printed, "checklist");
    assert!(line.contains("Setup checklist"), "{printed}");
    let numbers = numbers_in(line);
    assert!(
        numbers.contains(&2) && numbers.contains(&5),
        "version 2, 5 steps: {line}"
    );
    let line = line_of(&printed, "tour");
    assert!(line.contains("Product tour"), "{printed}");
    let numbers = numbers_in(line);
    assert!(
        numbers.contains(&1) && numbers.contains(&3),
        "version 1, 3 steps: {line}"
    );
    // In columns lined up with spaces, as a person reads them and the README shows them.
    assert_eq!(
        printed,
        "checklist   version 2   5 steps   Setup checklist\n\
         hello       version 1   1 step    Hello\n\
         tour        version 1   3 steps   Product tour\n"
    );
}

async fn users_export_prints_the_users_data_as_json(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    write_ok(
        &app,
        Who::User("alice"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    write_ok(
        &app,
        Who::User("alice"),
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "data": { "role": "developer" } }),
    )
    .await;
    write_ok(
        &app,
        Who::User("bob"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;

    let output = run(&["users", "export", "alice"], &app.db.url);

    succeeded(&output, &["users", "export"]);
    let export: Value = serde_json::from_str(&stdout(&output)).expect("the export is JSON");
    assert_eq!(export["userId"], "alice");
    assert_eq!(
        export["flowStates"].as_array().expect("flowStates").len(),
        1,
        "{export}"
    );
    assert_eq!(
        export["events"].as_array().expect("events").len(),
        2,
        "{export}"
    );
    assert!(
        export.to_string().contains("developer"),
        "the step data is in the export: {export}"
    );

    let output = run(&["users", "export", "never-seen"], &app.db.url);
    succeeded(&output, &["users", "export"]);
    let export: Value = serde_json::from_str(&stdout(&output)).expect("the export is JSON");
    assert_eq!(export["flowStates"], json!([]));
    assert_eq!(export["events"], json!([]));
}

async fn users_delete_erases_the_user_and_prints_the_counts(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_checklist(&app).await;
    let alice = Who::User("alice");
    write_ok(&app, alice, "startFlow", json!({ "flow": "checklist" })).await;
    write_ok(
        &app,
        alice,
        "completeStep",
        json!({ "flow": "checklist", "step": "profile", "idempotencyKey": "request-1" }),
    )
    .await;
    write_ok(
        &app,
        alice,
        "skipStep",
        json!({ "flow": "checklist", "step": "invite" }),
    )
    .await;
    super::gql(
        &app,
        alice,
        "mutation { completeOnboarding(step: 4) { id } }",
        json!({}),
    )
    .await;
    super::gql(
        &app,
        alice,
        "mutation { setOnboardingStep(step: 6) { id } }",
        json!({}),
    )
    .await;
    write_ok(
        &app,
        Who::User("bob"),
        "startFlow",
        json!({ "flow": "checklist" }),
    )
    .await;
    let bob_before = ok(
        export_user_data(&app, Who::Admin, "bob").await,
        "exportUserData",
    );

    let output = run(&["users", "delete", "alice"], &app.db.url);

    succeeded(&output, &["users", "delete"]);
    let numbers = numbers_in(&stdout(&output));
    for (count, what) in [(2, "flow states"), (5, "events"), (1, "idempotency keys")] {
        assert!(
            numbers.contains(&count),
            "{count} {what}: {}",
            said(&output)
        );
    }
    let export = run(&["users", "export", "alice"], &app.db.url);
    let export: Value = serde_json::from_str(&stdout(&export)).expect("the export is JSON");
    assert_eq!(
        (&export["flowStates"], &export["events"]),
        (&json!([]), &json!([]))
    );
    let export = ok(
        export_user_data(&app, Who::Admin, "alice").await,
        "exportUserData",
    );
    assert_eq!(
        export,
        json!({ "userId": "alice", "flowStates": [], "events": [] })
    );
    assert_eq!(app.db.count_rows("alice").await, 0);
    let bob_after = ok(
        export_user_data(&app, Who::Admin, "bob").await,
        "exportUserData",
    );
    assert_eq!(bob_after, bob_before, "other users' data is untouched");

    let again = run(&["users", "delete", "alice"], &app.db.url);
    succeeded(&again, &["users", "delete"]);
    let numbers = numbers_in(&stdout(&again));
    assert!(
        !numbers.is_empty() && numbers.iter().all(|n| *n == 0),
        "0 rows the second time: {}",
        said(&again)
    );
}

on_both_backends!(
    flows_publish_publishes_a_file_of_declarations_and_says_what_it_did,
    a_bad_declaration_in_the_file_publishes_nothing_and_names_the_problem,
    a_declaration_over_64_kib_in_the_file_is_refused,
    flows_list_prints_each_flow_with_its_version_title_and_number_of_steps,
    users_export_prints_the_users_data_as_json,
    users_delete_erases_the_user_and_prints_the_counts,
);
