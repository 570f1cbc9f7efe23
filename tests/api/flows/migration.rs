//! Rows written by the release before flows are states of the built-in flow
//! `onboarding` once the flows migration has run: a database filled through
//! the earlier migrations, then served by this release.

use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::{ConnectOptions, Connection};

use super::{Who, gql};
use crate::helpers::{Backend, TestDatabase, spawn_app_with};
use crate::on_both_backends;

/// The migrations of the release before flows: the first file of the backend.
async fn earlier_migrations(backend: Backend) -> (Migrator, tempdir::Kept) {
    migrations_before(backend, "20261126000000").await
}

/// The migrations of the backend older than `version`, as an earlier release
/// applied them.
async fn migrations_before(backend: Backend, version: &str) -> (Migrator, tempdir::Kept) {
    let directory = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(directory);
    let kept = tempdir::Kept::new();
    for entry in std::fs::read_dir(&source).expect("the migrations") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_str().expect("a UTF-8 name");
        if name < version {
            std::fs::copy(source.join(name), kept.path().join(name)).expect("copy a migration");
        }
    }
    let migrator = Migrator::new(kept.path().to_owned())
        .await
        .expect("the earlier migrations");
    (migrator, kept)
}

/// The states the earlier release wrote: completed at step 3, midway at 2,
/// and untouched.
const INSERT: &str = "insert into onboarding_state \
     (user_id, is_completed, current_step, completed_at, created_at, updated_at) \
     values ($1, $2, $3, $4, $5, $5)";

async fn fill_as_the_earlier_release(db: &TestDatabase, completed_at: DateTime<Utc>) {
    let (migrator, _kept) = earlier_migrations(db.backend).await;
    let rows = [
        ("done", true, 3, Some(completed_at)),
        ("midway", false, 2, None),
        ("fresh", false, 0, None),
    ];
    match db.backend {
        Backend::Sqlite => {
            let mut connection = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
                .expect("a SQLite URL")
                .create_if_missing(true)
                .connect()
                .await
                .expect("the SQLite file");
            migrator.run(&mut connection).await.expect("migrated");
            for (user, completed, step, at) in rows {
                sqlx::query(INSERT)
                    .bind(user)
                    .bind(completed)
                    .bind(step)
                    .bind(at)
                    .bind(completed_at)
                    .execute(&mut connection)
                    .await
                    .expect("a row");
            }
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&db.url)
                .await
                .expect("Postgres");
            migrator.run(&mut connection).await.expect("migrated");
            for (user, completed, step, at) in rows {
                sqlx::query(INSERT)
                    .bind(user)
                    .bind(completed)
                    .bind(step)
                    .bind(at)
                    .bind(completed_at)
                    .execute(&mut connection)
                    .await
                    .expect("a row");
            }
        }
    }
}

async fn rows_of_the_earlier_release_are_states_of_the_onboarding_flow(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let completed_at = Utc::now().trunc_subsecs(6) - chrono::TimeDelta::days(30);
    fill_as_the_earlier_release(&db, completed_at).await;
    let url = db.url.clone();
    let app = spawn_app_with(backend, |args| args.database.database_url = url).await;

    let read = async |user: &str| {
        let query = "query($user: String) { \
            flowState(flow: \"onboarding\", userId: $user) { status currentStepIndex completedAt revision totalSteps } \
            onboardingState(userId: $user) { isCompleted currentStep completedAt } }";
        let body = gql(&app, Who::Admin, query, json!({ "user": user })).await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"].clone()
    };
    let done = read("done").await;
    assert_eq!(done["flowState"]["status"], "COMPLETED");
    assert_eq!(done["flowState"]["currentStepIndex"], 3);
    assert_eq!(done["flowState"]["revision"], 0);
    assert_eq!(done["flowState"]["totalSteps"], 0);
    assert_eq!(
        done["flowState"]["completedAt"],
        done["onboardingState"]["completedAt"]
    );
    assert_eq!(
        done["onboardingState"],
        json!({ "isCompleted": true, "currentStep": 3, "completedAt": done["flowState"]["completedAt"] })
    );
    let midway = read("midway").await;
    assert_eq!(midway["flowState"]["status"], "IN_PROGRESS");
    assert_eq!(midway["flowState"]["currentStepIndex"], 2);
    assert_eq!(read("fresh").await["flowState"]["status"], "NOT_STARTED");

    // The original API goes on writing the same rows, now as flow writes.
    let body = gql(
        &app,
        Who::Admin,
        "mutation { completeOnboarding(step: 4, userId: \"midway\") { isCompleted currentStep } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["completeOnboarding"],
        json!({ "isCompleted": true, "currentStep": 4 })
    );
    let midway = read("midway").await;
    assert_eq!(midway["flowState"]["status"], "COMPLETED");
    assert_eq!(midway["flowState"]["revision"], 1);
}

