//! Deploys: migrations as a step of their own (`migrate --check`,
//! `serve --no-migrate`), and an older binary on a database a newer release
//! migrated, as in a rolling deploy or a rollback.

use std::process::Output;

use crate::helpers::{Backend, ServerProcess, TestDatabase, command};
use crate::on_both_backends;

fn run(args: &[&str], database_url: &str) -> Output {
    let mut command = command(args, &[("DATABASE_URL", database_url)]);
    tokio::task::block_in_place(|| command.output().expect("the binary runs"))
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Records a migration of a newer release in the database, as sqlx does.
async fn newer_release_applied(db: &TestDatabase, description: &str) {
    let checksum = match db.backend {
        Backend::Sqlite => "x'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    db.execute(&format!(
        "insert into _sqlx_migrations (version, description, success, checksum, execution_time) \
         values (29991231000000, '{description}', true, {checksum}, 0)"
    ))
    .await
    .expect("a newer release's migration");
}

async fn migrate_check_lists_pending_migrations_and_fails_until_they_are_applied(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let check = run(&["migrate", "--check"], &db.url);
    assert!(!check.status.success(), "{}", said(&check));
    assert!(
        said(&check).contains("pending: 20261124000000"),
        "{}",
        said(&check)
    );

    let migrate = run(&["migrate"], &db.url);
    assert!(migrate.status.success(), "{}", said(&migrate));
    let check = run(&["migrate", "--check"], &db.url);
    assert!(check.status.success(), "{}", said(&check));
    assert!(!said(&check).contains("pending"), "{}", said(&check));
}

async fn serve_no_migrate_starts_only_on_a_migrated_database(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let mut serve = command(
        &["serve"],
        &[
            ("DATABASE_URL", &db.url),
            ("NO_MIGRATE", "true"),
            ("JWT_SECRET", crate::helpers::SECRET),
            ("LISTEN_ADDR", "127.0.0.1:0"),
        ],
    );
    let refused = tokio::task::block_in_place(|| serve.output().expect("the binary runs"));
    assert!(!refused.status.success());
    let message = said(&refused);
    assert!(
        message.contains("onboarding migrate") && message.contains("20261124000000"),
        "{message}"
    );

    assert!(run(&["migrate"], &db.url).status.success());
    let server = ServerProcess::start(&db.url, &[("NO_MIGRATE", "true")]).await;
    let ready = reqwest::get(format!("{}/readyz", server.address))
        .await
        .expect("an answer");
    assert_eq!(ready.status(), 200);
}

async fn an_older_binary_runs_on_a_database_a_newer_release_added_to(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    assert!(run(&["migrate"], &db.url).status.success());
    newer_release_applied(&db, "add column nickname").await;

    let check = run(&["migrate", "--check"], &db.url);
    assert!(check.status.success(), "{}", said(&check));
    assert!(
        said(&check).contains("applied by a newer release: 29991231000000 add column nickname"),
        "{}",
        said(&check)
    );
    let server = ServerProcess::start(&db.url, &[]).await;
    let warned = server
        .all_logged("the database has migrations of a newer release")
        .into_iter()
        .next()
        .expect("a warning naming the newer migrations");
    assert!(warned.to_string().contains("29991231000000"), "{warned}");
}

async fn an_older_binary_refuses_a_database_a_newer_release_broke_for_it(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    assert!(run(&["migrate"], &db.url).status.success());
    newer_release_applied(&db, "drop column current step breaking").await;

    let migrate = run(&["migrate"], &db.url);
    assert!(!migrate.status.success());
    let message = said(&migrate);
    assert!(
        message.contains("cannot run with") && message.contains("29991231000000"),
        "{message}"
    );
    let check = run(&["migrate", "--check"], &db.url);
    assert!(!check.status.success(), "{}", said(&check));
}

/// Replicas started together on a new database: one applies the
/// migrations, the others wait for it, and all of them serve.
async fn replicas_started_together_on_a_new_database_all_start(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let replicas =
        futures_util::future::join_all((0..3).map(|_| ServerProcess::start(&db.url, &[]))).await;
    for replica in &replicas {
        let ready = reqwest::get(format!("{}/readyz", replica.address))
            .await
            .expect("the replica answers");
        assert_eq!(ready.status(), 200);
    }
}

on_both_backends!(
    migrate_check_lists_pending_migrations_and_fails_until_they_are_applied,
    serve_no_migrate_starts_only_on_a_migrated_database,
    an_older_binary_runs_on_a_database_a_newer_release_added_to,
    an_older_binary_refuses_a_database_a_newer_release_broke_for_it,
    replicas_started_together_on_a_new_database_all_start,
);
