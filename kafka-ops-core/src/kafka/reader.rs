//! [`RangeReader`]: the one loop every kafka-ops read of fixed offsets goes through (dead-letter
//! inspect, archive and replay, the canary, skipping a poison record, the tests' readers).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::class::KafkaCode;
use crate::error::Error;
use crate::ffi::{self, ClientQueue, Delivery, MessageBatch};
use crate::kafka::{add_at_offset, commit_by_hand, kafka_error, metadata, set_unless_set};
use crate::record::{OwnedRecord, Record};
use crate::types::{IsolationLevel, Offset, OffsetSpec, TopicPartition};

/// Messages taken from librdkafka per call.
const BATCH: usize = 1_024;
/// How long to wait for metadata and watermarks.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A range with records left that yields nothing for this long is an error, not an end.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

mod positions;

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
#[non_exhaustive]
pub enum Step<'m> {
    /// A record inside its partition's range, borrowing the consumer's message.
    Record(Record<'m>),
    /// A poll came back empty (a moment to flush work in progress).
    Idle,
    /// Offsets of a range were removed from their partition's log (retention, records
    /// deleted) before the reader reached them; the read goes on from the partition's new log
    /// start.
    Removed(RemovedOffsets),
}

/// Offsets `[from, to)` of one partition that left its log before the reader reached them:
/// whatever records they held were never visited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedOffsets {
    /// The partition's topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset not read.
    pub from: i64,
    /// The offset the read went on from: the partition's log start when the reader found
    /// out, at most the range's end.
    pub to: i64,
}

/// Reads given offset ranges of a topic to their ends: assigned (no group membership, nothing
/// committed unless the caller [`commit`](Self::commit)s), `read_committed`
/// (records of open or aborted transactions are never read; their markers are stepped over),
/// each partition in offset order, a range done at its end offset, a read that stops yielding
/// records while ranges are unfinished an error after 30 s rather than a hang. Records removed
/// from a partition's log before the reader reached them are reported
/// ([`Step::Removed`]) and the read goes on from what is left, never past it.
///
/// The calls block: run them on a blocking thread (`spawn_blocking`), or use the async
/// [`read_one`](Self::read_one).
pub struct RangeReader {
    inner: Arc<Inner>,
}

