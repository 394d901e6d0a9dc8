//! The dead-letter vocabulary every kafka-ops crate writes and reads.
//!
//! A record a consumer gives up on — the dead-letter layer of `kafka-ops-dlq`, or the
//! self-healing engine skipping a poison record in `kafka-ops-recovery` — is written as a
//! [`DeadLetter`] built by an [`Envelope`]: the source key, value bytes, headers and timestamp,
//! plus the versioned `kafka-ops.dlt.*` provenance set of [`headers`]. Whoever wrote it,
//! [`headers::parse`] reads it back (and the sets Spring Kafka, Kafka Connect, Kafka Streams and
//! Karafka write), so one inspect and one replay serve them all. A [`DeadLetterSink`] stores
//! them; the Kafka one is `kafka::KafkaDeadLetterSink` (feature `kafka`).
//!
//! ```
//! use kafka_ops_core::dead_letter::{Envelope, headers};
//! use kafka_ops_core::handler::HandlerError;
//! use kafka_ops_core::{ErrorClass, Offset, Record};
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

mod depth;
mod envelope;
pub mod headers;
pub mod retry;
mod sink;

pub use depth::{PartitionDepth, TopicDepth, dead_letter_depths};
pub use envelope::{CausePolicy, DeadLetter, Envelope, PartitionStrategy, TopicNaming};
pub use sink::{DeadLetterSink, Delivered};
