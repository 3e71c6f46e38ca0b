//! The operator HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::readiness::Readiness;

/// Errors of the HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address from `--metrics-listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("metrics endpoint failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
struct AppState {
    prometheus: PrometheusHandle,
    readiness: Readiness,
}

/// Serves the endpoint on `addr` until `shutdown` is cancelled. Returns the
/// bound address once listening (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), HttpError>>), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { prometheus, readiness });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(HttpError::Serve)
    });
    tracing::info!(%bound, "metrics and health endpoint listening");
    Ok((bound, task))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.prometheus.render())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let (ready, deps) = s.readiness.report();
    let body = serde_json::json!({ "ready": ready, "dependencies": deps }).to_string();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}
