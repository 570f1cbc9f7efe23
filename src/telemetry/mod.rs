//! Logging: one `tracing` subscriber, human-readable or JSON, always on stderr
//! so that `schema` and `token` keep stdout for their output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::config::LogFormat;
mod log_writer;

use log_writer::Flusher;

/// sqlx relays every Postgres NOTICE at info, such as "relation
/// `_sqlx_migrations` already exists, skipping" on each start: kept out of
/// the log unless the filter names sqlx itself.
const QUIET_POSTGRES_NOTICES: &str = "sqlx::postgres::notice=warn";

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning.
///
/// Lines are written in batches (`log_writer`); keep the returned flusher
/// until the process ends, so that the last lines are written.
pub fn init(filter: &str, format: LogFormat) -> Flusher {
    let (mut env_filter, filter_error) = match EnvFilter::try_new(filter) {
        Ok(env_filter) => (env_filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    // Only for filters that show info: under `off` or `error`, a `warn`
    // directive for sqlx would let more through, not less.
    let shows_info = env_filter
        .max_level_hint()
        .is_none_or(|level| level >= LevelFilter::INFO);
    if shows_info
        && !filter.contains("sqlx")
        && let Ok(directive) = QUIET_POSTGRES_NOTICES.parse()
    {
        env_filter = env_filter.add_directive(directive);
    }
    let (writer, flusher) = log_writer::batched_stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(writer);
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
    flusher
}
