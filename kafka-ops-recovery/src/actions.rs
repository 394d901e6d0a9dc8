//! Built-in recovery actions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::kafka::{commit_group_offsets, kafka_error, record_from_message};
use kafka_ops_core::{ConsumerControl, Offset, OwnedRecord, TopicPartition};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::engine::{Anomaly, Monitor, RecoveryAction};
use crate::error::RecoveryError;
use crate::offsets::{MembershipCheck, OffsetOps, ResetTarget};

fn failed(action: &str, reason: impl Into<String>) -> RecoveryError {
    RecoveryError::ActionFailed {
        action: action.to_string(),
        reason: reason.into(),
    }
}

/// A future a restart hook returns.
pub type RestartFuture = Pin<Box<dyn Future<Output = Result<(), RecoveryError>> + Send>>;

/// Restarts a consumer through a hook the application provides (stop the driver, build a new
/// one, start it).
pub struct RestartConsumer {
    restart: Arc<dyn Fn() -> RestartFuture + Send + Sync>,
}

impl fmt::Debug for RestartConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestartConsumer")
    }
}

impl RestartConsumer {
    /// An action calling `restart`.
    pub fn new(restart: impl Fn() -> RestartFuture + Send + Sync + 'static) -> Self {
        RestartConsumer {
            restart: Arc::new(restart),
        }
    }
}

#[async_trait]
impl RecoveryAction for RestartConsumer {
    fn name(&self) -> &str {
        "restart_consumer"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        (self.restart)().await?;
        Ok("consumer restarted".into())
    }
}

/// Pauses (or resumes) a consumer's fetching through its handle.
pub struct SetConsumerPaused {
    control: Arc<dyn ConsumerControl>,
    pause: bool,
}

impl fmt::Debug for SetConsumerPaused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetConsumerPaused")
            .field("pause", &self.pause)
            .finish()
    }
}

impl SetConsumerPaused {
    /// Pauses `control`'s consumer.
    pub fn pause(control: Arc<dyn ConsumerControl>) -> Self {
        SetConsumerPaused {
            control,
            pause: true,
        }
    }

    /// Resumes `control`'s consumer.
    pub fn resume(control: Arc<dyn ConsumerControl>) -> Self {
        SetConsumerPaused {
            control,
            pause: false,
        }
    }
}

#[async_trait]
impl RecoveryAction for SetConsumerPaused {
    fn name(&self) -> &str {
        if self.pause {
            "pause_consumer"
        } else {
            "resume_consumer"
        }
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        if self.pause {
            self.control.pause();
        } else {
            self.control.resume();
        }
        // The poll loop applies it on its next turn; give it a moment and check.
        for _ in 0..50 {
            if self.control.is_paused() == self.pause {
                return Ok(if self.pause {
                    "consumer paused"
                } else {
                    "consumer resumed"
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(failed(
            self.name(),
            "the consumer did not apply it within 1 s",
        ))
    }
}

/// Where a poison record goes before the group commits past it.
#[async_trait]
pub trait PoisonRecordSink: Send + Sync {
    /// Stores `record` durably (a dead-letter topic); returns after it is stored.
    async fn store(&self, record: &OwnedRecord, reason: &str) -> Result<(), RecoveryError>;
}

/// Writes poison records to `<topic><suffix>` (`orders.dlq`) with an idempotent, `acks=all`
/// producer, keeping key, value, headers and timestamp, and adding where it came from and why.
/// (The dead-letter crate's sink adds the full provenance header set; this one needs only core.)
pub struct KafkaPoisonSink {
    producer: rdkafka::producer::FutureProducer,
    suffix: String,
}

impl fmt::Debug for KafkaPoisonSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPoisonSink")
            .field("suffix", &self.suffix)
            .finish()
    }
}

impl KafkaPoisonSink {
    /// A sink producing through `client_config` to the record's topic plus `suffix`.
    pub fn new(
        client_config: &ClientConfig,
        suffix: impl Into<String>,
    ) -> Result<Self, RecoveryError> {
        let mut config = client_config.clone();
        config
            .remove("group.id")
            .set("enable.idempotence", "true")
            .set("acks", "all");
        let producer = config
            .create()
            .map_err(|e| kafka_error("create poison sink", e))?;
        Ok(KafkaPoisonSink {
            producer,
            suffix: suffix.into(),
        })
    }
}

#[async_trait]
impl PoisonRecordSink for KafkaPoisonSink {
    async fn store(&self, record: &OwnedRecord, reason: &str) -> Result<(), RecoveryError> {
        use rdkafka::message::Header;
        let topic = format!("{}{}", record.topic, self.suffix);
        let (partition, offset) = (record.partition.to_string(), record.offset.to_string());
        let headers = kafka_ops_core::kafka::owned_headers(&record.headers)
            .insert(Header {
                key: "kafka-ops.poison.topic",
                value: Some(record.topic.as_bytes()),
            })
            .insert(Header {
                key: "kafka-ops.poison.partition",
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: "kafka-ops.poison.offset",
                value: Some(offset.as_bytes()),
            })
            .insert(Header {
                key: "kafka-ops.poison.reason",
                value: Some(reason.as_bytes()),
            });
        let mut out = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.value() {
            out = out.payload(value);
        }
        if let Some(time) = record.timestamp.time() {
            out = out.timestamp(time.as_millis());
        }
        self.producer
            .send(out, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| RecoveryError::from(kafka_error("store poison record", e)))?;
        Ok(())
    }
}

/// Skips a poison record: reads it, hands it to a [`PoisonRecordSink`] (the dead-letter topic),
/// and commits the group past it. The anomaly's details name it:
/// `{"group": .., "topic": .., "partition": .., "offset": ..}`.
pub struct SkipPoisonRecord {
    client_config: ClientConfig,
    sink: Arc<dyn PoisonRecordSink>,
}

impl fmt::Debug for SkipPoisonRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SkipPoisonRecord")
    }
}

