//! Replaying dead letters: "fix the root cause → replay".
//!
//! A [`Replay`] reads a dead-letter topic from the offsets it had when the replay first started
//! to the end offsets snapshotted at that moment (records arriving while it runs are left for
//! another replay), selects records ([`Selection`]: original topic, error class, fingerprint,
//! time range, a header), and copies each selected one to its destination with its key, value
//! and application headers, the provenance headers removed and lineage headers
//! ([`lineage`](crate::headers::lineage)) added. Nothing is removed from the dead-letter topic.
//!
//! # Resuming without duplicates or gaps
//!
//! The replay has its own consumer group, `kafka-ops-replay.<id>`, and works in batches. Before
//! a batch is produced it commits the batch's start with a *pending* note: the batch's end and
//! the end offsets of every destination partition the batch writes to. After every record of the
//! batch is acknowledged it commits the batch's end. A replay that crashed mid-batch finds the
//! note on restart, reads those destination partitions from the noted offsets, and skips the
//! records it finds there with its own replay id: each selected record is written exactly once.
//! The snapshot of end offsets and a digest of the selection ride along in the same commit
//! metadata, so a resumed replay finishes the same work, a replay that finished replays nothing
//! when run again, and a different selection under the same id is refused — unless asked to
//! [start over](Replay::start_over).
//!
//! # Guards
//!
//! - The destination is the record's original topic, or another topic only if allow-listed;
//!   never the dead-letter topic itself.
//! - A record already replayed [`max_replays`](Replay::max_replays) times (its
//!   `kafka-ops.replay.count` header) is refused: it keeps failing, and replaying it again would
//!   only loop.
//! - The rate is bounded by a [`TokenBucket`](crate::rate::TokenBucket) when asked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::kafka::{kafka_error, owned_headers, record_from_message};
use kafka_ops_core::{Clock, ErrorClass, OwnedRecord, SystemClock, Timestamp};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::DlqError;
use crate::headers::{self, DeadLetterInfo, lineage};
use crate::inspect::fingerprint;
use crate::rate::TokenBucket;
use crate::scan;

/// A header a selected record must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Header name.
    pub name: String,
    /// The exact value (UTF-8) it must have; `None`: present with any value.
    pub value: Option<String>,
}

impl HeaderMatch {
    /// Parses `name` or `name=value`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('=') {
            Some((name, value)) => HeaderMatch {
                name: name.to_string(),
                value: Some(value.to_string()),
            },
            None => HeaderMatch {
                name: text.to_string(),
                value: None,
            },
        }
    }
}

/// Which dead letters a replay takes. Every criterion set must hold; none set selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// The topic the record originally failed on.
    pub original_topic: Option<String>,
    /// kafka-ops' error class (records of foreign formats have none and do not match).
    pub error_class: Option<ErrorClass>,
    /// The error-message fingerprint, as [`inspect`](crate::inspect) reports it.
    pub fingerprint: Option<String>,
    /// Dead-lettered at or after (the last failure time, else the dead letter's timestamp).
    pub since: Option<Timestamp>,
    /// Dead-lettered before.
    pub until: Option<Timestamp>,
    /// A header the record must carry.
    pub header: Option<HeaderMatch>,
}

impl Selection {
    /// Whether `record` (a dead letter, `info` its parsed provenance) is selected.
    pub fn matches(&self, record: &OwnedRecord, info: &DeadLetterInfo) -> bool {
        if let Some(topic) = &self.original_topic
            && info.original_topic.as_deref() != Some(topic.as_str())
        {
            return false;
        }
        if let Some(class) = self.error_class
            && info.error_class != Some(class)
        {
            return false;
        }
        if let Some(wanted) = &self.fingerprint
            && info.error_message.as_deref().map(fingerprint).as_ref() != Some(wanted)
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(when) = info.last_failure.or_else(|| record.timestamp.time()) else {
                return false;
            };
            if self.since.is_some_and(|since| when < since)
                || self.until.is_some_and(|until| when >= until)
            {
                return false;
            }
        }
        if let Some(header) = &self.header {
            let found =
                record
                    .headers
                    .get_all(&header.name)
                    .any(|value| match (&header.value, value) {
                        (None, _) => true,
                        (Some(wanted), Some(bytes)) => bytes == wanted.as_bytes(),
                        (Some(_), None) => false,
                    });
            if !found {
                return false;
            }
        }
        true
    }
}

