//! # kafka-ops-recovery
//!
//! Recovery policies for Kafka consumers: the self-healing runbook as composable parts. This
//! crate will own:
//!
//! - `RetryPolicy` (retry in place, hand to a retry tier, dead-letter, skip, stop) driven by
//!   core's error classes and user rules, `Backoff` schedules on an injected clock, a shared
//!   retry budget, and a retry layer for handlers;
//! - a circuit breaker wired to the driver, pausing partitions while open;
//! - offset operations: reset (earliest, latest, datetime, offset, shift) with dry-run, export
//!   and import, and `wait_for_drain`;
//! - the self-healing engine: monitors, grace periods, recovery actions retried with the
//!   runbook's policy, escalation through notifiers, cooldowns, an audit trail and dry-run.
//!
//! Until then it re-exports the core types it builds on.
//!
//! ```
//! use kafka_ops_recovery::core::ErrorClass;
//! assert!(ErrorClass::Transient.is_retryable());
//! ```

pub use kafka_ops_core as core;
