//! # kafka-ops-idempotency
//!
//! "Process each event once" as a handler layer. This crate will own:
//!
//! - `KeyExtractor` with built-ins (a header, the record key, a payload or JSON-field hash, the
//!   record's coordinates, composites) and explicit handling of records without a key;
//! - the `IdempotencyStore` contract with fencing tokens and leases (`begin` → acquired /
//!   duplicate / in progress / conflict; fenced `complete` and `release`), and in-memory, redb,
//!   Redis and PostgreSQL (with an inbox for exactly-once side effects) implementations passing
//!   one conformance suite;
//! - the idempotent layer, with an offset fast path for redeliveries after a rebalance.
//!
//! Until then it re-exports the core types it builds on.
//!
//! ```
//! use kafka_ops_idempotency::core::{Offset, Record};
//! let record = Record::new("payments", 0, Offset::ZERO).with_header("event-id", b"e-1".as_slice());
//! assert_eq!(record.headers.get_str("event-id").unwrap(), Some("e-1"));
//! ```

pub use kafka_ops_core as core;