/// Where replayed records go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// Each record's original topic (the default).
    Original,
    /// One topic, which must be allow-listed.
    Topic(String),
}

/// Progress, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplayProgress {
    /// Dead letters read so far (this run).
    pub scanned: u64,
    /// Dead letters this run has to read.
    pub total: u64,
    /// Records written so far (this run).
    pub replayed: u64,
    /// Since this run started.
    pub elapsed: Duration,
}

impl ReplayProgress {
    /// Records read per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.scanned as f64 / secs
        } else {
            0.0
        }
    }

    /// Estimated time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total.saturating_sub(self.scanned) as f64 / rate))
    }
}

/// A record a dry run would replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Dead-letter partition.
    pub partition: i32,
    /// Dead-letter offset.
    pub offset: i64,
    /// Where it would go.
    pub destination: String,
    /// Its error class, when known.
    pub error_class: Option<String>,
    /// Its error message, when known.
    pub error_message: Option<String>,
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The replay's id.
    pub id: String,
    /// The dead-letter topic.
    pub source: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// The replay had finished before this run: nothing to do.
    pub already_finished: bool,
    /// Dead letters read by this run.
    pub scanned: u64,
    /// Of those, selected.
    pub selected: u64,
    /// Written to a destination by this run.
    pub replayed: u64,
    /// Found at the destination, written by a run that crashed before committing them.
    pub already_replayed: u64,
    /// Not selected.
    pub filtered_out: u64,
    /// Refused by the loop guard.
    pub refused_loop_guard: u64,
    /// Refused: no original topic known, or it does not exist.
    pub refused_no_destination: u64,
    /// Written (or, dry, to be written) per destination topic.
    pub by_destination: BTreeMap<String, u64>,
    /// A dry run's first [`Replay::list_limit`] candidates.
    pub candidates: Vec<Candidate>,
}

/// What [`Replay::on_progress`] calls.
pub type ProgressFn = Arc<dyn Fn(&ReplayProgress) + Send + Sync>;

/// A replay of a dead-letter topic; see the [module](self) documentation.
#[derive(Clone)]
pub struct Replay {
    source: String,
    id: String,
    selection: Selection,
    destination: Destination,
    allowed_destinations: BTreeSet<String>,
    rate: Option<(f64, u32)>,
    max_replays: u32,
    dry_run: bool,
    start_over: bool,
    batch_size: usize,
    list_limit: usize,
    progress: Option<ProgressFn>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("source", &self.source)
            .field("id", &self.id)
            .field("selection", &self.selection)
            .field("destination", &self.destination)
            .field("allowed_destinations", &self.allowed_destinations)
            .field("rate", &self.rate)
            .field("max_replays", &self.max_replays)
            .field("dry_run", &self.dry_run)
            .field("start_over", &self.start_over)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

/// What the replay group's commit metadata holds, per dead-letter partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
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
struct Pending {
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

impl Replay {
    /// A replay of dead-letter topic `source` named `id` (which names its consumer group):
    /// everything selected, to the original topics, unlimited rate, loop guard at 3 replays,
    /// batches of 500.
    pub fn new(source: impl Into<String>, id: impl Into<String>) -> Self {
        Replay {
            source: source.into(),
            id: id.into(),
            selection: Selection::default(),
            destination: Destination::Original,
            allowed_destinations: BTreeSet::new(),
            rate: None,
            max_replays: 3,
            dry_run: false,
            start_over: false,
            batch_size: 500,
            list_limit: 1_000,
            progress: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Which records to take.
    pub fn select(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// Where to write them; a [`Destination::Topic`] must also be [allowed](Self::allow).
    pub fn to(mut self, destination: Destination) -> Self {
        self.destination = destination;
        self
    }

    /// Allows `topic` as a destination besides the original topics.
    pub fn allow(mut self, topic: impl Into<String>) -> Self {
        self.allowed_destinations.insert(topic.into());
        self
    }

    /// At most `per_second` records per second, in bursts of at most `burst`.
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = Some((per_second, burst));
        self
    }

    /// Refuses records already replayed `times` times (default 3).
    pub fn max_replays(mut self, times: u32) -> Self {
        self.max_replays = times;
        self
    }

    /// Lists what would be replayed; writes and commits nothing.
    pub fn dry_run(mut self, dry: bool) -> Self {
        self.dry_run = dry;
        self
    }

    /// Forgets an earlier run of this replay id (finished or not, whatever its selection) and
    /// starts from the dead-letter topic's start with a fresh snapshot of its end.
    pub fn start_over(mut self, again: bool) -> Self {
        self.start_over = again;
        self
    }

    /// Records per batch (each batch costs two commits; default 500).
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records.max(1);
        self
    }

    /// How many candidates a dry run lists (default 1 000; all are counted).
    pub fn list_limit(mut self, records: usize) -> Self {
        self.list_limit = records;
        self
    }

    /// Called with the progress after every batch.
    pub fn on_progress(mut self, report: impl Fn(&ReplayProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(report));
        self
    }

    /// The clock the rate limit runs on.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The consumer group the replay commits its progress in.
    pub fn group(&self) -> String {
        format!("kafka-ops-replay.{}", self.id)
    }

    fn spec_digest(&self) -> String {
        let spec = format!("{:?}|{:?}", self.selection, self.destination);
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(spec.as_bytes()))
    }

