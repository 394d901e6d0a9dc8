//! `/livez`, `/readyz`, `/health` and `/metrics` for Kubernetes and Prometheus (feature `http`).
//!
//! Status codes: 200 when healthy or degraded, 503 when unhealthy. Responses carry probe reports
//! only: client configurations (and their secrets) are never part of them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::checker::{CachedHealth, HealthChecker};
use crate::error::HealthError;
use crate::model::{HealthReport, ProbeKind, Status};

/// Where the endpoints listen unless told otherwise: loopback only.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Where the endpoints get their report.
#[derive(Debug, Clone)]
pub enum HealthSource {
    /// Run the probes on each request (bounded by the probes' timeouts): `/livez` only the
    /// liveness probes, `/readyz` the liveness and readiness probes, `/health` all of them.
    OnDemand(Arc<HealthChecker>),
    /// Serve the last report of a checker running on an interval.
    Cached(CachedHealth),
}

impl HealthSource {
    /// A report that holds at least the probes of the kinds `wanted` accepts.
    async fn report(&self, wanted: fn(ProbeKind) -> bool) -> Option<Arc<HealthReport>> {
        match self {
            HealthSource::OnDemand(checker) => Some(Arc::new(checker.check_only(wanted).await)),
            HealthSource::Cached(cached) => cached.current().await,
        }
    }
}

#[derive(Clone)]
struct AppState {
    source: HealthSource,
    metrics: Option<PrometheusHandle>,
}

/// Installs a Prometheus recorder as the process's `metrics` recorder and returns the handle
/// `/metrics` renders. Fails when another recorder is installed already.
pub fn install_prometheus_recorder() -> Result<PrometheusHandle, HealthError> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| HealthError::Http(std::io::Error::other(e)))
}

/// The endpoints as an axum router (to serve alone with [`serve`] or nest in an app's router).
/// `/metrics` answers 404 without a Prometheus handle.
pub fn router(source: HealthSource, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .with_state(AppState { source, metrics })
}

/// Binds `addr` (use [`DEFAULT_ADDR`] for loopback) and serves `router` until the task is
/// dropped or the listener fails.
pub async fn serve(addr: SocketAddr, router: Router) -> Result<(), HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(HealthError::Http)?;
    serve_on(listener, router).await
}

/// Serves `router` on a listener bound already (port 0 for tests).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
) -> Result<(), HealthError> {
    axum::serve(listener, router)
        .await
        .map_err(HealthError::Http)
}

fn code(status: Status) -> StatusCode {
    match status {
        Status::Healthy | Status::Degraded => StatusCode::OK,
        Status::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn no_report() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unhealthy", "message": "the health checker is not running"})),
    )
        .into_response()
}

async fn livez(State(state): State<AppState>) -> Response {
    match state
        .source
        .report(|kind| kind == ProbeKind::Liveness)
        .await
    {
        Some(report) => (
            code(report.live),
            axum::Json(json!({"status": report.live})),
        )
            .into_response(),
        None => no_report(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state
        .source
        .report(|kind| kind != ProbeKind::Informational)
        .await
    {
        Some(report) => (
            code(report.ready),
            axum::Json(json!({"status": report.ready})),
        )
            .into_response(),
        None => no_report(),
    }
}

async fn health(State(state): State<AppState>) -> Response {
    match state.source.report(|_| true).await {
        Some(report) => (code(report.status), axum::Json(report.as_ref().clone())).into_response(),
        None => no_report(),
    }
}

async fn prometheus(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder installed").into_response(),
    }
}
