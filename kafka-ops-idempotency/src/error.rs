//! The crate's error type.

/// Why an idempotency operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// The record has no key where the extractor looks.
    #[error("no idempotency key: {0}")]
    MissingKey(String),
    /// The key is there but unusable (not UTF-8, empty, not a string). Permanent: the record
    /// fails the same way every time. Stores take any text as a key (see
    /// [`storage_key`](crate::store::storage_key)).
    #[error("unusable idempotency key: {0}")]
    InvalidKey(String),
    /// `complete` or `release` with a token that is no longer the key's (its lease expired and
    /// another holder took over, or it was released).
    #[error("stale fencing token for key {key}: another holder owns it now")]
    StaleToken {
        /// The key.
        key: String,
    },
    /// The bounded store is full of keys still in progress; nothing may be evicted.
    #[error("idempotency store full: {0} keys in progress")]
    StoreFull(usize),
    /// A setting is unusable.
    #[error("invalid idempotency configuration: {0}")]
    Config(String),
    /// The backing store failed.
    #[error("idempotency store {store} failed")]
    Store {
        /// Which store.
        store: &'static str,
        /// Why.
        #[source]
        source: kafka_ops_core::BoxError,
    },
}

impl IdempotencyError {
    /// A failure of the named store (for implementers of [`IdempotencyStore`](crate::store::IdempotencyStore)).
    pub fn store(store: &'static str, source: impl Into<kafka_ops_core::BoxError>) -> Self {
        IdempotencyError::Store {
            store,
            source: source.into(),
        }
    }
}
