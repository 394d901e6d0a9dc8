//! # kafka-ops-health
//!
//! The runbooks' health checks as code: "daily automated validation of cluster health", "check
//! broker status", "under-replicated partitions > 0 → investigate", "DLQ depth > 100
//! investigate, > 1000 critical", "consumer lag > 10000 alert", and "verify it's not the
//! controller" before a rolling restart.
//!
//! - [`HealthProbe`]: one check with a name and a [`ProbeKind`] (liveness / readiness /
//!   informational), reporting a [`Status`], a [`Severity`](kafka_ops_core::Severity), a message, details and its latency.
//! - [`HealthChecker`]: runs probes concurrently, each under its own timeout, combines them
//!   (worst wins; readiness failures do not fail liveness), and can run on an interval caching
//!   the last report. Every result goes to `tracing` and `metrics`.
//! - [`probes`]: broker connectivity, controller, under-replicated and offline partitions,
//!   required topics, consumer-group lag (core's lag engine), dead-letter depth, an end-to-end
//!   canary, and consumer liveness read from the driver's handle.
//! - [`hygiene`]: the maintenance review — inactive consumer groups and whether deleting them
//!   is safe, idle topics and dead-letter depth, partition leadership per broker.
//! - [`safe_to_restart`]: the rolling-restart gate, with every reason it refuses, built on
//!   [`ControlPlane`] (ZooKeeper or KRaft, and a KRaft quorum's voters from the brokers'
//!   `controller.quorum.voters`; a combined-mode quorum it cannot see is refused unless allowed).
//!
//! The probes take core's cluster-query traits and its Kafka adapter (the canary writes through
//! its acknowledged producer and reads through its range reader); dead-letter depth is core's
//! [`dead_letter_depths`](kafka_ops_core::dead_letter::dead_letter_depths), the same arithmetic
//! `kafka-ops-dlq` inspects with. Feature `http` adds `http`: `/livez`, `/readyz`, `/health` and
//! `/metrics` (axum, with a Prometheus renderer).
//!
//! ```
//! use std::sync::Arc;
//! use kafka_ops_health::{Check, HealthChecker, HealthError, HealthProbe, ProbeKind, Status};
//!
//! /// A probe of the service's own downstream.
//! struct Downstream;
//!
//! #[async_trait::async_trait]
//! impl HealthProbe for Downstream {
//!     fn name(&self) -> &str { "downstream" }
//!     fn kind(&self) -> ProbeKind { ProbeKind::Readiness }
//!     async fn check(&self) -> Result<Check, HealthError> {
//!         Ok(Check::degraded("responding slowly").with_detail("p99_ms", 850))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let report = HealthChecker::new().probe(Downstream).check().await;
//! assert_eq!(report.ready, Status::Degraded);
//! assert_eq!(report.live, Status::Healthy); // no liveness probe failed
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! # });
//! ```
//!
//! Against a cluster, the built-in probes take core's query traits, so one
//! [`KafkaCluster`](kafka_ops_core::kafka::KafkaCluster) serves them all:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kafka_ops_core::kafka::{client_config, KafkaCluster};
//! use kafka_ops_health::probes::*;
//! use kafka_ops_health::HealthChecker;
//!
//! let cluster = Arc::new(KafkaCluster::from_config(&client_config("kafka:9092"))?);
//! let report = HealthChecker::new()
//!     .probe(BrokerConnectivityProbe::new(cluster.clone()).expect_brokers(3))
//!     .probe(PartitionsProbe::new(cluster.clone()))
//!     .probe(RequiredTopicsProbe::new(cluster.clone()).topic("outbox_events"))
//!     .probe(ConsumerLagProbe::new(cluster.clone(), ["outbox_publisher_group"]))
//!     .probe(DeadLetterDepthProbe::new(cluster.clone(), DeadLetterTopics::default()))
//!     .check()
//!     .await;
//! std::process::exit(report.severity.exit_code());
//! # }
//! ```

mod checker;
mod control_plane;
mod error;
mod gate;
#[cfg(feature = "http")]
pub mod http;
pub mod hygiene;
mod model;
pub mod probes;

pub use checker::{CachedHealth, HealthChecker};
pub use control_plane::{ControlPlane, Quorum};
pub use error::HealthError;
pub use gate::{
    RestartGateOptions, RestartRefusal, RestartVerdict, evaluate, safe_to_restart,
    topic_min_insync_replicas,
};
pub use model::{Check, HealthProbe, HealthReport, ProbeKind, ProbeReport, Status};
