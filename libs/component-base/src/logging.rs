//! Structured logging for every binary: `RUST_LOG` filters, `--log-format json|text`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. A second call (tests start several servers) is a no-op.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
