//! # kafka-ops-core
//!
//! The small, stable base every kafka-ops crate builds on, and the one Kafka adapter under it.
//!
//! Without default features core is pure — no rdkafka, no librdkafka, no tokio runtime, no
//! libc — and holds:
//!
//! - **Value types**: [`TopicPartition`], [`Offset`] (no `-1001` sentinels: "no offset" is
//!   `Option::None`), [`Timestamp`], [`Watermarks`], and [`Record`], a record view that borrows
//!   from a consumer's message or owns its bytes.
//! - **Errors and verdicts**: one [`Error`] enum; [`ErrorClass`] (transient / permanent /
//!   fatal) with the classification of librdkafka's and Kafka's codes in [`KafkaCode`];
//!   [`Severity`] (info / warning / critical), shared by lag verdicts, health checks and
//!   recovery's notifications; [`Extent`], how much of a cluster a finding touches.
//! - **Time**: the [`Clock`] trait, with [`SystemClock`] and a [`ManualClock`] for tests.
//! - **The lag engine** ([`lag`]): offset lag with retention-loss and beyond-end flags, time lag
//!   by interpolation, Burrow's evaluation rules and the runbook thresholds, all pure.
//! - **Cluster queries** ([`cluster`]): traits for metadata, batched watermarks, committed
//!   offsets, configurations and group administration, and [`cluster::group_lag`] built on
//!   them.
//! - **Handlers** ([`handler`]): the `Handler` trait and the `Layer`s the other crates wrap it
//!   with; the [`tracker`] that decides which offsets are safe to commit; the [`scheduler`]
//!   that decides which record runs when, on an injected clock.
//! - **The retry budget's seam** ([`budget`]): the [`budget::Budget`] trait that in-place
//!   retries and retry-tier sends spend from together, so an outage cannot move the retry
//!   storm from one to the other; kafka-ops-recovery's `RetryBudget` implements it.
//! - **The dead-letter vocabulary** ([`dead_letter`]): the provenance header codec, the
//!   envelope that builds a dead letter, the sink trait and depth arithmetic, shared by the
//!   dead-letter layer and the self-healing engine so both write one format.
//!
//! The `kafka` feature (on by default) adds the adapter, module `kafka`: the cluster-query
//! client, the consumer driver on the scheduler, one acknowledged producer and one range reader
//! that every kafka-ops write and fixed-offset read goes through, the Kafka dead-letter sink and
//! librdkafka admin calls rdkafka does not wrap. rdkafka types appear only there. The `testkit`
//! feature adds test support: a real Apache Kafka cluster's handle and an embedded mock cluster.
//!
//! ## Example: judge a group's lag
//!
//! ```
//! use kafka_ops_core::lag::{GroupLag, PartitionLag};
//! use kafka_ops_core::lag::verdict::{judge, LagThresholds};
//! use kafka_ops_core::Severity;
//! use kafka_ops_core::{Offset, Timestamp, TopicPartition, Watermarks};
//!
//! let marks = |high| Some(Watermarks { low: Offset::ZERO, high: Offset::new(high).unwrap() });
//! let rows = vec![
//!     PartitionLag::compute(&TopicPartition::new("outbox_events", 0), Some(Offset::new(1_000).unwrap()), marks(9_000)),
//!     PartitionLag::compute(&TopicPartition::new("outbox_events", 1), Some(Offset::new(500).unwrap()), marks(4_000)),
//! ];
//! let lag = GroupLag::new("outbox_publisher_group", Timestamp::from_millis(0), rows);
//! assert_eq!(lag.total_lag(), 11_500);
//!
//! // The runbook: "lag > 10000 → alert".
//! let verdict = judge(&lag, &[], None, &LagThresholds::default());
//! assert_eq!(verdict.severity, Severity::Warning);
//! assert_eq!(verdict.severity.exit_code(), 1);
//! ```

pub mod budget;
mod class;
mod clock;
pub mod cluster;
pub mod dead_letter;
mod error;
mod extent;
#[cfg(feature = "kafka")]
mod ffi;
pub mod handler;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lag;
mod record;
pub mod scheduler;
mod severity;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tracker;
mod types;

pub use class::{BoxError, ErrorClass, KafkaCode};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, describe_chain};
pub use extent::Extent;
pub use record::{Header, Headers, OwnedRecord, Record, RecordTimestamp};
pub use severity::{Severity, UnknownSeverity};
pub use types::{
    InvalidOffset, IsolationLevel, ListedOffset, Offset, OffsetSpec, RAW_OFFSET_NONE, Timestamp,
    TopicPartition, Watermarks,
};
