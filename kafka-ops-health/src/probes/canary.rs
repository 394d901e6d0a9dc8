//! An end-to-end canary: produce sequence-numbered records, read them back, time the trip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kafka_ops_core::Headers;
use kafka_ops_core::kafka::{AckedProducer, Outgoing, Range, RangeReader, Step};
use rdkafka::ClientConfig;

use crate::error::HealthError;
use crate::model::{Check, HealthProbe, ProbeKind};

/// The header carrying a canary record's sequence number (decimal).
pub const SEQUENCE_HEADER: &str = "kafka-ops-canary-seq";
/// The header carrying the run id of the probe that wrote it.
pub const RUN_HEADER: &str = "kafka-ops-canary-run";

/// Produces a few sequence-numbered records to a canary topic partition and consumes them back
/// with its own consumer, measuring the round trip and detecting loss (a sequence number
/// acknowledged but never read back, including records the log no longer starts at) and
/// duplication (one read twice), in the manner of Xinfra Monitor. Every check is bounded by its
/// deadline.
pub struct CanaryProbe {
    producer: AckedProducer,
    reader: Arc<Mutex<RangeReader>>,
    topic: String,
    partition: i32,
    records: u64,
    deadline: Duration,
    run: String,
    sequence: AtomicU64,
    kind: ProbeKind,
}

impl std::fmt::Debug for CanaryProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanaryProbe")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("records", &self.records)
            .field("deadline", &self.deadline)
            .finish()
    }
}

fn canary_error(
    operation: &'static str,
    error: impl Into<kafka_ops_core::BoxError>,
) -> HealthError {
    HealthError::Canary {
        operation,
        source: error.into(),
    }
}

impl CanaryProbe {
    /// A canary on partition 0 of `topic`, with clients made from `config` (bootstrap servers,
    /// SASL and TLS settings; a `group.id` of its own is set). Three records per check, 10 s
    /// deadline.
    pub fn new(config: &ClientConfig, topic: impl Into<String>) -> Result<Self, HealthError> {
        let run = format!(
            "{}-{}",
            std::process::id(),
            kafka_ops_core::Timestamp::from_system_time(std::time::SystemTime::now()).as_millis()
        );
        let mut producer_config = config.clone();
        producer_config
            .set("linger.ms", "0")
            .set("delivery.timeout.ms", "10000");
        let producer = AckedProducer::new(&producer_config)?;
        let mut reader_config = config.clone();
        // The records are there by the time it fetches: a long fetch wait would only time the
        // broker's idle wait, not the pipeline.
        reader_config.set("fetch.wait.max.ms", "10");
        let reader = RangeReader::with_group(&reader_config, &format!("kafka-ops-canary-{run}"))?;
        Ok(CanaryProbe {
            producer,
            reader: Arc::new(Mutex::new(reader)),
            topic: topic.into(),
            partition: 0,
            records: 3,
            deadline: Duration::from_secs(10),
            run,
            sequence: AtomicU64::new(0),
            kind: ProbeKind::Informational,
        })
    }

    /// Records per check.
    pub fn with_records(mut self, records: u64) -> Self {
        self.records = records.max(1);
        self
    }

    /// The longest a check may take.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Another partition of the canary topic.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

/// What a canary round found.
#[derive(Debug, Default)]
struct Round {
    seen: BTreeMap<u64, u32>,
}

/// A round whose records were all acknowledged, to be read back.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The sequence numbers written, in order.
    pub(crate) expected: Vec<u64>,
    /// The lowest offset acknowledged: the read starts there.
    pub(crate) from: i64,
    started: Instant,
    until: Instant,
    produced_in: Duration,
}

