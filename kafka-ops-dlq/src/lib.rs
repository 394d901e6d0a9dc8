//! # kafka-ops-dlq
//!
//! Dead-letter handling for Kafka consumers: a record is either processed or dead-lettered,
//! never lost. The dead-letter format itself — the provenance header codec, the
//! [`Envelope`](kafka_ops_core::dead_letter::Envelope) that builds a dead letter, the
//! [`DeadLetterSink`](kafka_ops_core::dead_letter::DeadLetterSink) trait — lives in
//! [`kafka_ops_core::dead_letter`], so the self-healing engine writes the same records this crate
//! inspects and replays; every write and fixed-offset read goes through core's Kafka adapter
//! (its acknowledged producer and range reader).
//!
//! - [`DeadLetterLayer`] wraps a core handler: what it gives up on (a failure marked
//!   [`DeadLetter`](kafka_ops_core::handler::Disposition::DeadLetter), or an undecided permanent
//!   one) is written through a sink, and only after the sink acknowledged it does the record end
//!   as [`DeadLettered`](kafka_ops_core::handler::Outcome::DeadLettered) so the driver commits
//!   past it. A failed write leaves the record uncommitted and brings it back. Records over the
//!   producer's limit lose their cause chain, then their value is truncated (size and digest
//!   recorded), and a record that still cannot fit stops the consumer rather than vanish.
//! - A [`limit::DeadLetterLimit`] on the layer bounds, per partition, the share of dead letters
//!   over a sliding window and the number in a row: a consumer whose every record fails is
//!   emptying its topic, not handling errors, so past the limit the layer stops the consumer
//!   with [`DlqError::LimitReached`] instead of routing, its committed offset right after the
//!   last record routed.
//! - [`RetryTopicLayer`] (inside the dead-letter layer) gives transient failures non-blocking
//!   retries in delay tiers ([`RetryTiers`]): each tier record waits, its partition held by the
//!   driver, until it is due; after the last tier it is dead-lettered under its original
//!   coordinates. Given the retry budget the in-place retries spend from (core's
//!   [`Budget`](kafka_ops_core::budget::Budget)), each tier send takes a retry from it too, and
//!   once it is spent failures go straight to the dead-letter topic, or wait with the consumer
//!   paused ([`WhenBudgetSpent`]): an outage cannot flood the tiers.
//! - [`inspect::inspect`] reports a dead-letter topic's depth per partition, a sample, and its
//!   records grouped by error class and a normalized message fingerprint ("identify the error
//!   pattern"); it reads the provenance written by kafka-ops, Spring Kafka, Kafka Connect, Kafka
//!   Streams and Karafka.
//! - [`Replay`] copies selected dead letters back (by original topic, class, fingerprint, time,
//!   header; to allow-listed destinations; rate-limited; with lineage and a loop guard), and
//!   resumes after a crash writing each record exactly once.
//! - [`purge`] archives a topic to JSON lines and deletes exactly what it archived, after the
//!   topic is named again.
//!
//! ```
//! use kafka_ops_core::{ErrorClass, Offset, Record};
//! use kafka_ops_core::handler::HandlerError;
//! use kafka_ops_core::dead_letter::{Envelope, headers};
//!
//! let record = Record::new("orders", 2, Offset::new(41).unwrap()).with_value(b"{\"amount\":\"x\"}".to_vec());
//! let error = HandlerError::permanent(std::io::Error::other("amount is not a number"));
//! let letter = Envelope::new("billing", "billing-1").build(&record, &error, Some(4)).unwrap();
//! assert_eq!((letter.topic.as_str(), letter.partition), ("orders.dlq", Some(2)));
//!
//! let info = headers::parse(&letter.headers);
//! assert_eq!(info.original_offset, Some(41));
//! assert_eq!(info.error_class, Some(ErrorClass::Permanent));
//! assert_eq!(info.error_message.as_deref(), Some("amount is not a number"));
//! ```

mod error;
pub mod inspect;
mod layer;
pub mod limit;
pub mod purge;
pub mod rate;
mod replay;
mod retry;
#[cfg(test)]
mod test_support;

pub use error::DlqError;
pub use layer::{DeadLetterLayer, DeadLettering};
pub use replay::{
    Candidate, Destination, HeaderMatch, ProgressFn, Replay, ReplayProgress, ReplayReport,
    Selection,
};
pub use retry::{
    NotDue, RetryGuard, RetryTiers, RetryTopicLayer, RetryTopics, TierNaming, WhenBudgetSpent,
};
