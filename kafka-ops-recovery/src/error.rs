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

impl RecoveryError {
    /// The message with every cause after it (`message: cause: cause`), for the audit trail,
    /// notifications and logs: `Display` keeps to the top-level message, which alone often
    /// does not say what went wrong ("notifier webhook failed"). A cause whose text the
    /// message already quotes is not repeated.
    pub fn describe(&self) -> String {
        kafka_ops_core::describe_chain(self)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_walks_the_whole_cause_chain() {
        let error = RecoveryError::Notify {
            notifier: "webhook".into(),
            source: "the webhook answered 500 Internal Server Error".into(),
        };
        assert_eq!(error.to_string(), "notifier webhook failed");
        assert_eq!(
            error.describe(),
            "notifier webhook failed: the webhook answered 500 Internal Server Error"
        );
        let io = RecoveryError::Io {
            what: "append to audit trail".into(),
            source: std::io::Error::other("no space left on device"),
        };
        assert_eq!(
            io.describe(),
            "could not append to audit trail: no space left on device"
        );
        // A message that already quotes its cause does not say it twice.
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Quoting(#[source] std::io::Error);
        let quoting = RecoveryError::Notify {
            notifier: "smtp".into(),
            source: Box::new(Quoting(std::io::Error::other("refused"))),
        };
        assert_eq!(quoting.describe(), "notifier smtp failed: outer: refused");
        assert_eq!(
            RecoveryError::Config("x".into()).describe(),
            "invalid recovery configuration: x"
        );
    }
}
