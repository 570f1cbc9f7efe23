//! Logging: one `tracing` subscriber, human-readable or JSON, always on stderr
//! so that `schema` and `token` keep stdout for their output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// sqlx relays every Postgres NOTICE at info, such as "relation
/// `_sqlx_migrations` already exists, skipping" on each start: kept out of
/// the log unless the filter names sqlx itself.
const QUIET_POSTGRES_NOTICES: &str = "sqlx::postgres::notice=warn";

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning.
pub fn init(filter: &str, format: LogFormat) {
    let directives = if filter.contains("sqlx") {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_POSTGRES_NOTICES}")
    };
    let (filter, filter_error) = match EnvFilter::try_new(directives) {
        Ok(filter) => (filter, None),
        Err(error) => (
            EnvFilter::new(format!("info,{QUIET_POSTGRES_NOTICES}")),
            Some(error),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours for a terminal only: not as escape codes in a log file.
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    if let Some(error) = filter_error {
        tracing::warn!(%error, "RUST_LOG is not a valid filter; logging at info");
    }
}
