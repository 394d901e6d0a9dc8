//! One run of a [`Replay`]: the read loop, the batches and their notes (see the module
//! documentation for the protocol).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kafka_ops_core::dead_letter::Delivered;
use kafka_ops_core::dead_letter::headers::{self, DeadLetterInfo, lineage};
use kafka_ops_core::kafka::{AckedProducer, Outgoing as Write, Range, RangeReader, Step};
use kafka_ops_core::{Error, OwnedRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::{Candidate, Destination, Replay, ReplayProgress, ReplayReport};
use crate::error::DlqError;
use crate::rate::TokenBucket;

/// What the replay group's commit metadata holds, per dead-letter partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct State {
    v: u32,
    /// Digest of the selection and destination.
    spec: String,
    /// The end offset snapshotted when the replay started.
    end: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

/// A batch that may have been partly written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    /// The offset after the batch, in this partition.
    to: i64,
    /// Destination partitions written by the batch, by topic, with the offset to look from.
    marks: BTreeMap<String, Vec<(i32, i64)>>,
}

/// The most a batch's note may take, so it fits the broker's 4 KiB limit on commit metadata
/// (`offset.metadata.max.bytes`) with the rest of the state; a batch ends early when its
/// destinations would need more.
const NOTE_BUDGET: usize = 3_000;

/// A record ready to be written.
struct Outgoing {
    partition: i32,
    offset: i64,
    topic: String,
    target_partition: i32,
    record: OwnedRecord,
}

/// One run of a replay, on a blocking thread.
pub(super) struct Run {
    replay: Replay,
    runtime: tokio::runtime::Handle,
    /// Reads the dead-letter topic and the destinations, and commits the replay's progress:
    /// shared with the read loop, which holds `self` mutably.
    reader: Arc<RangeReader>,
    producer: Option<AckedProducer>,
    bucket: Option<TokenBucket>,
    spec: String,
    partition_counts: HashMap<String, Option<i32>>,
    report: ReplayReport,
    started: Instant,
    total: u64,
    /// Destination partitions of the batch being gathered.
    destinations: DestinationSet,
    /// Per destination partition, the offset after the last record this run wrote there.
    written_up_to: HashMap<(String, i32), i64>,
}

/// Destination `(topic, partition)`s, looked up without building a key, with the size their
/// marks take in the note (worst case).
#[derive(Debug, Default)]
struct DestinationSet(HashMap<String, BTreeSet<i32>>, usize);

impl DestinationSet {
    fn contains(&self, (topic, partition): &(&str, i32)) -> bool {
        self.0.get(*topic).is_some_and(|p| p.contains(partition))
    }
    fn insert(&mut self, (topic, partition): (String, i32)) {
        // `"topic":[],` once, `[2147483647,9223372036854775807],` per partition at most.
        let topic_bytes = if self.0.contains_key(&topic) {
            0
        } else {
            topic.len() + 6
        };
        if self.0.entry(topic).or_default().insert(partition) {
            self.1 += topic_bytes + 33;
        }
    }
    fn note_bytes(&self) -> usize {
        self.1
    }
    fn into_pairs(self) -> impl Iterator<Item = (String, i32)> {
        self.0
            .into_iter()
            .flat_map(|(topic, partitions)| partitions.into_iter().map(move |p| (topic.clone(), p)))
    }
}