/// What the release before team flows wrote: a published flow, a user's
/// state in it with an event, and an idempotency key (made at `$1`).
const WRITTEN_BEFORE_GROUPS: [&str; 4] = [
    "insert into flow_version (flow, version, title, steps, reonboarding, published_at) \
     values ('tour', 1, 'Tour', '[{\"key\":\"welcome\",\"title\":\"Welcome\",\"optional\":false}]', \
     'KEEP', '2026-12-01T10:00:00Z')",
    "insert into flow_state (user_id, flow, version, status, current_step, steps, started_at, \
     revision, created_at, updated_at) values ('ann', 'tour', 1, 'IN_PROGRESS', 0, '{}', \
     '2026-12-01T11:00:00Z', 1, '2026-12-01T11:00:00Z', '2026-12-01T11:00:00Z')",
    "insert into flow_event (user_id, flow, version, type, actor, at) \
     values ('ann', 'tour', 1, 'FLOW_STARTED', 'ann', '2026-12-01T11:00:00Z')",
    "insert into idempotency_key (user_id, key, request, response, created_at) \
     values ('ann', 'old-key', 'r', '{}', $1)",
];

async fn a_database_written_before_team_flows_keeps_working_every_flow_user(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let (migrator, _kept) = migrations_before(backend, "20261203000000").await;
    match backend {
        Backend::Sqlite => {
            let mut connection = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
                .expect("a SQLite URL")
                .create_if_missing(true)
                .connect()
                .await
                .expect("the SQLite file");
            migrator.run(&mut connection).await.expect("migrated");
            for statement in WRITTEN_BEFORE_GROUPS {
                let query = sqlx::query(statement);
                let query = if statement.contains("$1") {
                    query.bind(Utc::now())
                } else {
                    query
                };
                query.execute(&mut connection).await.expect("a row");
            }
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&db.url)
                .await
                .expect("Postgres");
            migrator.run(&mut connection).await.expect("migrated");
            for statement in WRITTEN_BEFORE_GROUPS {
                let query = sqlx::query(statement);
                let query = if statement.contains("$1") {
                    query.bind(Utc::now())
                } else {
                    query
                };
                query.execute(&mut connection).await.expect("a row");
            }
        }
    }
    let url = db.url.clone();
    let app = spawn_app_with(backend, |args| args.database.database_url = url).await;
    let body = gql(
        &app,
        Who::Admin,
        "{ flow(key: \"tour\") { scope version } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["flow"],
        json!({ "scope": "USER", "version": 1 }),
        "{body}"
    );
    let ann = Who::User("ann");
    let query = "mutation { completeStep(flow: \"tour\", step: \"welcome\") { \
        revision status groupId steps { title optional } } }";
    let body = gql(&app, ann, query, json!({})).await;
    assert_eq!(
        body["data"]["completeStep"],
        json!({ "revision": 2, "status": "COMPLETED", "groupId": null,
                "steps": [{ "title": "Welcome", "optional": false }] }),
        "{body}"
    );
    let query = "{ flowEvents(flow: \"tour\") { edges { node { type userId groupId } } } }";
    let body = gql(&app, ann, query, json!({})).await;
    let edges = body["data"]["flowEvents"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert_eq!(edges.len(), 3, "{body}");
    assert!(
        edges
            .iter()
            .all(|edge| edge["node"]["userId"] == "ann" && edge["node"]["groupId"].is_null())
    );
    // Erasing the user still finds every row, the old key included.
    let query =
        "mutation { deleteUserData(userId: \"ann\") { flowStates events idempotencyKeys } }";
    let body = gql(&app, Who::Admin, query, json!({})).await;
    assert_eq!(
        body["data"]["deleteUserData"],
        json!({ "flowStates": 1, "events": 3, "idempotencyKeys": 1 }),
        "{body}"
    );
}

on_both_backends!(
    rows_of_the_earlier_release_are_states_of_the_onboarding_flow,
    a_database_written_before_team_flows_keeps_working_every_flow_user,
);

/// A directory removed when dropped.
mod tempdir {
    pub struct Kept(std::path::PathBuf);

    impl Kept {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "onboarding-earlier-migrations-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_nanos())
            ));
            std::fs::create_dir_all(&path).expect("a temp dir");
            Self(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Kept {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
