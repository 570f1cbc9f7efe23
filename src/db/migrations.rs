//! The migrations under `migrations/`, embedded in the binary. The lists
//! name each file, relative to this one, so that the compiler includes the
//! files of the checkout it builds and rebuilds when one changes; a test
//! checks that every file in the directories is listed.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// A migration a newer release applied that this binary cannot run with
/// says so in its name: `VERSION_..._breaking.sql`. Any other migration a
/// newer release applied only adds, so an older binary keeps working (a
/// rolling deploy, a rollback).
const BREAKING: &str = "breaking";

/// What the database has applied, next to what this binary embeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Embedded, not applied yet: `VERSION description`.
    pub pending: Vec<String>,
    /// Applied by a newer release, unknown to this binary.
    pub unknown: Vec<String>,
}

impl MigrationStatus {
    /// The status of `applied` (version, description) against `files`.
    pub fn of(files: &'static [MigrationFile], applied: &[(i64, String)]) -> Self {
        let embedded = migrator(files);
        let pending = embedded
            .iter()
            .filter(|migration| {
                !applied
                    .iter()
                    .any(|(version, _)| *version == migration.version)
            })
            .map(|migration| format!("{} {}", migration.version, migration.description))
            .collect();
        let unknown = applied
            .iter()
            .filter(|(version, _)| {
                !embedded
                    .iter()
                    .any(|migration| migration.version == *version)
            })
            .map(|(version, description)| format!("{version} {description}"))
            .collect();
        Self { pending, unknown }
    }

    /// The migrations a newer release applied that this binary cannot run with.
    pub fn incompatible(&self) -> Vec<&str> {
        self.unknown
            .iter()
            .filter(|migration| migration.ends_with(&format!(" {BREAKING}")))
            .map(String::as_str)
            .collect()
    }
}

/// One `migrations/BACKEND/VERSION_DESCRIPTION.sql` file.
pub struct MigrationFile {
    name: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($backend:literal: $($name:literal),+ $(,)?) => {
        &[$(MigrationFile {
            name: $name,
            sql: include_str!(concat!("../../migrations/", $backend, "/", $name, ".sql")),
        }),+]
    };
}

pub const SQLITE: &[MigrationFile] = migrations!("sqlite":
    "20261124000000_create_onboarding_state",
    "20261126000000_flows",
    "20261202000000_event_actor_index",
    "20261202000001_event_user_index",
    "20261203000000_group_flows",
    "20261203000001_idempotency_key_group_index",
    "20261204000000_webhooks",
);

pub const POSTGRES: &[MigrationFile] = migrations!("postgres":
    "20261124000000_create_onboarding_state",
    "20261126000000_flows",
    "20261202000000_event_actor_index",
    "20261202000001_event_user_index",
    "20261203000000_group_flows",
    "20261203000001_idempotency_key_group_index",
    "20261204000000_webhooks",
    "20261204000001_event_transaction_index",
    "20261205000000_live",
);

/// Whether sqlx's table of applied migrations exists, in each dialect.
pub const SQLITE_HAS_TABLE: &str =
    "select exists(select 1 from sqlite_master where type = 'table' and name = '_sqlx_migrations')";
pub const POSTGRES_HAS_TABLE: &str = "select to_regclass('_sqlx_migrations') is not null";
/// The migrations applied, in order.
pub const APPLIED: &str =
    "select version, description from _sqlx_migrations where success order by version";

/// A migrator for one backend's files. Each migration's version, description
/// and checksum are what sqlx's own `migrate!` gives the same file, so
/// databases migrated before keep matching.
pub fn migrator(files: &'static [MigrationFile]) -> Migrator {
    let migrations = files
        .iter()
        .map(|file| {
            let (version, description) = file.name.split_once('_').unwrap_or((file.name, ""));
            Migration::new(
                version.parse().unwrap_or_default(),
                Cow::Owned(description.replace('_', " ")),
                MigrationType::Simple,
                Cow::Borrowed(file.sql),
                // sqlx's marker for statements that cannot run in a transaction.
                file.sql.starts_with("-- no-transaction"),
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        // Migrations a newer release applied: `Db::migrate` refuses the
        // breaking ones before this runs, and logs the others.
        ignore_missing: true,
        locking: true,
        no_tx: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_version_order() {
        for (backend, embedded) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut files: Vec<String> = std::fs::read_dir(&directory)
                .expect("the migrations directory")
                .map(|entry| {
                    entry
                        .expect("an entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
                .collect();
            files.sort();
            let listed: Vec<&str> = embedded.iter().map(|file| file.name).collect();
            assert_eq!(
                listed, files,
                "list every file of migrations/{backend} in src/db/migrations.rs"
            );
            for file in embedded {
                let version = file.name.split_once('_').map(|(version, _)| version);
                assert!(
                    version.is_some_and(|version| version.parse::<i64>().is_ok()),
                    "{} must be named VERSION_DESCRIPTION.sql",
                    file.name
                );
            }
        }
    }
}
