//! # kafka-ops-health
//!
//! Health checks for Kafka consumers and clusters, the runbooks' daily checks as code. This crate
//! will own:
//!
//! - the `HealthProbe` trait (liveness / readiness / informational probes reporting status,
//!   severity, message, details and latency);
//! - a checker that runs probes concurrently, each under its own timeout, and aggregates them;
//! - built-in probes: broker connectivity, controller presence, under-replicated and offline
//!   partitions, required topics, consumer-group lag (core's lag engine), dead-letter depth, an
//!   end-to-end canary, and consumer liveness from the driver's handle;
//! - `safe_to_restart(broker)`, the maintenance runbook's rolling-restart gate;
//! - `/livez`, `/readyz`, `/health` and `/metrics` HTTP endpoints (feature-gated).
//!
//! Until then it re-exports the core types probes are built from.
//!
//! ```
//! use kafka_ops_health::core::lag::verdict::Severity;
//! assert!(Severity::Critical > Severity::Warning);
//! ```

pub use kafka_ops_core as core;
