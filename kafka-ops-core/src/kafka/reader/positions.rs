//! The reader's group's saved positions: reading them back (a replay's resume point, any
//! group's committed offsets) and committing them.

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};

use super::{RangeReader, TIMEOUT};
use crate::class::KafkaCode;
use crate::cluster::{PartitionError, PartitionResults};
use crate::error::Error;
use crate::kafka::{add_at_offset, kafka_code, kafka_error};
use crate::types::{Offset, TopicPartition};

impl RangeReader {
    /// The reader's group's committed offsets on partitions `0..partitions` of `topic`, with
    /// the metadata stored beside each; partitions without one are left out. A partition the
    /// broker answered with an error fails the call: left out, it would read as "never
    /// committed", and a resumed read would start that partition over or skip it.
    pub fn committed(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<(i32, Offset, String)>, Error> {
        const OPERATION: &str = "read committed offsets";
        let mut list = TopicPartitionList::new();
        list.add_partition_range(topic, 0, partitions - 1);
        let committed = self
            .inner
            .consumer
            .committed_offsets(list, TIMEOUT)
            .map_err(|e| kafka_error(OPERATION, e))?;
        let mut saved = Vec::new();
        for element in committed.elements_for_topic(topic) {
            if let Err(error) = element.error() {
                return Err(Error::Kafka {
                    operation: OPERATION,
                    code: kafka_code(&error),
                    source: format!("{topic}/{}: {error}", element.partition()).into(),
                });
            }
            let raw = element.offset().to_raw();
            if let Some(offset) = raw.and_then(|raw| Offset::from_raw(raw).ok().flatten()) {
                saved.push((element.partition(), offset, element.metadata().to_string()));
            }
        }
        Ok(saved)
    }

    /// The reader's group's committed offsets of `partitions`, one answer per partition in their
    /// order (`None`: never committed), in one OffsetFetch, bounded by `timeout`.
    ///
    /// This goes through the consumer's own group coordinator handling, which follows a moving
    /// coordinator and gives up cleanly at the bound. It is how kafka-ops reads any group's
    /// offsets: librdkafka's admin `ListConsumerGroupOffsets` crashes the process when a broker
    /// answers `NOT_COORDINATOR`, and its admin coordinator requests free their state twice when
    /// they time out while the coordinator is unreachable.
    pub fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<PartitionResults<Option<Offset>>, Error> {
        const OPERATION: &str = "read committed offsets";
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(tp) = partitions.iter().find(|tp| tp.topic.contains('\0')) {
            return Err(Error::InvalidInput(format!(
                "{OPERATION}: topic name {:?} holds a NUL byte",
                tp.topic
            )));
        }
        let mut list = TopicPartitionList::with_capacity(partitions.len());
        for tp in partitions {
            list.add_partition(&tp.topic, tp.partition);
        }
        let committed = self
            .inner
            .consumer
            .committed_offsets(list, timeout)
            .map_err(|error| match kafka_code(&error) {
                Some(KafkaCode::TIMED_OUT) => Error::Timeout {
                    operation: OPERATION,
                    timeout,
                },
                _ => kafka_error(OPERATION, error),
            })?;
        // librdkafka answers in the order asked; partitions are looked up by position so a
        // large list costs no searches.
        Ok(partitions
            .iter()
            .zip(committed.elements())
            .map(|(tp, element)| {
                let answer = match element.error() {
                    Err(error) => Err(PartitionError {
                        code: kafka_code(&error),
                        reason: error.to_string(),
                    }),
                    // Negative offsets (-1001, or -1 from some brokers) mean "never committed".
                    Ok(()) => Ok(element
                        .offset()
                        .to_raw()
                        .and_then(|raw| Offset::new(raw).ok())),
                };
                (tp.clone(), answer)
            })
            .collect())
    }

    /// Commits `(partition, offset, metadata)` of `topic` for the reader's group and waits for
    /// the broker's answer.
    pub fn commit(&self, topic: &str, positions: &[(i32, Offset, String)]) -> Result<(), Error> {
        self.commit_with(topic, positions, CommitMode::Sync)
    }

    /// Sends the same commit as [`commit`](Self::commit) without waiting for the answer. The
    /// group's commits are applied in the order they were sent; a failure is not reported, so
    /// use it only where each commit carries the whole state and a lost one costs only
    /// progress.
    pub fn commit_in_background(
        &self,
        topic: &str,
        positions: &[(i32, Offset, String)],
    ) -> Result<(), Error> {
        self.commit_with(topic, positions, CommitMode::Async)
    }

    fn commit_with(
        &self,
        topic: &str,
        positions: &[(i32, Offset, String)],
        mode: CommitMode,
    ) -> Result<(), Error> {
        let mut list = TopicPartitionList::with_capacity(positions.len());
        for (partition, offset, metadata) in positions {
            add_at_offset(&mut list, topic, *partition, offset.get())
                .map_err(|e| kafka_error("commit offsets", e))?
                .set_metadata(metadata.clone());
        }
        self.inner
            .consumer
            .commit(&list, mode)
            .map_err(|e| kafka_error("commit offsets", e))
    }
}
