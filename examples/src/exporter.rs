//! The lag exporter behind `kafka-ops exporter`: a long-running process that polls consumer-group
//! lag and dead-letter depth on an interval and serves them to Prometheus.
//!
//! It lives with the reference apps, not in `kafka-ops-health`: the libraries report through the
//! `metrics` facade and leave the exporter to the app, and this one's series are a snapshot of the
//! cluster that must forget a group the moment the cluster does, which a process-wide registry
//! never does. So the pieces are:
//!
//! - [`PollPlan`] and [`poll`]: one pass over the cluster with core's lag collection, each group
//!   with its own result, plus core's dead-letter depths;
//! - [`ExporterState`]: what is kept between polls, pure and clock-driven: per group core's
//!   [`LagMonitor`](kafka_ops_core::lag::monitor::LagMonitor) (its commit windows and time-lag
//!   tables are capped per partition, partitions and groups that disappear are dropped), the last
//!   judged snapshot, staleness and readiness; [`ExporterState::render`] writes it in the
//!   Prometheus text format;
//! - [`router`], [`serve`] and [`poll_loop`]: the HTTP endpoints and the interval loop, sharing a
//!   [`Shared`] state and stopping together on a shutdown signal.
//!
//! ```
//! use std::sync::Arc;
//! use kafka_ops_core::lag::monitor::LagMonitorConfig;
//! use kafka_ops_core::{Clock, ManualClock};
//! use kafka_ops_examples::exporter::{ExporterState, Shared};
//!
//! let clock = ManualClock::new();
//! let state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
//! let shared = Shared::new(state, Arc::new(clock.clone()));
//! clock.advance(std::time::Duration::from_secs(5));
//! // No poll has succeeded yet: not ready, and the values are as old as the process.
//! assert!(!shared.lock().is_ready());
//! assert!(shared.scrape().contains("\nkafka_ops_exporter_staleness_seconds 5\n"));
//! ```

mod metrics;
mod poll;
mod server;
mod state;
mod text;

pub use poll::{PollPlan, poll};
pub use server::{Shared, poll_loop, router, serve};
pub use state::{ExporterState, PollReport};

#[cfg(test)]
mod tests;
