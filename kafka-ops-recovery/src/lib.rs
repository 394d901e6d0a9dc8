//! # kafka-ops-recovery
//!
//! The self-healing runbook's recovery policies as composable parts:
//!
//! - [`BackoffPolicy`] / [`Backoff`]: constant or exponential schedules with full, equal or
//!   decorrelated jitter, a maximum delay, attempts and elapsed time, on an injected clock and a
//!   seedable random source. [`BackoffPolicy::runbook`] is runbook 002's policy (10 s, 15 s,
//!   22.5 s, then escalate).
//! - [`RetryBudget`]: retries at a floor rate plus a share of successes, shared by every worker.
//!   It implements core's [`Budget`](kafka_ops_core::budget::Budget), so the same budget also
//!   bounds `kafka-ops-dlq`'s retry-tier sends: in place or through tiers, an outage gets no
//!   more retries than the budget holds.
//! - [`RetryPolicy`]: from core's error class and user rules, retry in place, hand to a retry
//!   tier, dead-letter, skip or stop; [`RetryLayer`] applies it around a handler.
//! - [`CircuitBreaker`]: count- or time-based windows, failure-rate and slow-call thresholds,
//!   minimum calls, growing open durations, limited half-open probes, force-open and reset,
//!   state-change listeners; [`CircuitBreakerLayer`] pauses the consumer while it is open.
//!
//! Those policies need nothing but core's pure feature set: with `default-features = false`
//! this crate builds without rdkafka, an HTTP, TLS, YAML or SMTP client. The operator's side
//! comes with features:
//!
//! - `kafka`: `OffsetOps` — reset a group's offsets (earliest, latest, datetime, offset, shift)
//!   with a dry-run plan, refusing while the group has members; export and import;
//!   `wait_for_drain`.
//! - `engine` (default): `Engine`, the self-healing loop — `Monitor`s on an interval, anomalies
//!   with a grace period, `RecoveryAction`s retried on the runbook policy, escalation through
//!   `Notifier`s, cooldowns, a "too widespread" guard, a JSON-lines `AuditTrail`, dry-run and
//!   graceful shutdown — with its YAML configuration and registry, and the poison-record
//!   monitor and skip action, which dead-letter a record in core's dead-letter format so
//!   `kafka-ops-dlq` inspects and replays it. Implies `kafka`.
//! - `webhook` (default) and `smtp`: notifiers posting to a webhook (Slack-compatible JSON) or
//!   sending e-mail.
//! - `health`: `kafka-ops-health`'s probes as monitors, taking their typed reports.
//! - `backoff-adapter`: schedules from a `backoff::ExponentialBackoff` (the `backoff` crate is
//!   unmaintained, so it stays out of the default graph).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kafka_ops_core::handler::{handler_fn, Handler, HandlerBuilder};
//! use kafka_ops_core::kafka::driver::DriverHandle;
//! use kafka_ops_core::{Offset, Record};
//! use kafka_ops_core::handler::{Disposition, HandlerError, Outcome};
//! use kafka_ops_recovery::{BackoffPolicy, BreakerConfig, CircuitBreaker, CircuitBreakerLayer, RetryLayer, RetryPolicy};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! // The driver's handle exists before the driver, so the breaker can pause it.
//! let consumer = DriverHandle::new();
//! let breaker = Arc::new(CircuitBreaker::new("payments", BreakerConfig::default()).unwrap());
//! let handler = HandlerBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::new(BackoffPolicy::constant(Duration::from_millis(100), 2))))
//!     .layer(CircuitBreakerLayer::new(breaker, Arc::new(consumer.clone())))
//!     .handler(handler_fn(|_record: &Record<'_>| async {
//!         Err::<Outcome, _>(HandlerError::transient("payments API: 503"))
//!     }));
//!
//! let record = Record::new("orders", 0, Offset::ZERO);
//! let error = handler.handle(&record).await.unwrap_err();
//! // Retried twice in place, then handed to the dead-letter layer outside.
//! assert_eq!(error.attempts(), 3);
//! assert_eq!(error.disposition(), Disposition::DeadLetter);
//! # });
//! ```

#[cfg(feature = "engine")]
pub mod actions;
#[cfg(feature = "backoff-adapter")]
pub mod adapter;
#[cfg(feature = "engine")]
mod audit;
mod backoff;
mod breaker;
mod budget;
#[cfg(feature = "engine")]
mod config;
#[cfg(feature = "engine")]
mod engine;
mod error;
mod layer;
#[cfg(feature = "health")]
pub mod monitors;
#[cfg(feature = "engine")]
mod notify;
#[cfg(feature = "kafka")]
mod offsets;
#[cfg(feature = "engine")]
pub mod poison;
mod policy;

#[cfg(feature = "engine")]
pub use audit::{AuditRecord, AuditTrail};
pub use backoff::{Backoff, BackoffPolicy, Jitter};
pub use breaker::{
    BreakerConfig, BreakerState, CallOutcome, CircuitBreaker, Permit, Rejected, SlidingWindow,
    StateChange,
};
pub use budget::{RetryBudget, RetryBudgetConfig};
#[cfg(feature = "engine")]
pub use config::{
    AuditSettings, BuildContext, CheckedParams, ClusterSettings, ComponentSpec, ConfigProblems,
    Factory, PlaybookSpec, Registry, SelfHealingConfig,
};
#[cfg(feature = "engine")]
pub use engine::{
    Anomaly, Engine, EngineConfig, EngineEvent, Monitor, Playbook, RecoveryAction, Signal,
};
pub use error::{BreakerOpen, RecoveryError};
pub use layer::{Breaker, CircuitBreakerLayer, Retry, RetryLayer};
#[cfg(feature = "webhook")]
pub use notify::WebhookNotifier;
#[cfg(feature = "engine")]
pub use notify::{LogNotifier, Notification, Notifier};
#[cfg(feature = "smtp")]
pub use notify::{SmtpNotifier, SmtpSettings};
#[cfg(feature = "kafka")]
pub use offsets::{
    DrainProgress, MembershipCheck, OffsetChange, OffsetOps, OffsetsBackup, ResetPlan, ResetTarget,
    ensure_group_inactive,
};
pub use policy::{Decision, Matcher, RetryPolicy, Rule, RuleAction};
