//! Logging with `tracing`: `OPENCHAT_LOG` filter, `OPENCHAT_LOG_FORMAT=text|json`, to stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Libraries that log message payloads, headers or statements at debug/trace level (a
/// WebSocket frame carries ciphertext, a request carries a bearer token): capped at `info`
/// whatever `OPENCHAT_LOG` says, so logs never hold content or secrets (E2EE.md §3 rule 6;
/// `tests/e2ee_api.rs` greps a trace-level log for every secret it used).
pub const PAYLOAD_LOGGING_TARGETS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
    "tokio_postgres",
    "postgres_protocol",
    "rusqlite",
    "str0m",
    "multer",
    "reqwest",
];

/// The filter with the payload-logging libraries capped at `info`.
pub fn capped_filter(filter: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in PAYLOAD_LOGGING_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber. The filter was validated with the configuration.
pub fn init(filter: &str, format: LogFormat) {
    let filter = capped_filter(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        // Each line carries its spans (request, realtime or rtc session, storage job) with
        // their fields, so lines of one request or socket can be found together.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    if installed.is_err() {
        eprintln!("openchatd: a tracing subscriber was already installed");
    }
}
