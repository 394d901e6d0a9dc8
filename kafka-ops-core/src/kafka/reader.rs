//! [`RangeReader`]: the one loop every kafka-ops read of fixed offsets goes through (dead-letter
//! inspect, archive and replay, the canary, skipping a poison record, the tests' readers).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use crate::error::Error;
use crate::kafka::{kafka_error, record_from_message};
use crate::record::{OwnedRecord, Record};
use crate::types::{Offset, TopicPartition};

/// How long to wait for metadata and watermarks.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A range with records left that yields nothing for this long is an error, not an end.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The partition.
    pub partition: i32,
    /// The first offset to read.
    pub start: i64,
    /// The offset after the last one to read (an end offset taken before reading).
    pub end: i64,
}

/// What [`RangeReader::read`] hands the visitor.
#[derive(Debug)]
pub enum Step<'m> {
    /// A record inside its partition's range, borrowing the consumer's message.
    Record(Record<'m>),
    /// A poll came back empty (a moment to flush work in progress).
    Idle,
}

/// Reads given offset ranges of a topic to their ends: assigned (no group membership, nothing
/// committed unless the caller [`commit`](Self::commit)s), `read_committed`
/// (records of open or aborted transactions are never read; their markers are stepped over),
/// each partition in offset order, a range done at its end offset, a read that stops yielding
/// records while ranges are unfinished an error after 30 s rather than a hang.
///
/// The calls block: run them on a blocking thread (`spawn_blocking`), or use the async
/// [`read_one`](Self::read_one).
pub struct RangeReader {
    consumer: Arc<BaseConsumer>,
}

impl fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RangeReader")
    }
}

impl RangeReader {
    /// A reader for the cluster `client_config` points at, under the group `kafka-ops-reader`
    /// (used only for committed offsets the caller reads or writes).
    pub fn new(client_config: &ClientConfig) -> Result<Self, Error> {
        Self::with_group(client_config, "kafka-ops-reader")
    }