impl Run {
    pub(super) fn new(
        replay: Replay,
        config: ClientConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, DlqError> {
        let reader = Arc::new(RangeReader::with_group(&config, &replay.group())?);
        let producer = if replay.dry_run {
            None
        } else {
            Some(AckedProducer::new(&config)?)
        };
        let bucket = match replay.rate {
            Some((rate, burst)) => Some(TokenBucket::new(rate, burst, replay.clock.now())?),
            None => None,
        };
        let report = ReplayReport {
            id: replay.id.clone(),
            source: replay.source.clone(),
            dry_run: replay.dry_run,
            ..ReplayReport::default()
        };
        Ok(Run {
            spec: replay.spec_digest(),
            replay,
            runtime,
            reader,
            producer,
            bucket,
            partition_counts: HashMap::new(),
            report,
            started: Instant::now(),
            total: 0,
            destinations: DestinationSet::default(),
            written_up_to: HashMap::new(),
        })
    }

    /// The earlier run's state per partition, if any.
    fn saved_state(&self, partitions: i32) -> Result<BTreeMap<i32, (i64, State)>, DlqError> {
        let mut saved = BTreeMap::new();
        for (partition, offset, metadata) in
            self.reader.committed(&self.replay.source, partitions)?
        {
            if metadata.is_empty() {
                continue;
            }
            let state: State = serde_json::from_str(&metadata).map_err(|e| {
                DlqError::Refused(format!(
                    "group {} holds offsets not written by a replay ({e}); choose another replay id",
                    self.replay.group()
                ))
            })?;
            saved.insert(partition, (offset.get(), state));
        }
        Ok(saved)
    }

    fn commit(&self, positions: &BTreeMap<i32, (i64, State)>) -> Result<(), DlqError> {
        let mut commits = Vec::with_capacity(positions.len());
        for (partition, (offset, state)) in positions {
            let metadata = serde_json::to_string(state)
                .map_err(|e| DlqError::Config(format!("replay state: {e}")))?;
            let offset =
                kafka_ops_core::Offset::new(*offset).map_err(kafka_ops_core::Error::from)?;
            commits.push((*partition, offset, metadata));
        }
        Ok(self.reader.commit(&self.replay.source, &commits)?)
    }

    pub(super) fn execute(mut self) -> Result<ReplayReport, DlqError> {
        let source = self.replay.source.clone();
        let marks_now = self.reader.topic_watermarks(&source)?;
        if let Destination::Topic(topic) = &self.replay.destination {
            let topic = topic.clone();
            if self.partitions_of(&topic)?.is_none() {
                return Err(DlqError::Config(format!(
                    "destination topic {topic} does not exist"
                )));
            }
        }
        let count = i32::try_from(marks_now.len()).unwrap_or(i32::MAX);
        let saved = if self.replay.start_over {
            BTreeMap::new()
        } else {
            self.saved_state(count)?
        };
        if let Some((_, (_, state))) = saved.iter().find(|(_, (_, s))| s.spec != self.spec) {
            return Err(DlqError::Refused(format!(
                "replay {} was started with another selection or destination (digest {}, now {}); \
                 start it over or choose another id",
                self.replay.id, state.spec, self.spec
            )));
        }
        let resumed = !saved.is_empty();
        // Positions: where each partition stands, with the snapshot it runs to.
        let mut positions: BTreeMap<i32, (i64, State)> = BTreeMap::new();
        let mut pending_to: BTreeMap<i32, i64> = BTreeMap::new();
        let mut marks: BTreeSet<(String, i32, i64)> = BTreeSet::new();
        for (partition, low, high) in marks_now {
            let (start, end) = match saved.get(&partition) {
                Some((offset, state)) => {
                    if let Some(pending) = &state.pending {
                        pending_to.insert(partition, pending.to);
                        for (topic, partitions) in &pending.marks {
                            marks.extend(partitions.iter().map(|(p, o)| (topic.clone(), *p, *o)));
                        }
                    }
                    ((*offset).max(low), state.end)
                }
                // A partition without a saved state in a resumed replay was added since: not
                // part of the snapshot.
                None if resumed => (high, high),
                None => (low, high),
            };
            positions.insert(
                partition,
                (
                    start,
                    State {
                        v: 1,
                        spec: self.spec.clone(),
                        end,
                        pending: None,
                    },
                ),
            );
        }
        self.total = positions
            .values()
            .map(|(start, state)| u64::try_from(state.end - start).unwrap_or(0))
            .sum();
        if resumed && self.total == 0 {
            self.report.already_finished = true;
            return Ok(self.report);
        }
        let already = if marks.is_empty() {
            HashSet::new()
        } else {
            self.written_before_crash(&marks)?
        };
        if !self.replay.dry_run {
            // The snapshot is saved before anything is written.
            self.commit(&positions)?;
        }
        let ranges: Vec<Range> = positions
            .iter()
            .map(|(partition, (start, state))| Range {
                partition: *partition,
                start: *start,
                end: state.end,
            })
            .collect();
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let reader = Arc::clone(&self.reader);
        let batch_size = self.replay.batch_size;
        reader.read(&source, &ranges, |step| {
            match step {
                Step::Record(record) => {
                    next.insert(record.partition, record.offset.get() + 1);
                    let record = record.into_owned();
                    self.report.scanned += 1;
                    if let Some(outgoing) = self.consider(record)? {
                        if !self
                            .destinations
                            .contains(&(outgoing.topic.as_str(), outgoing.target_partition))
                        {
                            self.destinations
                                .insert((outgoing.topic.clone(), outgoing.target_partition));
                        }
                        batch.push(outgoing);
                    }
                    if batch.len() >= batch_size || self.destinations.note_bytes() >= NOTE_BUDGET {
                        self.flush(&mut batch, &mut next, &mut positions, &pending_to, &already)?;
                    }
                }
                Step::Idle => {
                    self.flush(&mut batch, &mut next, &mut positions, &pending_to, &already)?;
                }
            }
            Ok::<(), DlqError>(())
        })?;
        // Partitions read to their end without a record past the last one seen.
        for (partition, (_, state)) in &positions {
            next.entry(*partition).or_insert(state.end);
        }
        self.flush(&mut batch, &mut next, &mut positions, &pending_to, &already)?;
        // Ranges that ended on a transaction marker or were empty still close at their end.
        let closing: Vec<i32> = positions
            .iter()
            .filter(|(_, (offset, state))| *offset < state.end)
            .map(|(p, _)| *p)
            .collect();
        if !closing.is_empty() && !self.replay.dry_run {
            for partition in closing {
                if let Some((offset, state)) = positions.get_mut(&partition) {
                    *offset = state.end;
                }
            }
            self.commit(&positions)?;
        }
        self.report_progress();
        Ok(self.report)
    }

    /// Whether `record` goes, and where; counts what does not.
    fn consider(&mut self, record: OwnedRecord) -> Result<Option<Outgoing>, DlqError> {
        let info = headers::parse(&record.headers);
        if !self.replay.selection.matches(&record, &info) {
            self.report.filtered_out += 1;
            return Ok(None);
        }
        self.report.selected += 1;
        let replayed_before = match record.headers.get_str(lineage::REPLAY_COUNT) {
            Ok(None) => 0,
            Ok(Some(text)) => text.trim().parse::<u32>().unwrap_or(u32::MAX),
            // Unreadable: assume the worst rather than risk a loop.
            Err(_) => u32::MAX,
        };
        if replayed_before >= self.replay.max_replays {
            self.report.refused_loop_guard += 1;
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset.get(),
                replayed_before, "loop guard: record already replayed too often; left in the dead-letter topic");
            return Ok(None);
        }
        let topic = match &self.replay.destination {
            Destination::Topic(topic) => Some(topic.clone()),
            Destination::Original => info.original_topic.clone(),
        };
        let Some(topic) = topic.filter(|t| t != &self.replay.source) else {
            self.report.refused_no_destination += 1;
            return Ok(None);
        };
        let Some(count) = self.partitions_of(&topic)? else {
            self.report.refused_no_destination += 1;
            tracing::warn!(%topic, "replay destination does not exist; record left in the dead-letter topic");
            return Ok(None);
        };
        let target_partition = target_partition(&record, &info, count);
        *self.report.by_destination.entry(topic.clone()).or_default() += 1;
        if self.replay.dry_run {
            if self.report.candidates.len() < self.replay.list_limit {
                self.report.candidates.push(Candidate {
                    partition: record.partition,
                    offset: record.offset.get(),
                    destination: topic,
                    error_class: info.error_class.map(|c| c.as_str().to_string()),
                    error_message: info.error_message.clone(),
                });
            }
            return Ok(None);
        }
        let source = format!(
            "{}/{}/{}",
            record.topic,
            record.partition,
            record.offset.get()
        );
        let (partition, offset) = (record.partition, record.offset.get());
        let mut out = record;
        headers::strip_provenance(
            &mut out.headers,
            info.format.unwrap_or(headers::Format::Unknown),
        );
        out.headers
            .remove_where(|key| key.starts_with("kafka-ops.replay."));
        out.headers
            .push(lineage::REPLAY_ID, Some(self.replay.id.as_bytes().to_vec()));
        out.headers.push(
            lineage::REPLAY_COUNT,
            Some((replayed_before + 1).to_string().into_bytes()),
        );
        out.headers
            .push(lineage::REPLAY_SOURCE, Some(source.into_bytes()));
        Ok(Some(Outgoing {
            partition,
            offset,
            topic,
            target_partition,
            record: out,
        }))
    }

