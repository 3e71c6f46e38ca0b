//! Logging (tracing) and Prometheus metrics setup, done once at the binary's edge.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;
use tracing_subscriber::{fmt, EnvFilter};

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus recorder or listener could not be installed.
    #[error("prometheus exporter: {0}")]
    Prometheus(String),
}

/// Installs the tracing subscriber: `RUST_LOG` (default `info`) filters,
/// `DHBUS_LOG_FORMAT=json` switches to JSON lines. Logs go to stderr so stdout
/// stays machine-readable (ids, JSON).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DHBUS_LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(true);
    let res = if json { builder.json().try_init() } else { builder.try_init() };
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = res;
}

/// Installs the global Prometheus recorder without a listener (the caller
/// serves `handle.render()` itself, next to `/healthz` and `/readyz`).
pub fn install_prometheus() -> Result<PrometheusHandle, TelemetryError> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&buckets)
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))
}

/// Parses a listen address flag.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("`{s}` is not host:port: {e}"))
}