    /// A reader whose consumer uses the group `group` for the offsets the caller
    /// [`commit`](Self::commit)s (a replay's progress, for example). It reads
    /// `read_committed` unless `client_config` sets `isolation.level`.
    pub fn with_group(client_config: &ClientConfig, group: &str) -> Result<Self, Error> {
        let mut config = client_config.clone();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        if config.get("isolation.level").is_none() {
            config.set("isolation.level", "read_committed");
        }
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("create reader", e))?;
        Ok(RangeReader {
            consumer: Arc::new(consumer),
        })
    }

    /// The reader's group's committed offsets on partitions `0..partitions` of `topic`, with
    /// the metadata stored beside each; partitions without one are left out.
    pub fn committed(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<(i32, Offset, String)>, Error> {
        let mut list = TopicPartitionList::new();
        list.add_partition_range(topic, 0, partitions - 1);
        let committed = self
            .consumer
            .committed_offsets(list, TIMEOUT)
            .map_err(|e| kafka_error("read committed offsets", e))?;
        Ok(committed
            .elements_for_topic(topic)
            .iter()
            .filter_map(|element| {
                let offset = Offset::from_raw(element.offset().to_raw()?).ok()??;
                Some((element.partition(), offset, element.metadata().to_string()))
            })
            .collect())
    }

    /// Commits `(partition, offset, metadata)` of `topic` for the reader's group and waits for
    /// the broker's answer.
    pub fn commit(&self, topic: &str, positions: &[(i32, Offset, String)]) -> Result<(), Error> {
        let mut list = TopicPartitionList::with_capacity(positions.len());
        for (partition, offset, metadata) in positions {
            list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(offset.get()))
                .map_err(|e| kafka_error("commit offsets", e))?;
            if let Some(mut element) = list.find_partition(topic, *partition) {
                element.set_metadata(metadata.clone());
            }
        }
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| kafka_error("commit offsets", e))
    }

    /// The number of partitions of `topic`; [`Error::Config`] when it does not exist.
    pub fn partition_count(&self, topic: &str) -> Result<i32, Error> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| kafka_error("read metadata", e))?;
        let count = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(Error::Config(format!("topic {topic} does not exist")));
        }
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// `(low, high)` watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), Error> {
        self.consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|e| kafka_error("read watermarks", e))
    }

    /// `(partition, low, high)` for every partition of `topic`: the ranges a whole-topic read
    /// covers, taken now.
    pub fn topic_watermarks(&self, topic: &str) -> Result<Vec<(i32, i64, i64)>, Error> {
        (0..self.partition_count(topic)?)
            .map(|partition| {
                let (low, high) = self.watermarks(topic, partition)?;
                Ok((partition, low, high))
            })
            .collect()
    }

    /// Reads every record of `topic` inside `ranges`, each partition in offset order, and
    /// returns once every range has been read to its end. Records at or past a range's end are
    /// not visited. A visitor error ends the read.
    pub fn read<E: From<Error>>(
        &self,
        topic: &str,
        ranges: &[Range],
        mut visit: impl FnMut(Step<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ranges: Vec<(TopicPartition, i64, i64)> = ranges
            .iter()
            .map(|r| (TopicPartition::new(topic, r.partition), r.start, r.end))
            .collect();
        self.read_ranges(&ranges, IDLE_LIMIT, |step| visit(step).map(|()| false))
    }

    /// The loop under every read: `ranges` of any topics; the visitor answers `true` when the
    /// record's partition needs nothing more. Ends when every range is done, or with
    /// [`Error::Stalled`] once nothing was read for `idle_limit`.
    fn read_ranges<E: From<Error>>(
        &self,
        ranges: &[(TopicPartition, i64, i64)],
        idle_limit: Duration,
        mut visit: impl FnMut(Step<'_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let consumer = &self.consumer;
        // Keyed by the topic's index in `topics`: looking a record's partition up allocates
        // nothing.
        let mut topics: Vec<&str> = Vec::new();
        let mut remaining: BTreeMap<(usize, i32), i64> = BTreeMap::new();
        for (tp, _, end) in ranges.iter().filter(|(_, start, end)| end > start) {
            let index = topics
                .iter()
                .position(|t| *t == &*tp.topic)
                .unwrap_or_else(|| {
                    topics.push(&tp.topic);
                    topics.len() - 1
                });
            remaining.insert((index, tp.partition), *end);
        }
        let key_of = |topic: &str, partition: i32| {
            topics
                .iter()
                .position(|t| *t == topic)
                .map(|index| (index, partition))
        };
        if remaining.is_empty() {
            return Ok(());
        }
        let mut list = rdkafka::TopicPartitionList::new();
        for (tp, start, _) in ranges.iter().filter(|(_, start, end)| end > start) {
            list.add_partition_offset(&tp.topic, tp.partition, rdkafka::Offset::Offset(*start))
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
                    if idle >= idle_limit {
                        let first = remaining.keys().next().map_or(0, |(index, _)| *index);
                        return Err(Error::Stalled {
                            topic: topics.get(first).copied().unwrap_or_default().to_string(),
                            partitions: remaining.len(),
                            waited: idle_limit,
                        }
                        .into());
                    }
                    // Transaction markers take offsets no record is read at: a partition whose
                    // position passed its end is done even if its last offset was never seen.
                    if let Ok(positions) = consumer.position() {
                        for element in positions.elements() {
                            let Some(key) = key_of(element.topic(), element.partition()) else {
                                continue;
                            };
                            if let (Some(position), Some(end)) =
                                (element.offset().to_raw(), remaining.get(&key))
                                && position >= *end
                            {
                                remaining.remove(&key);
                            }
                        }
                    }
                    visit(Step::Idle)?;
                }
                Some(Err(e)) => return Err(kafka_error("read", e).into()),
                Some(Ok(message)) => {
                    idle = Duration::ZERO;
                    let Some(key) = key_of(message.topic(), message.partition()) else {
                        continue;
                    };
                    let Some(end) = remaining.get(&key).copied() else {
                        continue;
                    };
                    let offset = message.offset();
                    if offset >= end {
                        remaining.remove(&key);
                        continue;
                    }
                    let done = visit(Step::Record(record_from_message(&message)?))?;
                    if done || offset + 1 >= end {
                        remaining.remove(&key);
                    }
                }
            }
        }
        consumer
            .unassign()
            .map_err(|e| kafka_error("unassign", e))?;
        Ok(())
    }

    /// The timestamp of the first record at or after each position, reading at most until
    /// `limit` passes (positions without an answer by then get `None`, as do records without a
    /// timestamp). Blocking.
    pub fn first_record_timestamps(
        &self,
        positions: &[(TopicPartition, Offset)],
        limit: Duration,
    ) -> Result<Vec<(TopicPartition, Option<crate::Timestamp>)>, Error> {
        let mut ranges = Vec::with_capacity(positions.len());
        for (tp, offset) in positions {
            let (_, high) = self.watermarks(&tp.topic, tp.partition)?;
            ranges.push((tp.clone(), offset.get(), high));
        }
        let mut found: BTreeMap<TopicPartition, Option<crate::Timestamp>> = BTreeMap::new();
        let result = self.read_ranges(&ranges, limit, |step| {
            if let Step::Record(record) = step {
                let tp = TopicPartition::new(&*record.topic, record.partition);
                let stamp = record.timestamp.time();
                found.entry(tp).or_insert(stamp);
                return Ok::<bool, Error>(true);
            }
            Ok(false)
        });
        match result {
            Ok(()) | Err(Error::Stalled { .. }) => {}
            Err(other) => return Err(other),
        }
        Ok(positions
            .iter()
            .map(|(tp, _)| (tp.clone(), found.get(tp).copied().flatten()))
            .collect())
    }

    /// Every record of `topic` up to its end offsets of now, partition by partition, in offset
    /// order. Blocking.
    pub fn read_topic(&self, topic: &str) -> Result<Vec<OwnedRecord>, Error> {
        let ranges: Vec<Range> = self
            .topic_watermarks(topic)?
            .into_iter()
            .map(|(partition, start, end)| Range {
                partition,
                start,
                end,
            })
            .collect();
        let mut records = Vec::new();
        self.read(topic, &ranges, |step| {
            if let Step::Record(record) = step {
                records.push(record.into_owned());
            }
            Ok::<(), Error>(())
        })?;
        records.sort_by_key(|r| (r.partition, r.offset));
        Ok(records)
    }

    /// The record at `offset` of `partition`, or `None` when there is none there (compacted
    /// away, a transaction marker, past the end).
    pub async fn read_one(
        &self,
        partition: &TopicPartition,
        offset: Offset,
    ) -> Result<Option<OwnedRecord>, Error> {
        let consumer = self.consumer.clone();
        let tp = partition.clone();
        tokio::task::spawn_blocking(move || {
            let reader = RangeReader { consumer };
            let (_, high) = reader.watermarks(&tp.topic, tp.partition)?;
            if offset.get() >= high {
                return Ok(None);
            }
            let range = Range {
                partition: tp.partition,
                start: offset.get(),
                end: offset.get() + 1,
            };
            let mut found = None;
            reader.read(&tp.topic, &[range], |step| {
                if let Step::Record(record) = step
                    && record.offset == offset
                {
                    found = Some(record.into_owned());
                }
                Ok::<(), Error>(())
            })?;
            Ok(found)
        })
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
    }
}