    fn validate(&self) -> Result<(), DlqError> {
        if self.id.is_empty() || self.id.contains(char::is_whitespace) {
            return Err(DlqError::Config(format!(
                "replay id {:?} must be non-empty, without spaces",
                self.id
            )));
        }
        if let Destination::Topic(topic) = &self.destination {
            if topic == &self.source {
                return Err(DlqError::Refused(format!(
                    "replaying {} into itself would loop",
                    self.source
                )));
            }
            if !self.allowed_destinations.contains(topic) {
                return Err(DlqError::Refused(format!(
                    "destination {topic} is not allow-listed (only original topics are, by default)"
                )));
            }
        }
        if let Some((rate, burst)) = self.rate {
            TokenBucket::new(rate, burst, self.clock.now())?;
        }
        Ok(())
    }

    /// Runs the replay through `client_config` (bootstrap, security) and reports what it did.
    pub async fn run(&self, client_config: &ClientConfig) -> Result<ReplayReport, DlqError> {
        self.validate()?;
        let replay = self.clone();
        let config = client_config.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || Run::new(replay, config, runtime)?.execute())
            .await
            .map_err(|e| DlqError::Config(format!("replay task failed: {e}")))?
    }
}

/// One run of a replay, on a blocking thread.
struct Run {
    replay: Replay,
    runtime: tokio::runtime::Handle,
    /// Reads the dead-letter topic and the destinations, and commits the replay's progress:
    /// shared with the read loop, which holds `self` mutably.
    consumer: Arc<BaseConsumer>,
    producer: Option<FutureProducer>,
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
    fn new(
        replay: Replay,
        config: ClientConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, DlqError> {
        let consumer = Arc::new(scan::reader(&config, &replay.group())?);
        let producer = if replay.dry_run {
            None
        } else {
            let mut producer_config = config;
            producer_config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5");
            Some(
                producer_config
                    .create()
                    .map_err(|e| kafka_error("create replay producer", e))?,
            )
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
            consumer,
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
        let mut list = TopicPartitionList::new();
        list.add_partition_range(&self.replay.source, 0, partitions - 1);
        let committed = self
            .consumer
            .committed_offsets(list, scan::TIMEOUT)
            .map_err(|e| kafka_error("read the replay's committed offsets", e))?;
        let mut saved = BTreeMap::new();
        for element in committed.elements_for_topic(&self.replay.source) {
            let (Some(offset), metadata) = (element.offset().to_raw(), element.metadata()) else {
                continue;
            };
            if offset < 0 || metadata.is_empty() {
                continue;
            }
            let state: State = serde_json::from_str(metadata).map_err(|e| {
                DlqError::Refused(format!(
                    "group {} holds offsets not written by a replay ({e}); choose another replay id",
                    self.replay.group()
                ))
            })?;
            saved.insert(element.partition(), (offset, state));
        }
        Ok(saved)
    }

    fn commit(&self, positions: &BTreeMap<i32, (i64, State)>) -> Result<(), DlqError> {
        let mut list = TopicPartitionList::new();
        for (partition, (offset, state)) in positions {
            list.add_partition_offset(
                &self.replay.source,
                *partition,
                rdkafka::Offset::Offset(*offset),
            )
            .map_err(|e| kafka_error("commit replay progress", e))?;
            let metadata = serde_json::to_string(state)
                .map_err(|e| DlqError::Config(format!("replay state: {e}")))?;
            if let Some(mut element) = list.find_partition(&self.replay.source, *partition) {
                element.set_metadata(metadata);
            }
        }
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| kafka_error("commit replay progress", e).into())
    }

    fn execute(mut self) -> Result<ReplayReport, DlqError> {
        let source = self.replay.source.clone();
        let marks_now = scan::watermarks(&self.consumer, &source)?;
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
        let ranges: Vec<scan::Range> = positions
            .iter()
            .map(|(partition, (start, state))| scan::Range {
                partition: *partition,
                start: *start,
                end: state.end,
            })
            .collect();
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let consumer = Arc::clone(&self.consumer);
        let batch_size = self.replay.batch_size;
        scan::read_ranges(&consumer, &source, &ranges, |step| {
            match step {
                scan::Step::Record(message) => {
                    next.insert(message.partition(), message.offset() + 1);
                    let record = record_from_message(&message)?.into_owned();
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
                scan::Step::Idle => {
                    self.flush(&mut batch, &mut next, &mut positions, &pending_to, &already)?;
                }
            }
            Ok(())
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
        let count = match scan::partition_count(&self.consumer, topic) {
            Ok(count) => Some(count),
            Err(DlqError::Config(_)) => None,
            Err(other) => return Err(other),
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
                    None => {
                        self.consumer
                            .fetch_watermarks(&topic, partition, scan::TIMEOUT)
                            .map_err(|e| kafka_error("read destination watermarks", e))?
                            .1
                    }
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
                match self.runtime.block_on(delivery) {
                    Ok(Ok(delivered)) => {
                        self.report.replayed += 1;
                        let end = self
                            .written_up_to
                            .entry((topic, delivered.partition))
                            .or_default();
                        *end = (*end).max(delivered.offset + 1);
                    }
                    Ok(Err((error, _))) => {
                        return Err(DlqError::NotAcknowledged {
                            topic,
                            source: Box::new(kafka_error("replay", error)),
                        });
                    }
                    Err(_cancelled) => {
                        return Err(DlqError::NotAcknowledged {
                            topic,
                            source: "the producer went away before acknowledging".into(),
                        });
                    }
                }
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

    fn send(&self, outgoing: &Outgoing) -> Result<DeliveryFuture, DlqError> {
        let Some(producer) = &self.producer else {
            return Err(DlqError::Config("a dry run writes nothing".into()));
        };
        let record = &outgoing.record;
        let mut out = FutureRecord::<[u8], [u8]>::to(&outgoing.topic)
            .partition(outgoing.target_partition)
            .headers(owned_headers(&record.headers));
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.value() {
            out = out.payload(value);
        }
        loop {
            match producer.send_result(out) {
                Ok(delivery) => return Ok(delivery),
                Err((error, back))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    // The local queue is full: let deliveries drain, then enqueue again.
                    producer.poll(Duration::from_millis(50));
                    out = back;
                }
                Err((error, _)) => {
                    return Err(DlqError::NotAcknowledged {
                        topic: outgoing.topic.clone(),
                        source: Box::new(kafka_error("replay", error)),
                    });
                }
            }
        }
    }

    /// Records with this replay's id already at the destination partitions a crashed batch
    /// wrote to, from the offsets noted before it: `(partition, offset)` in the dead-letter
    /// topic.
    fn written_before_crash(
        &self,
        marks: &BTreeSet<(String, i32, i64)>,
    ) -> Result<HashSet<(i32, i64)>, DlqError> {
        let mut found = HashSet::new();
        let mut by_topic: BTreeMap<&str, Vec<scan::Range>> = BTreeMap::new();
        for (topic, partition, from) in marks {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, *partition, scan::TIMEOUT)
                .map_err(|e| kafka_error("read destination watermarks", e))?;
            by_topic.entry(topic).or_default().push(scan::Range {
                partition: *partition,
                start: *from,
                end: high,
            });
        }
        let source_prefix = format!("{}/", self.replay.source);
        for (topic, ranges) in by_topic {
            scan::read_ranges(&self.consumer, topic, &ranges, |step| {
                if let scan::Step::Record(message) = step {
                    let record = record_from_message(&message)?;
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
                Ok(())
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
fn target_partition(record: &OwnedRecord, info: &DeadLetterInfo, count: i32) -> i32 {
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
fn murmur2(data: &[u8]) -> u32 {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use kafka_ops_core::{Offset, RecordTimestamp};

    use super::*;

    #[test]
    fn murmur2_matches_kafkas_partitioner() {
        // Values from the Java client's `Utils.murmur2` test vectors and its partitioner.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    fn letter(offset: i64) -> OwnedRecord {
        Record::new("orders.dlq", 0, Offset::new(offset).unwrap())
            .with_key(b"k".to_vec())
            .with_value(b"v".to_vec())
            .with_timestamp(RecordTimestamp::CreateTime(Timestamp::from_millis(5_000)))
    }

    use kafka_ops_core::Record;

    fn info() -> DeadLetterInfo {
        DeadLetterInfo {
            format: Some(headers::Format::KafkaOps(1)),
            original_topic: Some("orders".into()),
            original_partition: Some(4),
            error_class: Some(ErrorClass::Permanent),
            error_message: Some("amount 12 is negative".into()),
            last_failure: Some(Timestamp::from_millis(2_000)),
            ..DeadLetterInfo::default()
        }
    }

    #[test]
    fn every_criterion_must_hold() {
        let record = letter(1).with_header("tenant", b"acme".to_vec());
        let all = Selection::default();
        assert!(all.matches(&record, &info()));
        let by = |selection: Selection| selection.matches(&record, &info());
        assert!(by(Selection {
            original_topic: Some("orders".into()),
            error_class: Some(ErrorClass::Permanent),
            fingerprint: Some(fingerprint("amount 99 is negative")),
            since: Some(Timestamp::from_millis(2_000)),
            until: Some(Timestamp::from_millis(2_001)),
            header: Some(HeaderMatch::parse("tenant=acme")),
        }));
        assert!(!by(Selection {
            original_topic: Some("refunds".into()),
            ..Selection::default()
        }));
        assert!(!by(Selection {
            error_class: Some(ErrorClass::Transient),
            ..Selection::default()
        }));
        assert!(!by(Selection {
            fingerprint: Some(fingerprint("unknown currency")),
            ..Selection::default()
        }));
        assert!(!by(Selection {
            since: Some(Timestamp::from_millis(2_001)),
            ..Selection::default()
        }));
        assert!(!by(Selection {
            until: Some(Timestamp::from_millis(2_000)),
            ..Selection::default()
        }));
        assert!(!by(Selection {
            header: Some(HeaderMatch::parse("tenant=other")),
            ..Selection::default()
        }));
        assert!(by(Selection {
            header: Some(HeaderMatch::parse("tenant")),
            ..Selection::default()
        }));
        // Without a failure time the dead letter's own timestamp is used.
        let no_time = DeadLetterInfo {
            last_failure: None,
            ..info()
        };
        assert!(
            Selection {
                since: Some(Timestamp::from_millis(5_000)),
                ..Selection::default()
            }
            .matches(&record, &no_time)
        );
    }

    #[test]
    fn target_partition_keeps_the_original_else_hashes_the_key() {
        assert_eq!(target_partition(&letter(1), &info(), 6), 4);
        let elsewhere = DeadLetterInfo {
            original_partition: Some(9),
            ..info()
        };
        let by_key = target_partition(&letter(1), &elsewhere, 6);
        assert_eq!(by_key, ((murmur2(b"k") & 0x7fff_ffff) % 6) as i32);
        let keyless = Record::new("orders.dlq", 0, Offset::new(7).unwrap());
        assert_eq!(target_partition(&keyless, &elsewhere, 6), 1);
    }

    #[test]
    fn destinations_are_guarded() {
        let into_itself = Replay::new("orders.dlq", "r1")
            .to(Destination::Topic("orders.dlq".into()))
            .allow("orders.dlq");
        assert!(matches!(into_itself.validate(), Err(DlqError::Refused(_))));
        let not_allowed = Replay::new("orders.dlq", "r1").to(Destination::Topic("audit".into()));
        assert!(matches!(not_allowed.validate(), Err(DlqError::Refused(_))));
        let allowed = not_allowed.allow("audit");
        assert!(allowed.validate().is_ok());
        assert!(Replay::new("orders.dlq", "").validate().is_err());
        assert!(
            Replay::new("orders.dlq", "r1")
                .rate_limit(0.0, 1)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn progress_rate_and_eta() {
        let progress = ReplayProgress {
            scanned: 50,
            total: 150,
            replayed: 40,
            elapsed: Duration::from_secs(5),
        };
        assert!((progress.rate() - 10.0).abs() < 1e-9);
        assert_eq!(progress.eta(), Some(Duration::from_secs(10)));
    }
}
