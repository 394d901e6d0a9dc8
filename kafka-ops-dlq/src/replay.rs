//! Replaying dead letters: "fix the root cause → replay".

mod partitioner;
mod pipeline;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafka_ops_core::dead_letter::headers::DeadLetterInfo;
use kafka_ops_core::{Clock, ErrorClass, Record, SystemClock, Timestamp};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::DlqError;
use crate::inspect::pattern_fingerprint;
use crate::rate::TokenBucket;
use run::Run;

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
    /// The error-message fingerprint, as [`inspect`](crate::inspect) reports it
    /// ([`pattern_fingerprint`]: records without a message have one too).
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
    pub fn matches(&self, record: &Record<'_>, info: &DeadLetterInfo) -> bool {
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
            && pattern_fingerprint(info) != *wanted
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

/// Progress, reported at every progress commit.
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
    /// Refused: the dead letter holds only the start of the failed record's value (it was
    /// truncated to fit the dead-letter topic); writing it back would hand its consumers a
    /// corrupted payload. The record stays in the dead-letter topic, with the original size and
    /// digest in its headers, for a manual fix.
    pub refused_truncated: u64,
    /// Offsets of the dead-letter topic removed (retention, a purge) before this run read
    /// them: whatever dead letters they held were never replayed. The run went on from what
    /// was left.
    pub removed_unread: u64,
    /// Written (or, dry, to be written) per destination topic.
    pub by_destination: BTreeMap<String, u64>,
    /// A dry run's first [`Replay::list_limit`] candidates.
    pub candidates: Vec<Candidate>,
}

/// What [`Replay::on_progress`] calls.
pub type ProgressFn = Arc<dyn Fn(&ReplayProgress) + Send + Sync>;

/// Replaying dead letters: "fix the root cause → replay".
///
/// A [`Replay`] reads a dead-letter topic from the offsets it had when the replay first started
/// to the end offsets snapshotted at that moment (records arriving while it runs are left for
/// another replay), selects records ([`Selection`]: original topic, error class, fingerprint,
/// time range, a header), and copies each selected one to its destination with its key, value
/// and application headers, the provenance headers removed and lineage headers
/// ([`lineage`](kafka_ops_core::dead_letter::headers::lineage)) added. Nothing is removed from the dead-letter topic.
///
/// # Resuming without duplicates or gaps
///
/// The replay has its own consumer group, `kafka-ops-replay.<id>`. Records are written without
/// waiting for each acknowledgement; the group's committed offset of each dead-letter partition
/// is the first record not yet known to be stored (acknowledged in order), committed every
/// [`batch_size`](Replay::batch_size) records, after a second of idle reading, and at the end.
/// Before the first write to a destination partition, the replay commits a *note*: the
/// destination partitions it may write to with the offset each had then (or what it had
/// stored there). A replay that crashed finds the note on restart, reads those destination
/// partitions from the noted offsets, and skips every record it finds there with its own
/// replay id; the note is carried forward until the resumed run has passed what it covers, so
/// a second crash is resumed as well: each selected record is written exactly once.
/// The snapshot of end offsets and a digest of the selection ride along in the same commit
/// metadata, so a resumed replay finishes the same work, a replay that finished replays nothing
/// when run again, and a different selection under the same id is refused — unless asked to
/// [start over](Replay::start_over).
///
/// # Guards
///
/// - The destination is the record's original topic, or another topic only if allow-listed;
///   never the dead-letter topic itself.
/// - A record already replayed [`max_replays`](Replay::max_replays) times (its
///   `kafka-ops.replay.count` header) is refused: it keeps failing, and replaying it again would
///   only loop.
/// - The rate is bounded by a [`TokenBucket`](crate::rate::TokenBucket) when asked.
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

impl Replay {
    /// A replay of dead-letter topic `source` named `id` (which names its consumer group):
    /// everything selected, to the original topics, unlimited rate, loop guard at 3 replays,
    /// progress committed every 5 000 records.
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
            batch_size: 5_000,
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

    /// Records written between progress commits (default 5 000): a crashed run resumes at most
    /// this many records back (and writes none of them twice); each commit is one request.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records.max(1);
        self
    }

    /// How many candidates a dry run lists (default 1 000; all are counted).
    pub fn list_limit(mut self, records: usize) -> Self {
        self.list_limit = records;
        self
    }

    /// Called with the progress at every progress commit.
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
        tokio::task::spawn_blocking(move || Run::new(replay, config)?.execute())
            .await
            .map_err(|e| DlqError::Config(format!("replay task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests;