impl SkipPoisonRecord {
    /// An action reading through `client_config` and storing into `sink`.
    pub fn new(client_config: ClientConfig, sink: Arc<dyn PoisonRecordSink>) -> Self {
        SkipPoisonRecord {
            client_config,
            sink,
        }
    }

    async fn read(
        &self,
        tp: &TopicPartition,
        offset: Offset,
    ) -> Result<OwnedRecord, RecoveryError> {
        let mut config = self.client_config.clone();
        config
            .set("group.id", "kafka-ops-poison-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let tp = tp.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config
                .create()
                .map_err(|e| kafka_error("create poison reader", e))?;
            let mut list = rdkafka::TopicPartitionList::new();
            list.add_partition_offset(
                &tp.topic,
                tp.partition,
                rdkafka::Offset::Offset(offset.get()),
            )
            .map_err(|e| kafka_error("assign", e))?;
            consumer
                .assign(&list)
                .map_err(|e| kafka_error("assign", e))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) if message.offset() == offset.get() => {
                        return Ok(record_from_message(&message)?.into_owned());
                    }
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                    Some(Err(error)) => {
                        return Err(RecoveryError::from(kafka_error(
                            "read poison record",
                            error,
                        )));
                    }
                    _ => {}
                }
            }
            Err(failed(
                "skip_poison_record",
                format!("no record at {tp}@{offset}"),
            ))
        })
        .await
        .map_err(|e| failed("skip_poison_record", e.to_string()))?
    }
}

use rdkafka::Message as _;

#[async_trait]
impl RecoveryAction for SkipPoisonRecord {
    fn name(&self) -> &str {
        "skip_poison_record"
    }
    async fn execute(&self, anomaly: &Anomaly) -> Result<String, RecoveryError> {
        let d = &anomaly.details;
        let (Some(group), Some(topic), Some(partition), Some(offset)) = (
            d["group"].as_str(),
            d["topic"].as_str(),
            d["partition"].as_i64().and_then(|p| i32::try_from(p).ok()),
            d["offset"].as_i64(),
        ) else {
            return Err(failed(
                self.name(),
                format!("the anomaly does not name a record: {d}"),
            ));
        };
        let tp = TopicPartition::new(topic, partition);
        let offset = Offset::new(offset)?;
        let record = self.read(&tp, offset).await?;
        self.sink.store(&record, &anomaly.message).await?;
        let mut config = self.client_config.clone();
        config.set("group.id", group);
        commit_group_offsets(&config, &[(tp.clone(), Offset::new(offset.get() + 1)?)]).await?;
        Ok(format!(
            "{tp}@{offset} dead-lettered; {group} committed past it"
        ))
    }
}

/// Resets a group's offsets (the group must be idle).
#[derive(Debug)]
pub struct ResetOffsets {
    ops: OffsetOps,
    group: String,
    topics: Vec<String>,
    target: ResetTarget,
    check: MembershipCheck,
}

impl ResetOffsets {
    /// Resets `group` on `topics` to `target`.
    pub fn new(
        ops: OffsetOps,
        group: impl Into<String>,
        topics: Vec<String>,
        target: ResetTarget,
        check: MembershipCheck,
    ) -> Self {
        ResetOffsets {
            ops,
            group: group.into(),
            topics,
            target,
            check,
        }
    }
}

#[async_trait]
impl RecoveryAction for ResetOffsets {
    fn name(&self) -> &str {
        "reset_offsets"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        let plan = self
            .ops
            .plan_reset(&self.group, &self.topics, &[], self.target)
            .await?;
        self.ops.apply(&plan, self.check).await?;
        Ok(format!(
            "{} reset to {} on {} partitions",
            self.group,
            self.target,
            plan.changes.len()
        ))
    }
}

/// Waits, then asks the monitor again: succeeds when the anomaly is gone (runbook: "wait and
/// re-check" before doing anything drastic).
pub struct WaitAndRecheck {
    wait: Duration,
    monitor: Arc<dyn Monitor>,
}

impl fmt::Debug for WaitAndRecheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitAndRecheck")
            .field("wait", &self.wait)
            .finish()
    }
}

impl WaitAndRecheck {
    /// Waits `wait`, then re-runs `monitor`.
    pub fn new(wait: Duration, monitor: Arc<dyn Monitor>) -> Self {
        WaitAndRecheck { wait, monitor }
    }
}

#[async_trait]
impl RecoveryAction for WaitAndRecheck {
    fn name(&self) -> &str {
        "wait_and_recheck"
    }
    async fn execute(&self, anomaly: &Anomaly) -> Result<String, RecoveryError> {
        tokio::time::sleep(self.wait).await;
        let signals = self.monitor.observe().await?;
        match signals.iter().find(|s| s.key == anomaly.key) {
            Some(signal) if signal.anomalous => Err(failed(
                self.name(),
                format!("still anomalous: {}", signal.message),
            )),
            _ => Ok(format!("gone after {:?}", self.wait)),
        }
    }
}