    fn partitions_of(&mut self, topic: &str) -> Result<Option<i32>, DlqError> {
        if let Some(count) = self.partition_counts.get(topic) {
            return Ok(*count);
        }
        let count = match self.reader.partition_count(topic) {
            Ok(count) => Some(count),
            Err(Error::Config(_)) => None,
            Err(other) => return Err(other.into()),
        };
        self.partition_counts.insert(topic.to_string(), count);
        Ok(count)
    }

    /// Writes `batch`, committing a pending note before and the batch's end after.
    fn flush(
        &mut self,
        batch: &mut Vec<Outgoing>,
        next: &mut BTreeMap<i32, i64>,
        positions: &mut BTreeMap<i32, (i64, State)>,
        pending_to: &BTreeMap<i32, i64>,
        already: &HashSet<(i32, i64)>,
    ) -> Result<(), DlqError> {
        let moved: Vec<i32> = next
            .iter()
            .filter(|(p, offset)| positions.get(p).is_some_and(|(at, _)| *offset > at))
            .map(|(p, _)| *p)
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        if self.replay.dry_run {
            for (partition, offset) in next.iter() {
                if let Some((at, _)) = positions.get_mut(partition) {
                    *at = *offset;
                }
            }
            batch.clear();
            self.report_progress();
            return Ok(());
        }
        if !batch.is_empty() {
            let destinations = std::mem::take(&mut self.destinations);
            let mut marks: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
            for (topic, partition) in destinations.into_pairs() {
                // Anything this batch writes lands after what this run wrote there before,
                // so that end is a safe place to start looking; only a partition not
                // written yet needs asking.
                let from = match self.written_up_to.get(&(topic.clone(), partition)) {
                    Some(end) => *end,
                    None => self.reader.watermarks(&topic, partition)?.1,
                };
                marks.entry(topic).or_default().push((partition, from));
            }
            // Only the partitions this batch moves get the note.
            let noted: BTreeMap<i32, (i64, State)> = moved
                .iter()
                .filter_map(|p| {
                    let (at, state) = positions.get(p)?;
                    let to = *next.get(p)?;
                    let pending = Pending {
                        to,
                        marks: marks.clone(),
                    };
                    Some((
                        *p,
                        (
                            *at,
                            State {
                                pending: Some(pending),
                                ..state.clone()
                            },
                        ),
                    ))
                })
                .collect();
            self.commit(&noted)?;
            let mut deliveries = Vec::with_capacity(batch.len());
            for outgoing in batch.drain(..) {
                // Only records of the batch a crashed run may have written can be there.
                let in_doubt = pending_to
                    .get(&outgoing.partition)
                    .is_some_and(|to| outgoing.offset < *to);
                if in_doubt && already.contains(&(outgoing.partition, outgoing.offset)) {
                    self.report.already_replayed += 1;
                    continue;
                }
                self.wait_for_token();
                deliveries.push((outgoing.topic.clone(), self.send(&outgoing)?));
            }
            for (topic, delivery) in deliveries {
                let delivered = self.runtime.block_on(delivery)?;
                self.report.replayed += 1;
                let end = self
                    .written_up_to
                    .entry((topic, delivered.partition))
                    .or_default();
                *end = (*end).max(delivered.offset + 1);
            }
        }
        let mut done = BTreeMap::new();
        for partition in moved {
            if let (Some((at, state)), Some(offset)) =
                (positions.get_mut(&partition), next.get(&partition))
            {
                *at = *offset;
                state.pending = None;
                done.insert(partition, (*at, state.clone()));
            }
        }
        self.commit(&done)?;
        self.report_progress();
        Ok(())
    }

