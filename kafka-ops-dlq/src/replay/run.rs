//! One run of a [`Replay`]: the read loop, the destinations, and the replay group's commits
//! (see [`pipeline`](super::pipeline) for what makes a resumed run write each record once).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::dead_letter::headers::{self, lineage};
use kafka_ops_core::kafka::{AckedProducer, Outgoing, Range, RangeReader, Step, set_unless_set};
use kafka_ops_core::{Error, Offset, Record};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::partitioner::target_partition;
use super::pipeline::{NOTE_BUDGET, Pipeline};
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

/// The note: records past the committed offsets may already be at these destination partitions,
/// at or after these offsets. Carried by the first dead-letter partition's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    /// The snapshot's end in the partition carrying the note (earlier versions noted the end of
    /// a batch here; a resumed run checks every record it writes against what it finds).
    to: i64,
    /// Destination partitions, by topic, with the offset to look from.
    marks: BTreeMap<String, Vec<(i32, i64)>>,
}

/// A replay is a bulk copy: the producer waits a little longer to fill its batches and
/// compresses them (lz4: cheap on the CPU), unless the caller's configuration says otherwise.
/// On a replicated cluster fewer, smaller produce requests shorten the wait for acknowledgements.
fn bulk_producer_config(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    set_unless_set(
        &mut config,
        &[("linger.ms", "20"), ("compression.type", "lz4")],
    );
    config
}

/// How often an idle read still commits what was stored.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// Where a selected record goes.
struct Plan {
    destination: usize,
    partition: i32,
    format: headers::Format,
    replayed_before: u32,
}

/// One run of a replay, on a blocking thread.
pub(super) struct Run {
    replay: Replay,
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
    pipeline: Pipeline,
    /// Per dead-letter partition, where it stands and the snapshot it runs to.
    positions: BTreeMap<i32, (i64, State)>,
    /// Per dead-letter partition, the offset after the last record read.
    next: HashMap<i32, i64>,
    /// Records found at the destinations that a crashed run wrote.
    already: HashSet<(i32, i64)>,
    /// Records sent since the last checkpoint.
    sent_since_checkpoint: usize,
    last_checkpoint: Instant,
    /// `kafka-ops.replay.count` values, by replays before this one.
    count_texts: Vec<String>,
    /// `kafka-ops.replay.source` of the record being written.
    source_text: String,
}

