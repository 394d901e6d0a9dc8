//! The exporter's HTTP side (`/metrics`, `/livez`, `/readyz`) and its poll loop, both stopping
//! when the shutdown signal flips.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kafka_ops_core::Clock;
use kafka_ops_core::cluster::ClusterQuery;
use kafka_ops_health::HealthError;
use tokio::sync::watch;

use super::metrics::scrape_duration;
use super::poll::{PollPlan, poll};
use super::state::ExporterState;
use super::text::CONTENT_TYPE;

/// The exporter's state behind a lock, with the clock every instant comes from. Cheap to clone:
/// the poll loop and the HTTP handlers share one.
#[derive(Debug, Clone)]
pub struct Shared {
    state: Arc<Mutex<ExporterState>>,
    clock: Arc<dyn Clock>,
}

impl Shared {
    /// Shares `state`, read with `clock`.
    pub fn new(state: ExporterState, clock: Arc<dyn Clock>) -> Self {
        Shared {
            state: Arc::new(Mutex::new(state)),
            clock,
        }
    }

    /// The state, locked. Never held across an await; a panic while holding it leaves values
    /// that are still worth serving, so a poisoned lock is taken as it is.
    pub fn lock(&self) -> MutexGuard<'_, ExporterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One scrape of `/metrics`: every series, then how long rendering them took.
    pub fn scrape(&self) -> String {
        let started = self.clock.now();
        let mut text = {
            let mut state = self.lock();
            state.record_scrape();
            state.render(started)
        };
        text.push_str(&scrape_duration(
            self.clock.now().saturating_duration_since(started),
        ));
        text
    }
}

/// `/metrics`, `/livez` (200 while the process serves) and `/readyz` (200 once the last poll
/// succeeded, 503 before the first and after a failed one).
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        shared.scrape(),
    )
        .into_response()
}

async fn livez() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let (ready, staleness) = {
        let state = shared.lock();
        (state.is_ready(), state.staleness(shared.clock.now()))
    };
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let message = format!(
            "not ready: no successful poll for {:.1}s\n",
            staleness.as_secs_f64()
        );
        (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then finishes the requests in
/// flight and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), HealthError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(HealthError::Http)
}

/// Polls the cluster now and then every `interval` (a poll that overruns delays the next one
/// rather than bunching them up) into `shared`, until `shutdown` turns true; a poll in flight is
/// abandoned then.
pub async fn poll_loop<C: ClusterQuery + ?Sized>(
    cluster: &C,
    plan: &PollPlan,
    shared: &Shared,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let started = shared.clock.now();
        let result = tokio::select! {
            result = poll(cluster, plan, shared.clock.as_ref()) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let finished = shared.clock.now();
        shared.lock().record_poll(result, started, finished);
    }
}
