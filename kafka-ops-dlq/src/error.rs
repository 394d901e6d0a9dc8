//! The crate's error type.

/// What can go wrong routing, reading or replaying dead letters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// A Kafka operation failed.
    #[error(transparent)]
    Kafka(#[from] kafka_ops_core::Error),
    /// Records that should be there could not be read.
    #[error("no records from {topic} for {waited:?} while {partitions} partitions were unread")]
    Stalled {
        /// The topic read.
        topic: String,
        /// Partitions not read to their end.
        partitions: usize,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The operation was refused, and nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// An archive could not read every record it set out to: records were removed from the
    /// topic while it read them (retention deleting old segments, another purge), so the
    /// partitions named were not read to the end offsets taken when it started. Nothing was
    /// written and nothing deleted; archiving again starts from the records left.
    #[error(
        "the archive of {topic} is incomplete: records of partitions {partitions:?} were removed while they were read; nothing was written or deleted"
    )]
    ArchiveIncomplete {
        /// The topic archived.
        topic: String,
        /// The partitions records were removed from before the archive read them (every
        /// partition not read to its end, when the watermarks could not be read again).
        partitions: Vec<i32>,
        /// The reader's error (boxed: it would make every result of the crate larger).
        #[source]
        source: Box<kafka_ops_core::Error>,
    },
    /// The broker cannot do what was asked.
    #[error("{operation} is not supported by this cluster: {reason}")]
    Unsupported {
        /// What was asked.
        operation: &'static str,
        /// The broker's answer.
        reason: String,
    },
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dead-letter limit refused the record: routing it would have made too many of its
    /// partition's records dead letters, so the consumer stops on it, uncommitted, instead.
    #[error(
        "dead-letter limit reached on {topic}/{partition} at offset {offset}: {breach}; stopping instead of dead-lettering it"
    )]
    LimitReached {
        /// The record's topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset: the group's committed offset stays at it.
        offset: kafka_ops_core::Offset,
        /// The limit it would have broken.
        breach: crate::limit::LimitBreach,
        /// The failure that would have been dead-lettered.
        #[source]
        failure: Box<kafka_ops_core::handler::HandlerError>,
    },
    /// The shared retry budget is spent: the record is held, with the consumer paused, until
    /// the budget has a retry again.
    #[error("the retry budget is spent; the record waits {retry_after:?} with the consumer paused")]
    BudgetSpent {
        /// How long until the budget has a retry again (or the layer's retry delay).
        retry_after: std::time::Duration,
    },
    /// A setting is invalid.
    #[error("invalid dead-letter configuration: {0}")]
    Config(String),
}