impl CanaryProbe {
    /// Writes this round's records, each awaited: the round's sequence numbers and where they
    /// start, or the verdict when one was not acknowledged in time.
    pub(crate) async fn send(&self) -> Result<Sent, Check> {
        let started = Instant::now();
        let until = started + self.deadline;
        let first = self.sequence.fetch_add(self.records, Ordering::SeqCst);
        let expected: Vec<u64> = (first..first + self.records).collect();
        let mut first_offset: Option<i64> = None;
        for seq in &expected {
            let seq_text = seq.to_string();
            let mut headers = Headers::new();
            headers.push(SEQUENCE_HEADER, Some(seq_text.as_bytes().to_vec()));
            headers.push(RUN_HEADER, Some(self.run.as_bytes().to_vec()));
            let record = Outgoing {
                topic: &self.topic,
                partition: Some(self.partition),
                key: Some(self.run.as_bytes()),
                value: Some(seq_text.as_bytes()),
                headers: &headers,
                timestamp: None,
            };
            // The producer's delivery timeout bounds the acknowledgement; the deadline bounds
            // the whole check.
            let remaining = until.saturating_duration_since(Instant::now());
            let acknowledgement = self.producer.send(record).map_err(|error| {
                Check::unhealthy(format!(
                    "canary produce to {} failed: {}",
                    self.topic,
                    error.describe()
                ))
            })?;
            match tokio::time::timeout(remaining, acknowledgement).await {
                Ok(Ok(delivery)) => {
                    first_offset =
                        Some(first_offset.map_or(delivery.offset, |o| o.min(delivery.offset)));
                }
                Ok(Err(error)) => {
                    return Err(Check::unhealthy(format!(
                        "canary produce to {} failed: {}",
                        self.topic,
                        error.describe()
                    )));
                }
                Err(_) => {
                    return Err(Check::unhealthy(format!(
                        "canary record to {} not acknowledged within {:?}",
                        self.topic, self.deadline
                    )));
                }
            }
        }
        let Some(from) = first_offset else {
            return Err(Check::unhealthy("no canary record was acknowledged"));
        };
        Ok(Sent {
            expected,
            from,
            started,
            until,
            produced_in: started.elapsed(),
        })
    }

    /// Reads the partition from the round's first acknowledged offset to its end now (the
    /// round's records and any copy written after them) and judges: a sequence number not read
    /// back is lost, one read more than once duplicated.
    pub(crate) async fn read_back(&self, sent: Sent) -> Result<Check, HealthError> {
        let reader = self.reader.clone();
        let (topic, partition, run) = (self.topic.clone(), self.partition, self.run.clone());
        let from = sent.from;
        let read = tokio::task::spawn_blocking(move || -> Result<Round, HealthError> {
            let reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
            // Everything written up to now: the records acknowledged, and any copy of them.
            let (low, end) = reader.watermarks(&topic, partition)?;
            let mut round = Round::default();
            // Acknowledged records the log no longer starts at (deleted, or gone with an
            // unclean election) are lost: the read starts at the log start.
            let range = Range {
                partition,
                start: from.max(low),
                end,
            };
            reader.read(&topic, &[range], |step| {
                if let Step::Record(record) = step {
                    let ours = record.headers.get_bytes(RUN_HEADER) == Some(run.as_bytes());
                    let seq = record
                        .headers
                        .get_str(SEQUENCE_HEADER)
                        .ok()
                        .flatten()
                        .and_then(|v| v.parse::<u64>().ok());
                    if let (true, Some(seq)) = (ours, seq) {
                        *round.seen.entry(seq).or_default() += 1;
                    }
                }
                Ok::<(), HealthError>(())
            })?;
            Ok(round)
        });
        let remaining = sent.until.saturating_duration_since(Instant::now());
        let round = match tokio::time::timeout(remaining, read).await {
            Ok(round) => round.map_err(|e| canary_error("consume", e))??,
            Err(_) => {
                return Ok(Check::unhealthy(format!(
                    "canary records from {} not read back within {:?}",
                    self.topic, self.deadline
                )));
            }
        };
        let round_trip = sent.started.elapsed();
        let expected = &sent.expected;
        let lost: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|s| !round.seen.contains_key(s))
            .collect();
        let duplicated: Vec<u64> = round
            .seen
            .iter()
            .filter(|(s, n)| **n > 1 && expected.contains(s))
            .map(|(s, _)| *s)
            .collect();
        let check = if !lost.is_empty() {
            Check::unhealthy(format!(
                "{} of {} canary records acknowledged but not read back",
                lost.len(),
                expected.len(),
            ))
        } else if !duplicated.is_empty() {
            Check::degraded(format!("{} canary records read twice", duplicated.len()))
        } else {
            Check::healthy(format!(
                "{} canary records round trip in {round_trip:?}",
                expected.len()
            ))
        };
        Ok(check
            .with_detail("topic", self.topic.clone())
            .with_detail("partition", self.partition)
            .with_detail("produced_ms", sent.produced_in.as_millis() as u64)
            .with_detail("round_trip_ms", round_trip.as_millis() as u64)
            .with_detail("lost", lost)
            .with_detail("duplicated", duplicated))
    }
}

#[async_trait]
impl HealthProbe for CanaryProbe {
    fn name(&self) -> &str {
        "canary"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        match self.send().await {
            Ok(sent) => self.read_back(sent).await,
            Err(verdict) => Ok(verdict),
        }
    }
}

#[cfg(test)]
mod tests;