impl Run {
    pub(super) fn new(replay: Replay, config: ClientConfig) -> Result<Self, DlqError> {
        let reader = Arc::new(RangeReader::with_group(&config, &replay.group())?);
        let producer = if replay.dry_run {
            None
        } else {
            Some(AckedProducer::served_by_caller(&bulk_producer_config(
                &config,
            ))?)
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
        let count_texts = (1..=replay.max_replays.saturating_add(1).min(1_000))
            .map(|n| n.to_string())
            .collect();
        Ok(Run {
            spec: replay.spec_digest(),
            replay,
            reader,
            producer,
            bucket,
            partition_counts: HashMap::new(),
            report,
            started: Instant::now(),
            total: 0,
            pipeline: Pipeline::default(),
            positions: BTreeMap::new(),
            next: HashMap::new(),
            already: HashSet::new(),
            sent_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            count_texts,
            source_text: String::new(),
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
        let mut marks: BTreeSet<(String, i32, i64)> = BTreeSet::new();
        for (partition, low, high) in marks_now {
            let (start, end) = match saved.get(&partition) {
                Some((offset, state)) => {
                    if let Some(pending) = &state.pending {
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
            self.positions.insert(
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
        self.total = self
            .positions
            .values()
            .map(|(start, state)| u64::try_from(state.end - start).unwrap_or(0))
            .sum();
        if resumed && self.total == 0 {
            self.report.already_finished = true;
            return Ok(self.report);
        }
        if !marks.is_empty() {
            self.already = self.written_before_crash(&marks)?;
            // The crashed run's note stays until this run has read past everything it covers.
            for (topic, partition, mark) in &marks {
                if let Some(count) = self.partitions_of(topic)? {
                    let destination = self.pipeline.destination(topic, count);
                    self.pipeline.note_inherited(destination, *partition, *mark);
                }
            }
        }
        // The snapshot is saved before anything is written.
        self.checkpoint()?;
        let ranges: Vec<Range> = self
            .positions
            .iter()
            .map(|(partition, (start, state))| Range {
                partition: *partition,
                start: *start,
                end: state.end,
            })
            .collect();
        let reader = Arc::clone(&self.reader);
        reader.read(&source, &ranges, |step| {
            match step {
                Step::Record(record) => self.take(record)?,
                Step::Removed(removed) => {
                    let count = u64::try_from(removed.to - removed.from).unwrap_or(0);
                    self.report.removed_unread += count;
                    // Progress counts toward what is left to read.
                    self.total = self.total.saturating_sub(count);
                    tracing::warn!(topic = %removed.topic, partition = removed.partition,
                        from = removed.from, to = removed.to,
                        "dead letters removed from the topic before the replay read them");
                }
                Step::Idle => {
                    self.take_acknowledged()?;
                    if self.sent_since_checkpoint > 0
                        && self.last_checkpoint.elapsed() >= IDLE_CHECKPOINT
                    {
                        self.checkpoint_in_background()?;
                    }
                }
                // Steps added later carry nothing a replay acts on.
                _ => {}
            }
            Ok::<(), DlqError>(())
        })?;
        self.drain()?;
        // Every range is read to its end (some ended on a transaction marker or were empty).
        for (offset, state) in self.positions.values_mut() {
            *offset = state.end;
        }
        self.pipeline.clear_note(true);
        self.checkpoint()?;
        self.report.replayed += self.pipeline.stored;
        self.pipeline.stored = 0;
        self.report_progress();
        Ok(self.report)
    }

    /// One record read from the dead-letter topic. Its partition's position moves past it
    /// only once it is written or left: a checkpoint taken before the write (the note, a
    /// background commit) must not commit past a record that is not on its way.
    fn take(&mut self, record: Record<'_>) -> Result<(), DlqError> {
        let (partition, offset) = (record.partition, record.offset.get());
        self.report.scanned += 1;
        self.route(record)?;
        self.next.insert(partition, offset + 1);
        Ok(())
    }

    /// Writes `record` to its destination, or counts why not.
    fn route(&mut self, record: Record<'_>) -> Result<(), DlqError> {
        let (partition, offset) = (record.partition, record.offset.get());
        let Some(plan) = self.consider(&record)? else {
            return Ok(());
        };
        if !self.already.is_empty() && self.already.contains(&(partition, offset)) {
            self.report.already_replayed += 1;
            return Ok(());
        }
        if !self.pipeline.is_noted(plan.destination, plan.partition) {
            self.note(plan.destination, plan.partition)?;
        }
        self.wait_for_token();
        self.write(record, &plan)?;
        self.sent_since_checkpoint += 1;
        if self.sent_since_checkpoint >= self.replay.batch_size {
            self.checkpoint_in_background()?;
        } else if self.pipeline.in_flight().is_multiple_of(1_024) {
            self.take_acknowledged()?;
        }
        Ok(())
    }

    /// Whether `record` goes, and where; counts what does not.
    fn consider(&mut self, record: &Record<'_>) -> Result<Option<Plan>, DlqError> {
        let info = headers::parse(&record.headers);
        if !self.replay.selection.matches(record, &info) {
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
        if let Some(size) = info.truncated_value_size {
            self.report.refused_truncated += 1;
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset.get(),
                original_size = size, "dead letter holds a truncated value; left in the dead-letter topic");
            return Ok(None);
        }
        let topic = match &self.replay.destination {
            Destination::Topic(topic) => Some(topic.as_str()),
            Destination::Original => info.original_topic.as_deref(),
        };
        let Some(topic) = topic.filter(|t| *t != self.replay.source) else {
            self.report.refused_no_destination += 1;
            return Ok(None);
        };
        let Some(count) = partition_count(&mut self.partition_counts, &self.reader, topic)? else {
            self.report.refused_no_destination += 1;
            tracing::warn!(%topic, "replay destination does not exist; record left in the dead-letter topic");
            return Ok(None);
        };
        let partition = target_partition(record, &info, count);
        match self.report.by_destination.get_mut(topic) {
            Some(n) => *n += 1,
            None => {
                self.report.by_destination.insert(topic.to_string(), 1);
            }
        }
        if self.replay.dry_run {
            if self.report.candidates.len() < self.replay.list_limit {
                self.report.candidates.push(Candidate {
                    partition: record.partition,
                    offset: record.offset.get(),
                    destination: topic.to_string(),
                    error_class: info.error_class.map(|c| c.as_str().to_string()),
                    error_message: info.error_message.clone(),
                });
            }
            return Ok(None);
        }
        Ok(Some(Plan {
            destination: self.pipeline.destination(topic, count),
            partition,
            format: info.format.unwrap_or(headers::Format::Unknown),
            replayed_before,
        }))
    }

    /// Adds a destination partition to the note and commits it, before anything is written
    /// there. The first partition of a topic brings every other one it has while they fit, so a
    /// replay to one topic commits its note once.
    fn note(&mut self, destination: usize, partition: i32) -> Result<(), DlqError> {
        if self.pipeline.note_bytes() + self.pipeline.note_cost(destination) > NOTE_BUDGET {
            // Wait for what is in flight: then nothing past the committed offsets is anywhere,
            // and a fresh note can start.
            self.drain()?;
            self.pipeline.clear_note(false);
        }
        let mut adding = vec![partition];
        if !self.pipeline.has_notes(destination)
            && self.pipeline.note_bytes() + self.pipeline.note_cost_of_all(destination)
                <= NOTE_BUDGET
        {
            let all = self.pipeline.destinations[destination].partitions();
            adding = (0..i32::try_from(all).unwrap_or(0)).collect();
        }
        let topic = self.pipeline.destinations[destination].name.clone();
        // What this run stored there is at or below anything it writes next; otherwise the
        // partition's end now is.
        let mut unknown = Vec::new();
        for p in adding {
            match self.pipeline.stored_up_to(destination, p) {
                Some(stored) => self.pipeline.note(destination, p, stored),
                None => unknown.push(p),
            }
        }
        for (p, _, end) in self.reader.watermarks_of(&topic, &unknown)? {
            self.pipeline.note(destination, p, end);
        }
        self.checkpoint()
    }

    /// Sends `record` to its destination with the lineage headers and queues its
    /// acknowledgement; it is not copied, only its headers are edited in place.
    fn write(&mut self, record: Record<'_>, plan: &Plan) -> Result<(), DlqError> {
        let Some(producer) = &self.producer else {
            return Err(DlqError::Config("a dry run writes nothing".into()));
        };
        let (partition, offset) = (record.partition, record.offset.get());
        self.source_text.clear();
        let _ = write!(
            self.source_text,
            "{}/{}/{}",
            record.topic, record.partition, offset
        );
        let count = plan.replayed_before.saturating_add(1);
        let count_text = match self
            .count_texts
            .get(usize::try_from(count - 1).unwrap_or(usize::MAX))
        {
            Some(text) => std::borrow::Cow::Borrowed(text.as_bytes()),
            None => std::borrow::Cow::Owned(count.to_string().into_bytes()),
        };
        let mut out = record.headers;
        headers::strip_provenance(&mut out, plan.format);
        out.remove_where(|key| key.starts_with("kafka-ops.replay."));
        out.push(lineage::REPLAY_ID, Some(self.replay.id.as_bytes()));
        out.push(lineage::REPLAY_COUNT, Some(count_text));
        out.push(lineage::REPLAY_SOURCE, Some(self.source_text.as_bytes()));
        producer.send_tracked(
            Outgoing {
                topic: &self.pipeline.destinations[plan.destination].name,
                partition: Some(plan.partition),
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &out,
                timestamp: None,
            },
            self.pipeline.next_tag(),
        )?;
        self.pipeline.push(partition, offset, plan.destination);
        Ok(())
    }

    /// Commits, per dead-letter partition, the first offset not known to be stored, with the
    /// note on the first partition, and waits for the answer.
    fn checkpoint(&mut self) -> Result<(), DlqError> {
        self.checkpoint_with(true)
    }

    /// [`checkpoint`](Self::checkpoint) without waiting, between notes: each commit carries
    /// the whole state, which stays true whatever is written next, so a commit that is late or
    /// lost only moves a resumed run's start back.
    fn checkpoint_in_background(&mut self) -> Result<(), DlqError> {
        self.checkpoint_with(false)
    }

    fn checkpoint_with(&mut self, wait: bool) -> Result<(), DlqError> {
        self.take_acknowledged()?;
        let first_unstored = self.pipeline.first_unstored();
        for (partition, (at, _)) in self.positions.iter_mut() {
            let reached = first_unstored
                .get(partition)
                .or_else(|| self.next.get(partition))
                .copied()
                .unwrap_or(*at);
            *at = (*at).max(reached);
        }
        self.report.replayed += self.pipeline.stored;
        self.pipeline.stored = 0;
        self.sent_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        if !self.replay.dry_run {
            let marks = self.pipeline.marks();
            let mut commits = Vec::with_capacity(self.positions.len());
            for (index, (partition, (at, state))) in self.positions.iter().enumerate() {
                let pending = (index == 0 && !marks.is_empty()).then(|| Pending {
                    to: state.end,
                    marks: marks.clone(),
                });
                let state = State {
                    pending,
                    ..state.clone()
                };
                let metadata = serde_json::to_string(&state)
                    .map_err(|e| DlqError::Config(format!("replay state: {e}")))?;
                commits.push((*partition, Offset::new(*at).map_err(Error::from)?, metadata));
            }
            if wait {
                self.reader.commit(&self.replay.source, &commits)?;
            } else {
                self.reader
                    .commit_in_background(&self.replay.source, &commits)?;
            }
        }
        self.report_progress();
        Ok(())
    }

    /// Takes the answered records off the front of the in-flight queue.
    fn take_acknowledged(&mut self) -> Result<(), DlqError> {
        match &self.producer {
            Some(producer) => self.pipeline.take_acknowledged(producer),
            None => Ok(()),
        }
    }

    /// Waits until every record sent is acknowledged, and takes them all.
    fn drain(&mut self) -> Result<(), DlqError> {
        if let Some(producer) = &self.producer {
            producer.flush(producer.delivery_timeout() + Duration::from_secs(5))?;
        }
        self.take_acknowledged()?;
        if self.pipeline.in_flight() > 0 {
            return Err(DlqError::Kafka(Error::Timeout {
                operation: "wait for the replay's acknowledgements",
                timeout: self
                    .producer
                    .as_ref()
                    .map_or(Duration::ZERO, AckedProducer::delivery_timeout),
            }));
        }
        Ok(())
    }

    fn partitions_of(&mut self, topic: &str) -> Result<Option<i32>, DlqError> {
        partition_count(&mut self.partition_counts, &self.reader, topic)
    }

    fn wait_for_token(&mut self) {
        let Some(bucket) = self.bucket.as_mut() else {
            return;
        };
        while let Err(wait) = bucket.try_take(self.replay.clock.now()) {
            std::thread::sleep(wait);
        }
    }

    /// Records with this replay's id already at the noted destination partitions, from the
    /// noted offsets: `(partition, offset)` in the dead-letter topic.
    fn written_before_crash(
        &self,
        marks: &BTreeSet<(String, i32, i64)>,
    ) -> Result<HashSet<(i32, i64)>, DlqError> {
        let mut found = HashSet::new();
        let mut by_topic: BTreeMap<&str, Vec<Range>> = BTreeMap::new();
        for (topic, partition, from) in marks {
            by_topic.entry(topic).or_default().push(Range {
                partition: *partition,
                start: *from,
                end: *from,
            });
        }
        for (topic, ranges) in &mut by_topic {
            let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
            for (range, (_, _, high)) in ranges
                .iter_mut()
                .zip(self.reader.watermarks_of(topic, &partitions)?)
            {
                range.end = high;
            }
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
            "resuming after a crash: records the interrupted run already wrote"
        );
        Ok(found)
    }

    fn report_progress(&self) {
        if let Some(progress) = &self.replay.progress {
            progress(&ReplayProgress {
                scanned: self.report.scanned,
                total: self.total,
                replayed: self.report.replayed + self.pipeline.stored,
                elapsed: self.started.elapsed(),
            });
        }
    }
}

/// The partition count of `topic` (`None`: it does not exist), asked once per run.
fn partition_count(
    counts: &mut HashMap<String, Option<i32>>,
    reader: &RangeReader,
    topic: &str,
) -> Result<Option<i32>, DlqError> {
    if let Some(count) = counts.get(topic) {
        return Ok(*count);
    }
    let count = match reader.partition_count(topic) {
        Ok(count) => Some(count),
        Err(Error::Config(_)) => None,
        Err(other) => return Err(other.into()),
    };
    counts.insert(topic.to_string(), count);
    Ok(count)
}
