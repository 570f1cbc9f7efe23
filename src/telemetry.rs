//! Logging: one `tracing` subscriber, human-readable or JSON, always on stderr
//! so that `schema` and `token` keep stdout for their output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning.
pub fn init(filter: &str, format: LogFormat) {
    let (filter, filter_error) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
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
