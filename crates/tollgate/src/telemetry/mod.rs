//! Logs and metrics. Logging is set up here (text for a terminal, or one JSON object per line
//! with `LOG_FORMAT=json`); the per-request span is `http::trace`. `metrics` holds every
//! Prometheus series Tollgate exports at `/metrics`.

pub(crate) use tollgate_core::metrics;

use std::sync::atomic::{AtomicBool, Ordering};

use tollgate_core::config::LogFormat;

static JSON_LOGS: AtomicBool = AtomicBool::new(false);

pub(crate) fn init_with(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour codes only for a person at a terminal: a file or a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, Ordering::Relaxed);
            builder.json().with_current_span(true).with_span_list(false).try_init()
        }
    };
}

/// Whether every request gets a log line (JSON logs are an access log; text logs stay quiet).
pub(crate) fn access_log() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}
