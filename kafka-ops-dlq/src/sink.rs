//! Where dead-letter records are written.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kafka_ops_core::kafka::{kafka_error, owned_headers};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::envelope::DeadLetter;
use crate::error::DlqError;

/// Where a dead letter landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Stores dead-letter records durably. Object-safe.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Writes `letter`; returns only once it is stored (for Kafka: acknowledged by every
    /// in-sync replica).
    async fn send(&self, letter: &DeadLetter) -> Result<Delivered, DlqError>;

    /// The partition count of `topic`, when the sink can tell (for the same-partition
    /// strategy); `None` lets the producer choose.
    async fn partitions(&self, topic: &str) -> Option<i32> {
        let _ = topic;
        None
    }

    /// The largest record the sink accepts, in bytes.
    fn max_record_bytes(&self) -> usize;
}

/// Writes to Kafka with an idempotent producer and `acks=all`, so an acknowledged dead letter
/// survives a broker loss and a retried send is not written twice.
pub struct KafkaDeadLetterSink {
    producer: FutureProducer,
    max_record_bytes: usize,
    delivery_timeout: Duration,
    /// Partition counts by topic, refreshed every minute.
    partitions: Mutex<HashMap<String, (Option<i32>, Instant)>>,
}

impl fmt::Debug for KafkaDeadLetterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDeadLetterSink")
            .field("max_record_bytes", &self.max_record_bytes)
            .field("delivery_timeout", &self.delivery_timeout)
            .finish()
    }
}

const PARTITIONS_FRESH_FOR: Duration = Duration::from_secs(60);

impl KafkaDeadLetterSink {
    /// A sink producing through `client_config` (bootstrap, security); the producer settings
    /// that make it safe are set here. `message.max.bytes` is read from the configuration
    /// (librdkafka's default, 1 000 000, when unset).
    pub fn new(client_config: &ClientConfig) -> Result<Self, DlqError> {
        let mut config = client_config.clone();
        config
            .remove("group.id")
            .remove("enable.auto.commit")
            .remove("auto.offset.reset")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        let max_record_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let delivery_timeout = Duration::from_millis(
            config
                .get("delivery.timeout.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
        );
        config.set(
            "delivery.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
        let producer = config
            .create()
            .map_err(|e| kafka_error("create dead-letter producer", e))?;
        Ok(KafkaDeadLetterSink {
            producer,
            max_record_bytes,
            delivery_timeout,
            partitions: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for every dead letter in flight (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), DlqError> {
        self.producer
            .flush(timeout)
            .map_err(|e| kafka_error("flush dead-letter producer", e).into())
    }
}

#[async_trait]
impl DeadLetterSink for KafkaDeadLetterSink {
    async fn send(&self, letter: &DeadLetter) -> Result<Delivered, DlqError> {
        let mut out =
            FutureRecord::<[u8], [u8]>::to(&letter.topic).headers(owned_headers(&letter.headers));
        if let Some(partition) = letter.partition {
            out = out.partition(partition);
        }
        if let Some(key) = &letter.key {
            out = out.key(key);
        }
        if let Some(value) = &letter.value {
            out = out.payload(value);
        }
        if let Some(time) = letter.timestamp {
            out = out.timestamp(time.as_millis());
        }
        // The producer retries within delivery.timeout.ms; its answer is final.
        let delivery = self
            .producer
            .send(out, self.delivery_timeout)
            .await
            .map_err(|(e, _)| DlqError::NotAcknowledged {
                topic: letter.topic.clone(),
                source: Box::new(kafka_error("produce dead letter", e)),
            })?;
        metrics::counter!("kafka_ops_dlq_routed_total", "topic" => letter.topic.clone())
            .increment(1);
        Ok(Delivered {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    async fn partitions(&self, topic: &str) -> Option<i32> {
        {
            let cache = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((count, at)) = cache.get(topic)
                && at.elapsed() < PARTITIONS_FRESH_FOR
            {
                return *count;
            }
        }
        let client = self.producer.clone();
        let name = topic.to_string();
        // Metadata calls block: off the async workers.
        let count = tokio::task::spawn_blocking(move || {
            let metadata = client
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .ok()?;
            let topic = metadata.topics().first()?;
            if topic.error().is_some() || topic.partitions().is_empty() {
                return None;
            }
            i32::try_from(topic.partitions().len()).ok()
        })
        .await
        .ok()
        .flatten();
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.to_string(), (count, Instant::now()));
        count
    }

    fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }
}
