//! The crate's error type.

/// Why a recovery operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A setting is unusable.
    #[error("invalid recovery configuration: {0}")]
    Config(String),
    /// A cluster operation failed.
    #[error(transparent)]
    Cluster(#[from] kafka_ops_core::Error),
}

/// The error a circuit breaker's rejection is reported as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {name} is open; calls are rejected for {retry_after:?}")]
pub struct BreakerOpen {
    /// The breaker's name.
    pub name: String,
    /// When calls may be tried again.
    pub retry_after: std::time::Duration,
}
