//! The migrations under `migrations/`, embedded in the binary: `build.rs`
//! lists each backend's files in version order.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One `migrations/BACKEND/VERSION_DESCRIPTION.sql` file.
pub struct MigrationFile {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// A migrator for one backend's files. Each migration's checksum is that of
/// its SQL, as sqlx computes it, so databases migrated before keep matching.
pub fn migrator(files: &'static [MigrationFile]) -> Migrator {
    let migrations = files
        .iter()
        .map(|file| {
            Migration::new(
                file.version,
                Cow::Borrowed(file.description),
                MigrationType::Simple,
                Cow::Borrowed(file.sql),
                // sqlx's marker for statements that cannot run in a transaction.
                file.sql.starts_with("-- no-transaction"),
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}
