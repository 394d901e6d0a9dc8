//! The store contract: begin → (acquired with a fencing token | duplicate with the stored
//! outcome | in progress until T | conflict), and complete/release that only the current token
//! may do.

use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::IdempotencyError;

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "redis")]
pub mod redis;

/// A 128-bit digest of a record's payload: the same key with a different digest is a conflict
/// (a different event reusing the id), not a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PayloadDigest(pub u128);

impl PayloadDigest {
    /// The digest of `payload` (xxh3-128; an empty or absent payload has its own digest).
    pub fn of(payload: Option<&[u8]>) -> Self {
        match payload {
            None => PayloadDigest(0),
            Some(bytes) => PayloadDigest(xxhash_rust::xxh3::xxh3_128(bytes)),
        }
    }

    /// As 16 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// From 16 big-endian bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(PayloadDigest(u128::from_be_bytes(bytes.try_into().ok()?)))
    }
}

/// Proof of holding a key's lease; only the current holder's token completes or releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// A fresh random token (unique with overwhelming probability).
    pub fn random() -> Self {
        FencingToken(fastrand::u64(1..))
    }
}

/// What a completed key remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutcome {
    /// How the record ended (`processed`, `skipped`, ...).
    pub outcome: kafka_ops_core::handler::Outcome,
    /// The handler's result, when it stores one (a response to return to a duplicate).
    pub result: Option<Vec<u8>>,
}

/// The answer to [`IdempotencyStore::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The caller holds the key until its lease ends; complete or release it with the token.
    Acquired(FencingToken),
    /// Done before, with this outcome.
    Duplicate(StoredOutcome),
    /// Someone else holds it until this time.
    InProgress {
        /// When the holder's lease ends (it may be taken over then).
        until: Timestamp,
    },
    /// Seen before with a different payload.
    Conflict,
}

/// The answer to a fenced write that changed `rows` rows: done when it changed one, else the
/// token no longer held `key`.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn fenced(rows: u64, key: &str) -> Result<(), IdempotencyError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(IdempotencyError::StaleToken {
            key: key.to_string(),
        })
    }
}

/// Remembers which keys were processed. Object-safe: use it as `Arc<dyn IdempotencyStore>`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Tries to take `key` for `lease`. A key whose lease expired may be taken over; a completed
    /// key whose TTL passed is forgotten.
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError>;

    /// Marks `key` done (remembered for `ttl`). Fails with
    /// [`StaleToken`](IdempotencyError::StaleToken) unless `token` holds the key; completing
    /// again with the same token succeeds.
    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError>;

    /// Gives the key up so a retry may run. Fails with
    /// [`StaleToken`](IdempotencyError::StaleToken) unless `token` holds it.
    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError>;

    /// The store's name (metrics, logs).
    fn name(&self) -> &'static str;
}
