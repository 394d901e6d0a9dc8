//! # kafka-ops-dlq
//!
//! Dead-letter handling for Kafka consumers. This crate will own:
//!
//! - a `DeadLetterSink` trait and a Kafka sink that returns only after the broker acknowledged,
//!   and a handler layer so the driver commits a source offset only once its record is either
//!   processed or dead-lettered;
//! - topic naming (`<topic>.dlq`, Spring's `<topic>-dlt`, custom) and partition strategies;
//! - a documented, versioned provenance header set, and parsing of Spring Kafka, Kafka Connect,
//!   Kafka Streams and Karafka dead-letter headers into one model;
//! - non-blocking retry topics with delay tiers;
//! - inspect (depth, samples, error fingerprints), replay (filters, rate limit, resumable, loop
//!   guard) and purge (archive first, then delete records).
//!
//! Until then it re-exports the core types it builds on.
//!
//! ```
//! use kafka_ops_dlq::core::ErrorClass;
//! assert!(!ErrorClass::Permanent.is_retryable());
//! ```

pub use kafka_ops_core as core;
