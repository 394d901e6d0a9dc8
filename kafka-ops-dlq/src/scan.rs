//! Reading fixed offset ranges of a topic, the one loop inspect, replay and archive share.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_ops_core::kafka::kafka_error;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;

use crate::error::DlqError;

/// How long to wait for metadata and watermarks.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// A range with records left that yields nothing for this long is an error, not an end.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// A consumer for reading by assignment: it joins no group and commits nothing unless the
/// caller does.
pub(crate) fn reader(client_config: &ClientConfig, group: &str) -> Result<BaseConsumer, DlqError> {
    let mut config = client_config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    config
        .create()
        .map_err(|e| kafka_error("create reader", e).into())
}

/// The number of partitions of `topic`; an error when it does not exist.
pub(crate) fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<i32, DlqError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| kafka_error("read metadata", e))?;
    let count = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(DlqError::Config(format!("topic {topic} does not exist")));
    }
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}

/// `(low, high)` watermarks of every partition of `topic`.
pub(crate) fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>, DlqError> {
    (0..partition_count(consumer, topic)?)
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, TIMEOUT)
                .map_err(|e| kafka_error("read watermarks", e))?;
            Ok((partition, low, high))
        })
        .collect()
}

/// What [`read_ranges`] hands the visitor.
pub(crate) enum Step<'m> {
    /// A record inside its partition's range.
    Record(BorrowedMessage<'m>),
    /// A poll came back empty (a moment to flush work in progress).
    Idle,
}

/// Reads every record of `topic` inside `ranges`, each partition in offset order, and stops
/// once every range has been read to its end. Records at or past a range's end are not
/// visited. A visitor error ends the read.
pub(crate) fn read_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[Range],
    mut visit: impl FnMut(Step<'_>) -> Result<(), DlqError>,
) -> Result<(), DlqError> {
    let mut remaining: BTreeMap<i32, i64> = ranges
        .iter()
        .filter(|r| r.end > r.start)
        .map(|r| (r.partition, r.end))
        .collect();
    if remaining.is_empty() {
        return Ok(());
    }
    let mut list = rdkafka::TopicPartitionList::new();
    for range in ranges.iter().filter(|r| r.end > r.start) {
        list.add_partition_offset(topic, range.partition, rdkafka::Offset::Offset(range.start))
            .map_err(|e| kafka_error("assign", e))?;
    }
    consumer
        .assign(&list)
        .map_err(|e| kafka_error("assign", e))?;
    let mut idle = Duration::ZERO;
    while !remaining.is_empty() {
        match consumer.poll(POLL) {
            None => {
                idle += POLL;
                if idle >= IDLE_LIMIT {
                    return Err(DlqError::Stalled {
                        topic: topic.to_string(),
                        partitions: remaining.len(),
                        waited: IDLE_LIMIT,
                    });
                }
                // Transaction markers take offsets no record is read at: a partition whose
                // position passed its end is done even if its last offset was never seen.
                if let Ok(positions) = consumer.position() {
                    for element in positions.elements_for_topic(topic) {
                        if let (Some(position), Some(end)) = (
                            element.offset().to_raw(),
                            remaining.get(&element.partition()),
                        ) && position >= *end
                        {
                            remaining.remove(&element.partition());
                        }
                    }
                }
                visit(Step::Idle)?;
            }
            Some(Err(e)) => return Err(kafka_error("read", e).into()),
            Some(Ok(message)) => {
                idle = Duration::ZERO;
                use rdkafka::Message;
                let partition = message.partition();
                let Some(end) = remaining.get(&partition).copied() else {
                    continue;
                };
                let offset = message.offset();
                if offset >= end {
                    remaining.remove(&partition);
                    continue;
                }
                visit(Step::Record(message))?;
                if offset + 1 >= end {
                    remaining.remove(&partition);
                }
            }
        }
    }
    consumer
        .unassign()
        .map_err(|e| kafka_error("unassign", e))?;
    Ok(())
}