    fn wait_for_token(&mut self) {
        let Some(bucket) = self.bucket.as_mut() else {
            return;
        };
        while let Err(wait) = bucket.try_take(self.replay.clock.now()) {
            std::thread::sleep(wait);
        }
    }

    fn send(
        &self,
        outgoing: &Outgoing,
    ) -> Result<impl Future<Output = Result<Delivered, Error>> + use<>, DlqError> {
        let Some(producer) = &self.producer else {
            return Err(DlqError::Config("a dry run writes nothing".into()));
        };
        let record = &outgoing.record;
        Ok(producer.send(Write {
            topic: &outgoing.topic,
            partition: Some(outgoing.target_partition),
            key: record.key(),
            value: record.value(),
            headers: &record.headers,
            timestamp: None,
        })?)
    }

    /// Records with this replay's id already at the destination partitions a crashed batch
    /// wrote to, from the offsets noted before it: `(partition, offset)` in the dead-letter
    /// topic.
    fn written_before_crash(
        &self,
        marks: &BTreeSet<(String, i32, i64)>,
    ) -> Result<HashSet<(i32, i64)>, DlqError> {
        let mut found = HashSet::new();
        let mut by_topic: BTreeMap<&str, Vec<Range>> = BTreeMap::new();
        for (topic, partition, from) in marks {
            let (_, high) = self.reader.watermarks(topic, *partition)?;
            by_topic.entry(topic).or_default().push(Range {
                partition: *partition,
                start: *from,
                end: high,
            });
        }
        let source_prefix = format!("{}/", self.replay.source);
        for (topic, ranges) in by_topic {
            self.reader.read(topic, &ranges, |step| {
                if let Step::Record(record) = step {
                    let ours = record.headers.get_bytes(lineage::REPLAY_ID)
                        == Some(self.replay.id.as_bytes());
                    if let (true, Ok(Some(source))) =
                        (ours, record.headers.get_str(lineage::REPLAY_SOURCE))
                        && let Some(rest) = source.strip_prefix(&source_prefix)
                        && let Some((partition, offset)) = rest.split_once('/')
                        && let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse())
                    {
                        found.insert((partition, offset));
                    }
                }
                Ok::<(), DlqError>(())
            })?;
        }
        tracing::info!(
            replay = %self.replay.id,
            found = found.len(),
            "resuming after a crash: records of the interrupted batch already written"
        );
        Ok(found)
    }

    fn report_progress(&self) {
        if let Some(progress) = &self.replay.progress {
            progress(&ReplayProgress {
                scanned: self.report.scanned,
                total: self.total,
                replayed: self.report.replayed,
                elapsed: self.started.elapsed(),
            });
        }
    }
}

/// The original partition when the destination has it (the key keeps the partition its
/// producer chose), else by key with Kafka's default partitioner (murmur2, as the Java client),
/// else by source offset. Chosen here, not by the producer, so a resumed replay knows where a
/// crashed batch wrote.
pub(super) fn target_partition(record: &OwnedRecord, info: &DeadLetterInfo, count: i32) -> i32 {
    if let Some(partition) = info.original_partition.filter(|p| (0..count).contains(p)) {
        return partition;
    }
    let count_u32 = u32::try_from(count.max(1)).unwrap_or(1);
    let spread = match record.key() {
        Some(key) => murmur2(key) & 0x7fff_ffff,
        None => (record.offset.get().unsigned_abs() % u64::from(count_u32)) as u32,
    };
    i32::try_from(spread % count_u32).unwrap_or(0)
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub(super) fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}