/// The consumer and its queue, read in batches; the queue is declared first so it is dropped
/// before the consumer it belongs to.
struct Inner {
    queue: ClientQueue,
    consumer: BaseConsumer,
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
        config.set("group.id", group);
        commit_by_hand(&mut config);
        // A read runs to fixed ends as fast as the brokers deliver: once the prefetch queue
        // is full, librdkafka waits `fetch.queue.backoff.ms` before fetching again (a second by
        // default), which left a replay's reader idle more than half of the time.
        set_unless_set(
            &mut config,
            &[
                ("isolation.level", "read_committed"),
                ("fetch.queue.backoff.ms", "10"),
            ],
        );
        // A fetch below a partition's log start (records removed while they were read) is
        // out of range, and librdkafka's default answer jumps to the partition's end: every
        // record left between the two would be skipped without a word, and a replay would
        // then count them replayed. The reader answers it itself, whatever the caller's
        // setting: it reports the removed offsets and goes on from the new log start.
        config.set("auto.offset.reset", "error");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("create reader", e))?;
        let queue = ClientQueue::consumer_of(consumer.client())?;
        Ok(RangeReader {
            inner: Arc::new(Inner { queue, consumer }),
        })
    }

    /// The number of partitions of `topic`; [`Error::Config`] when it does not exist.
    pub fn partition_count(&self, topic: &str) -> Result<i32, Error> {
        metadata::partition_count(self.inner.consumer.client(), topic, TIMEOUT)?
            .ok_or_else(|| Error::Config(format!("topic {topic} does not exist")))
    }

    /// `(low, high)` watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), Error> {
        self.inner
            .consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|e| kafka_error("read watermarks", e))
    }

    /// `(partition, low, high)` for every partition of `topic`: the ranges a whole-topic read
    /// covers, taken now.
    pub fn topic_watermarks(&self, topic: &str) -> Result<Vec<(i32, i64, i64)>, Error> {
        let partitions: Vec<i32> = (0..self.partition_count(topic)?).collect();
        self.watermarks_of(topic, &partitions)
    }

    /// `(partition, low, high)` for `partitions` of `topic`, in their order, asked in one round:
    /// one ListOffsets request per partition leader for the low ends and one for the high ends,
    /// whatever the number of partitions.
    pub fn watermarks_of(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64, i64)>, Error> {
        self.watermarks_within(topic, partitions, TIMEOUT)
    }

    /// [`watermarks_of`](Self::watermarks_of) within `timeout`.
    fn watermarks_within(
        &self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<Vec<(i32, i64, i64)>, Error> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        // ListOffsets refuses a partition named twice.
        let unique: BTreeSet<i32> = partitions.iter().copied().collect();
        let batches: Vec<Vec<(TopicPartition, OffsetSpec)>> =
            [OffsetSpec::Earliest, OffsetSpec::Latest]
                .into_iter()
                .map(|spec| {
                    unique
                        .iter()
                        .map(|p| (TopicPartition::new(topic, *p), spec))
                        .collect()
                })
                .collect();
        let results = ffi::list_offsets(
            self.inner.consumer.client(),
            &batches,
            IsolationLevel::ReadUncommitted,
            timeout,
        )?;
        let mut ends: [HashMap<i32, i64>; 2] = Default::default();
        for (answers, into) in results.into_iter().zip(ends.iter_mut()) {
            for (tp, answer) in answers? {
                let listed = answer.map_err(|e| Error::Kafka {
                    operation: "read watermarks",
                    code: e.code,
                    source: format!("{tp}: {}", e.reason).into(),
                })?;
                if let Some(offset) = listed.offset {
                    into.insert(tp.partition, offset.get());
                }
            }
        }
        let [low, high] = ends;
        partitions
            .iter()
            .map(|p| match (low.get(p), high.get(p)) {
                (Some(low), Some(high)) => Ok((*p, *low, *high)),
                _ => Err(Error::Kafka {
                    operation: "read watermarks",
                    code: None,
                    source: format!("no offsets for {topic}/{p}").into(),
                }),
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
        self.read_ranges(&ranges, IDLE_LIMIT, None, |step| {
            visit(step).map(|()| false)
        })
    }

    /// The loop under every read: `ranges` of any topics; the visitor answers `true` when the
    /// record's partition needs nothing more. Ends when every range is done, or with
    /// [`Error::Stalled`] once no range moved on for `idle_limit` or `deadline` passed. Records
    /// removed under the read are handed over as [`Step::Removed`]; a log truncated under it
    /// (its next offset past the log's end) is an error.
    ///
    /// A partition whose range is done is paused, so records arriving there later neither
    /// take the reader's time nor count as progress; one whose position passed its end without
    /// a record in range (a transaction marker, records compacted away) is done too, checked
    /// whenever a round moved no range on.
    fn read_ranges<E: From<Error>>(
        &self,
        ranges: &[(TopicPartition, i64, i64)],
        idle_limit: Duration,
        deadline: Option<Instant>,
        mut visit: impl FnMut(Step<'_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let consumer = &self.inner.consumer;
        // Keyed by the topic's index in `topics`: looking a record's partition up allocates
        // nothing.
        let mut topics: Vec<&str> = Vec::new();
        // Each unfinished range's next offset to read and its end.
        let mut remaining: BTreeMap<(usize, i32), (i64, i64)> = BTreeMap::new();
        for (tp, start, end) in ranges.iter().filter(|(_, start, end)| end > start) {
            let index = topics
                .iter()
                .position(|t| *t == &*tp.topic)
                .unwrap_or_else(|| {
                    topics.push(&tp.topic);
                    topics.len() - 1
                });
            remaining.insert((index, tp.partition), (*start, *end));
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
        self.assign_remaining(&topics, &remaining)?;
        let stalled = |topics: &[&str], remaining: &BTreeMap<(usize, i32), (i64, i64)>, waited| {
            let first = remaining.keys().next().map_or(0, |(index, _)| *index);
            E::from(Error::Stalled {
                topic: topics.get(first).copied().unwrap_or_default().to_string(),
                partitions: remaining.len(),
                waited,
            })
        };
        let started = Instant::now();
        let mut last_progress = started;
        let mut finished: Vec<(usize, i32)> = Vec::new();
        let mut batch = MessageBatch::with_capacity(BATCH);
        // Partitions whose fetch at their next offset fell outside the log.
        let mut out_of_range: Vec<(usize, i32)> = Vec::new();
        while !remaining.is_empty() {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(stalled(&topics, &remaining, started.elapsed()));
            }
            let before = remaining.len();
            let mut visited = false;
            batch.fill(&self.inner.queue, POLL);
            for index in 0..batch.len() {
                let record = match batch.get(index) {
                    None => continue,
                    Some(Delivery::Error(code, message)) => {
                        return Err(Error::Kafka {
                            operation: "read",
                            code: Some(code),
                            source: message.into(),
                        }
                        .into());
                    }
                    Some(Delivery::OutOfRange {
                        topic,
                        partition,
                        offset,
                        ..
                    }) => {
                        // An error for an offset before the next one to read is stale: a
                        // partition answered already, whose error librdkafka queued twice
                        // (assigning the ranges again does not always drop it). A negative
                        // offset is librdkafka's answer to a log found truncated when it
                        // validated the position: never stale.
                        if let Some(key) = key_of(&topic, partition)
                            && remaining
                                .get(&key)
                                .is_some_and(|(next, _)| offset < 0 || offset >= *next)
                        {
                            out_of_range.push(key);
                        }
                        continue;
                    }
                    Some(Delivery::Record(record)) => record,
                };
                let Some(key) = key_of(&record.topic, record.partition) else {
                    continue;
                };
                let Some((next, end)) = remaining.get_mut(&key) else {
                    continue;
                };
                let offset = record.offset.get();
                if offset < *next {
                    // Read already: fetched before the ranges left were assigned again.
                    continue;
                }
                if offset >= *end {
                    remaining.remove(&key);
                    finished.push(key);
                    continue;
                }
                *next = offset + 1;
                let end = *end;
                visited = true;
                let done = visit(Step::Record(record))?;
                if done || offset + 1 >= end {
                    remaining.remove(&key);
                    finished.push(key);
                }
            }
            if !out_of_range.is_empty() {
                let left = deadline.map_or(TIMEOUT, |deadline| {
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(TIMEOUT)
                });
                let skipped =
                    self.skip_removed(&topics, &mut remaining, &mut out_of_range, left, &mut visit);
                match skipped {
                    Ok(moved_on) => visited |= moved_on,
                    // A lookup the deadline cut short is the deadline's answer.
                    Err(_) if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                        return Err(stalled(&topics, &remaining, started.elapsed()));
                    }
                    Err(error) => return Err(error),
                }
            }
            if !visited && remaining.len() == before {
                // Transaction markers take offsets no record is read at: a partition whose
                // position passed its end is done even if its last offset was never seen.
                if let Ok(positions) = consumer.position() {
                    for element in positions.elements() {
                        let Some(key) = key_of(element.topic(), element.partition()) else {
                            continue;
                        };
                        if let (Some(position), Some((_, end))) =
                            (element.offset().to_raw(), remaining.get(&key))
                            && position >= *end
                        {
                            remaining.remove(&key);
                            finished.push(key);
                        }
                    }
                }
            }
            if visited || remaining.len() < before {
                last_progress = Instant::now();
            } else {
                if last_progress.elapsed() >= idle_limit {
                    return Err(stalled(&topics, &remaining, idle_limit));
                }
                visit(Step::Idle)?;
            }
            if !finished.is_empty() && !remaining.is_empty() {
                let mut done = rdkafka::TopicPartitionList::with_capacity(finished.len());
                for (index, partition) in finished.drain(..) {
                    if let Some(topic) = topics.get(index) {
                        done.add_partition(topic, partition);
                    }
                }
                if let Err(error) = consumer.pause(&done) {
                    tracing::debug!(%error, "could not pause partitions read to their end");
                }
            }
        }
        drop(batch);
        consumer
            .unassign()
            .map_err(|e| kafka_error("unassign", e))?;
        Ok(())
    }

    /// Answers the partitions in `out_of_range` (drained), whose fetch at their next offset
    /// fell outside the log: those whose log start moved past it report the removed offsets
    /// and go on from the new start (done when that is past their end); the ranges left are
    /// then assigned again, as librdkafka stopped fetching those partitions. A next offset
    /// inside the log after all (replicas deleting old segments on their own schedules can
    /// disagree on the log start) is fetched again, and answers `false` (no range moved on: a
    /// disagreement that lasts ends the read at its idle limit). A next offset past the log's
    /// end (the log was truncated under the reader), or watermarks not read within `timeout`,
    /// are errors.
    fn skip_removed<E: From<Error>>(
        &self,
        topics: &[&str],
        remaining: &mut BTreeMap<(usize, i32), (i64, i64)>,
        out_of_range: &mut Vec<(usize, i32)>,
        timeout: Duration,
        visit: &mut impl FnMut(Step<'_>) -> Result<bool, E>,
    ) -> Result<bool, E> {
        out_of_range.sort_unstable();
        out_of_range.dedup();
        let started = Instant::now();
        let mut moved_on = false;
        let mut by_topic: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
        for (index, partition) in out_of_range.drain(..) {
            by_topic.entry(index).or_default().push(partition);
        }
        for (index, partitions) in by_topic {
            let Some(topic) = topics.get(index) else {
                continue;
            };
            let left = timeout.saturating_sub(started.elapsed());
            for (partition, low, high) in self.watermarks_within(topic, &partitions, left)? {
                let key = (index, partition);
                let Some(&(next, end)) = remaining.get(&key) else {
                    continue;
                };
                if low <= next && next <= high {
                    continue;
                }
                if low <= next {
                    return Err(E::from(Error::Kafka {
                        operation: "read",
                        code: Some(KafkaCode::OFFSET_OUT_OF_RANGE),
                        source: format!(
                            "offset {next} of {topic}/{partition} is outside its log [{low}, \
                             {high}): the log was truncated under the reader"
                        )
                        .into(),
                    }));
                }
                visit(Step::Removed(RemovedOffsets {
                    topic: (*topic).to_string(),
                    partition,
                    from: next,
                    to: low.min(end),
                }))?;
                moved_on = true;
                if low >= end {
                    remaining.remove(&key);
                } else {
                    remaining.insert(key, (low, end));
                }
            }
        }
        self.assign_remaining(topics, remaining)?;
        Ok(moved_on)
    }

    /// Assigns every unfinished range of `remaining` at its next offset, and only those.
    fn assign_remaining(
        &self,
        topics: &[&str],
        remaining: &BTreeMap<(usize, i32), (i64, i64)>,
    ) -> Result<(), Error> {
        let mut list = TopicPartitionList::with_capacity(remaining.len());
        for ((index, partition), (next, _)) in remaining {
            if let Some(topic) = topics.get(*index) {
                add_at_offset(&mut list, topic, *partition, *next)
                    .map_err(|e| kafka_error("assign", e))?;
            }
        }
        let consumer = &self.inner.consumer;
        consumer
            .assign(&list)
            .map_err(|e| kafka_error("assign", e))?;
        // librdkafka keeps a partition's pause across unassign and assign: an earlier read
        // paused what it had finished.
        consumer.resume(&list).map_err(|e| kafka_error("resume", e))
    }

    /// The timestamp of the first record at or after each position, reading at most until
    /// `limit` passes (positions without an answer by then get `None`, as do records without a
    /// timestamp). Blocking.
    pub fn first_record_timestamps(
        &self,
        positions: &[(TopicPartition, Offset)],
        limit: Duration,
    ) -> Result<Vec<(TopicPartition, Option<crate::Timestamp>)>, Error> {
        let started = Instant::now();
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (tp, _) in positions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let mut highs: HashMap<(&str, i32), i64> = HashMap::new();
        for (topic, partitions) in by_topic {
            let left = limit.saturating_sub(started.elapsed()).min(TIMEOUT);
            for (partition, _, high) in self.watermarks_within(topic, &partitions, left)? {
                highs.insert((topic, partition), high);
            }
        }
        let ranges: Vec<(TopicPartition, i64, i64)> = positions
            .iter()
            .map(|(tp, offset)| {
                let high = highs.get(&(&*tp.topic, tp.partition)).copied();
                (tp.clone(), offset.get(), high.unwrap_or(offset.get()))
            })
            .collect();
        let mut found: BTreeMap<TopicPartition, Option<crate::Timestamp>> = BTreeMap::new();
        let deadline = crate::kafka::deadline_after(started, limit);
        let result = self.read_ranges(&ranges, limit, Some(deadline), |step| {
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
    /// away, a transaction marker, removed from the log, past the end).
    pub async fn read_one(
        &self,
        partition: &TopicPartition,
        offset: Offset,
    ) -> Result<Option<OwnedRecord>, Error> {
        let inner = self.inner.clone();
        let tp = partition.clone();
        tokio::task::spawn_blocking(move || {
            let reader = RangeReader { inner };
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
