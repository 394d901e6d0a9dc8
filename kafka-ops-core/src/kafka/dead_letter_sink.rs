//! [`KafkaDeadLetterSink`]: dead letters to Kafka, acknowledged before the source may move on.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Delivered};
use crate::error::Error;
use crate::kafka::producer::{AckedProducer, Outgoing};

/// Writes dead letters through an [`AckedProducer`] (idempotent, `acks=all`), so an
/// acknowledged dead letter survives a broker loss and a retried send is not written twice.
pub struct KafkaDeadLetterSink {
    producer: Arc<AckedProducer>,
    /// Partition counts by topic, refreshed every minute.
    partitions: Mutex<HashMap<String, (Option<i32>, Instant)>>,
}

impl fmt::Debug for KafkaDeadLetterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDeadLetterSink")
            .field("producer", &self.producer)
            .finish()
    }
}

const PARTITIONS_FRESH_FOR: Duration = Duration::from_secs(60);

impl KafkaDeadLetterSink {
    /// A sink producing through `client_config` (bootstrap, security; see [`AckedProducer`]
    /// for the settings it makes safe). `message.max.bytes` is read from the configuration
    /// (librdkafka's default, 1 000 000, when unset).
    pub fn new(client_config: &ClientConfig) -> Result<Self, Error> {
        Ok(KafkaDeadLetterSink {
            producer: Arc::new(AckedProducer::new(client_config)?),
            partitions: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for every dead letter in flight (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer.flush(timeout)
    }
}

#[async_trait]
impl DeadLetterSink for KafkaDeadLetterSink {
    async fn send(&self, letter: &DeadLetter) -> Result<Delivered, Error> {
        // The producer retries within its delivery timeout; its answer is final.
        let delivered = self
            .producer
            .send_and_wait(Outgoing {
                topic: &letter.topic,
                partition: letter.partition,
                key: letter.key.as_deref(),
                value: letter.value.as_deref(),
                headers: &letter.headers,
                timestamp: letter.timestamp,
            })
            .await?;
        metrics::counter!("kafka_ops_dlq_routed_total", "topic" => letter.topic.clone())
            .increment(1);
        Ok(delivered)
    }

    async fn partitions(&self, topic: &str) -> Option<i32> {
        {
            let cache = self
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((count, at)) = cache.get(topic)
                && at.elapsed() < PARTITIONS_FRESH_FOR
            {
                return *count;
            }
        }
        let producer = self.producer.clone();
        let name = topic.to_string();
        // Metadata calls block: off the async workers.
        let count = tokio::task::spawn_blocking(move || {
            producer.partition_count(&name, Duration::from_secs(5))
        })
        .await
        .ok()
        .flatten();
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_string(), (count, Instant::now()));
        count
    }

    fn max_record_bytes(&self) -> usize {
        self.producer.max_record_bytes()
    }
}
