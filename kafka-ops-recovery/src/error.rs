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
    /// Offsets of a group with members cannot be changed: they would overwrite them.
    #[error("group {group} is {state} with members {members:?}: stop its consumers first")]
    GroupActive {
        /// The group.
        group: String,
        /// Its state.
        state: String,
        /// Its members (client id and host).
        members: Vec<String>,
    },
    /// The broker answered for a partition with an error, so no plan can be made for it.
    #[error("{what} of {partition} unreadable")]
    PartitionUnreadable {
        /// What was asked (the committed offset, the watermarks, the offset at a time).
        what: &'static str,
        /// The partition.
        partition: kafka_ops_core::TopicPartition,
        /// The broker's answer for it.
        #[source]
        source: kafka_ops_core::cluster::PartitionError,
    },
    /// The broker could not say whether the group has members.
    #[error("cannot tell whether group {group} has members")]
    CannotVerifyGroup {
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: Box<kafka_ops_core::Error>,
    },
    /// A file could not be read or written.
    #[error("could not {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A notifier could not deliver.
    #[error("notifier {notifier} failed")]
    Notify {
        /// The notifier.
        notifier: String,
        /// Why.
        #[source]
        source: kafka_ops_core::BoxError,
    },
    /// A recovery action did not work.
    #[error("{action}: {reason}")]
    ActionFailed {
        /// The action.
        action: String,
        /// Why.
        reason: String,
    },
    /// The group still lagged when the wait ended.
    #[error("group {group} still lags by {lag} after {waited:?}")]
    NotDrained {
        /// The group.
        group: String,
        /// Its remaining lag.
        lag: u64,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// The group had no committed offset when the wait ended: an unknown (misspelt) group, one
    /// that never committed, or one whose offsets expired. Nothing shows it drained.
    #[error(
        "group {group} has no committed offsets after {waited:?} (unknown, never committed, or expired)"
    )]
    NoCommittedOffsets {
        /// The group.
        group: String,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
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
