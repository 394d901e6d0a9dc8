//! The crate's error type.

use kafka_ops_core::BoxError;

/// Why a health operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// A cluster query failed (unreachable brokers, timeouts, refused requests).
    #[error(transparent)]
    Cluster(#[from] kafka_ops_core::Error),
    /// A setting is unusable.
    #[error("invalid health configuration: {0}")]
    Config(String),
    /// The canary could not produce or consume.
    #[error("canary {operation} failed")]
    Canary {
        /// What the canary was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The HTTP server could not bind or serve.
    #[error("health HTTP server: {0}")]
    Http(#[source] std::io::Error),
    /// A probe's own failure.
    #[error(transparent)]
    Probe(BoxError),
}
