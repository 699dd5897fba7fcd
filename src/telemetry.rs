//! Logs: text for people, JSON lines for collectors. They go to stderr, which container
//! runtimes collect like stdout, so that stdout carries only command output (`inspect`).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogArgs, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid --log-level '{filter}': {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

pub fn init_logging(args: &LogArgs) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&args.log_level).map_err(|err| TelemetryError::Filter {
        filter: args.log_level.clone(),
        reason: err.to_string(),
    })?;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    installed.map_err(|err| TelemetryError::Install(err.to_string()))
}
