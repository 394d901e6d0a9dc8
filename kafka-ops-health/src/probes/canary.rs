//! An end-to-end canary: produce sequence-numbered records, read them back, time the trip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use kafka_ops_core::kafka::kafka_error;

use crate::error::HealthError;
use crate::model::{Check, HealthProbe, ProbeKind};

/// The header carrying a canary record's sequence number (decimal).
pub const SEQUENCE_HEADER: &str = "kafka-ops-canary-seq";
/// The header carrying the run id of the probe that wrote it.
pub const RUN_HEADER: &str = "kafka-ops-canary-run";

/// Produces a few sequence-numbered records to a canary topic partition and consumes them back
/// with its own consumer, measuring the round trip and detecting loss (a sequence number never
/// read back) and duplication (one read twice), in the manner of Xinfra Monitor. Every check is
/// bounded by its deadline.
pub struct CanaryProbe {
    producer: FutureProducer,
    consumer: Arc<Mutex<BaseConsumer>>,
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
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .remove("group.id");
        let producer: FutureProducer = producer_config
            .create()
            .map_err(|e| kafka_error("create canary producer", e))?;
        let mut consumer_config = config.clone();
        consumer_config
            .set("group.id", format!("kafka-ops-canary-{run}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // The records are there by the time it fetches: a long fetch wait would only time
            // the broker's idle wait, not the pipeline.
            .set("fetch.wait.max.ms", "10");
        let consumer: BaseConsumer = consumer_config
            .create()
            .map_err(|e| kafka_error("create canary consumer", e))?;
        Ok(CanaryProbe {
            producer,
            consumer: Arc::new(Mutex::new(consumer)),
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

#[async_trait]
impl HealthProbe for CanaryProbe {
    fn name(&self) -> &str {
        "canary"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        let started = Instant::now();
        let until = started + self.deadline;
        let first = self.sequence.fetch_add(self.records, Ordering::SeqCst);
        let expected: Vec<u64> = (first..first + self.records).collect();
        let mut first_offset: Option<i64> = None;
        for seq in &expected {
            let seq_text = seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: SEQUENCE_HEADER,
                    value: Some(seq_text.as_bytes()),
                })
                .insert(Header {
                    key: RUN_HEADER,
                    value: Some(self.run.as_bytes()),
                });
            let record = FutureRecord::to(&self.topic)
                .partition(self.partition)
                .key(self.run.as_bytes())
                .payload(seq_text.as_bytes())
                .headers(headers);
            // The send's own timeout bounds only the enqueue; the deadline bounds the delivery.
            let remaining = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.producer.send(record, remaining)).await {
                Ok(Ok(delivery)) => {
                    first_offset =
                        Some(first_offset.map_or(delivery.offset, |o| o.min(delivery.offset)));
                }
                Ok(Err((error, _))) => {
                    return Ok(Check::unhealthy(format!(
                        "canary produce to {} failed: {error}",
                        self.topic
                    )));
                }
                Err(_) => {
                    return Ok(Check::unhealthy(format!(
                        "canary record to {} not acknowledged within {:?}",
                        self.topic, self.deadline
                    )));
                }
            }
        }
        let Some(from) = first_offset else {
            return Err(canary_error("produce", "no record was acknowledged"));
        };
        let produced_in = started.elapsed();
        let consumer = self.consumer.clone();
        let (topic, partition, run) = (self.topic.clone(), self.partition, self.run.clone());
        let wanted: std::collections::BTreeSet<u64> = expected.iter().copied().collect();
        let round = tokio::task::spawn_blocking(move || -> Result<Round, HealthError> {
            let consumer = consumer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&topic, partition, rdkafka::Offset::Offset(from))
                .map_err(|e| canary_error("assign", e))?;
            consumer
                .assign(&assignment)
                .map_err(|e| canary_error("assign", e))?;
            let mut round = Round::default();
            // Read until every sequence number came back and a short grace passed (to catch a
            // duplicate right behind), or the deadline.
            let mut complete_at: Option<Instant> = None;
            loop {
                let now = Instant::now();
                if now >= until || complete_at.is_some_and(|at| now >= at) {
                    break;
                }
                let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let message = message.map_err(|e| canary_error("consume", e))?;
                let Some(headers) = message.headers() else {
                    continue;
                };
                let mut seq = None;
                let mut ours = false;
                for header in headers.iter() {
                    match header.key {
                        SEQUENCE_HEADER => {
                            seq = header
                                .value
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(|v| v.parse::<u64>().ok());
                        }
                        RUN_HEADER => ours = header.value == Some(run.as_bytes()),
                        _ => {}
                    }
                }
                if let (true, Some(seq)) = (ours, seq) {
                    *round.seen.entry(seq).or_default() += 1;
                    if complete_at.is_none() && wanted.iter().all(|s| round.seen.contains_key(s)) {
                        complete_at = Some(Instant::now() + Duration::from_millis(100));
                    }
                }
            }
            let _ = consumer.unassign();
            Ok(round)
        })
        .await
        .map_err(|e| canary_error("consume", e))??;
        let round_trip = started.elapsed();
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
                "{} of {} canary records not read back within {:?}",
                lost.len(),
                expected.len(),
                self.deadline
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
            .with_detail("produced_ms", produced_in.as_millis() as u64)
            .with_detail("round_trip_ms", round_trip.as_millis() as u64)
            .with_detail("lost", lost)
            .with_detail("duplicated", duplicated))
    }
}
