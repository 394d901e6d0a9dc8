//! # kafka-ops-idempotency
//!
//! "Process each event once" as a layer. Kafka redelivers after every rebalance, crash and
//! replay; this crate skips what was already done:
//!
//! - [`keys`]: where a record's key comes from (a header, the record key, a payload hash, a
//!   JSON field, the coordinates, a composite) and what happens when it is missing; keys are
//!   namespaced so services sharing a store do not collide.
//! - [`IdempotencyStore`](store::IdempotencyStore): `begin` → acquired with a fencing token | duplicate with the stored
//!   outcome | in progress until T | conflict (same key, different payload); `complete` and
//!   `release` succeed only for the current token, so a holder whose lease expired cannot
//!   overwrite its successor. Stores, in [`store`]: `memory` (always), `redb` (feature `redb`),
//!   `redis` (feature `redis`), `postgres` with an inbox (feature `postgres`); all pass one
//!   conformance suite (feature `testkit`). All take any key: one no backend can hold as it is
//!   (a NUL byte, more than [`MAX_KEY_BYTES`](store::MAX_KEY_BYTES) bytes) is held under a
//!   bounded form with the xxh3-128 digest of the whole key
//!   ([`storage_key`](store::storage_key)), the same in every store, and others as they are.
//!   All cut long leases and TTLs alike (to [`MAX_DURATION`](store::MAX_DURATION)).
//! - [`IdempotencyLayer`]: extract key → per-partition offset fast path → begin → handler →
//!   complete or release.
//!
//! The crate never talks to Kafka: it depends on core without core's Kafka adapter, so it builds
//! without rdkafka or librdkafka.
//!
//! ```
//! use std::sync::Arc;
//! use kafka_ops_core::handler::{handler_fn, Handler, HandlerBuilder};
//! use kafka_ops_core::{Offset, Record};
//! use kafka_ops_core::handler::Outcome;
//! use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
//! use kafka_ops_idempotency::IdempotencyLayer;
//! use kafka_ops_idempotency::store::memory::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let layer = IdempotencyLayer::new(
//!     Arc::new(MemoryStore::new(1_000_000)),
//!     KeyPolicy::new("billing", HeaderKey("event-id".into())),
//! );
//! let handler = HandlerBuilder::new()
//!     .layer(layer)
//!     .handler(handler_fn(|_record: &Record<'_>| async { Ok(Outcome::Processed) }));
//!
//! let event = Record::new("payments", 0, Offset::ZERO)
//!     .with_value(b"{}".to_vec())
//!     .with_header("event-id", b"evt-1".to_vec());
//! assert_eq!(handler.handle(&event).await.unwrap(), Outcome::Processed);
//! // The same event again (a replay, at another offset): skipped.
//! let mut again = event.clone();
//! again.offset = Offset::new(7).unwrap();
//! assert_eq!(handler.handle(&again).await.unwrap(), Outcome::Duplicate);
//! # });
//! ```

#[cfg(feature = "testkit")]
pub mod conformance;
mod error;
pub mod keys;
mod layer;
pub mod store;

pub use error::IdempotencyError;
pub use layer::{
    Claim, IdempotencyLayer, Idempotent, InProgressPolicy, KeyConflict, KeyInProgress,
    current_claim,
};
