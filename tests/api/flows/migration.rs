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
    let directory = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(directory);
    let kept = tempdir::Kept::new();
    let first = "20261124000000_create_onboarding_state.sql";
    std::fs::copy(source.join(first), kept.path().join(first)).expect("copy the first migration");
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

on_both_backends!(rows_of_the_earlier_release_are_states_of_the_onboarding_flow);

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
