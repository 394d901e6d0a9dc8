//! Where dead letters are written.

use async_trait::async_trait;

use super::envelope::DeadLetter;
use crate::error::Error;

/// Where a dead letter landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Stores dead-letter records durably. Object-safe. The Kafka implementation is
/// `kafka::KafkaDeadLetterSink` (feature `kafka`).
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Writes `letter`; returns only once it is stored (for Kafka: acknowledged by every
    /// in-sync replica). A write the store did not confirm is [`Error::NotAcknowledged`].
    async fn send(&self, letter: &DeadLetter) -> Result<Delivered, Error>;

    /// The partition count of `topic`, when the sink can tell (for the same-partition
    /// strategy); `None` lets the producer choose.
    async fn partitions(&self, topic: &str) -> Option<i32> {
        let _ = topic;
        None
    }

    /// The largest record the sink accepts, in bytes.
    fn max_record_bytes(&self) -> usize;
}
