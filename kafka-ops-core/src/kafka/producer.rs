//! [`AckedProducer`]: the one producer every kafka-ops write goes through.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::dead_letter::Delivered;
use crate::error::Error;
use crate::kafka::{kafka_error, owned_headers};
use crate::record::Headers;
use crate::types::Timestamp;

/// What to write: a record by reference.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Target topic.
    pub topic: &'a str,
    /// Target partition; `None` lets the partitioner choose (by key).
    pub partition: Option<i32>,
    /// Key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a Headers<'a>,
    /// Create-time timestamp; `None` for the producer's clock.
    pub timestamp: Option<Timestamp>,
}

/// Writes records so that an acknowledged one is stored on every in-sync replica and written
/// once: idempotent, `acks=all`, a bounded delivery timeout, batched briefly (`linger.ms=5`
/// unless the configuration sets it). Consumer settings in the configuration it is made from
/// are dropped, SASL/TLS settings pass through.
///
/// [`send`](Self::send) enqueues and returns the acknowledgement to await, so callers keep many
/// records in flight; a full local queue is waited out, never reported as a failure. Dropping
/// the producer purges what is still queued: [`flush`](Self::flush) first.
pub struct AckedProducer {
    producer: FutureProducer,
    delivery_timeout: Duration,
    max_record_bytes: usize,
}

impl fmt::Debug for AckedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckedProducer")
            .field("delivery_timeout", &self.delivery_timeout)
            .field("max_record_bytes", &self.max_record_bytes)
            .finish()
    }
}

/// Consumer-only settings a producer must not be given (librdkafka warns about each).
const CONSUMER_SETTINGS: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "isolation.level",
    "enable.partition.eof",
    "partition.assignment.strategy",
    "fetch.wait.max.ms",
    "topic.metadata.refresh.interval.ms",
];

impl AckedProducer {
    /// A producer for the cluster `client_config` points at. `delivery.timeout.ms` (default
    /// 30 s) bounds each acknowledgement; `message.max.bytes` (default 1 000 000) is the
    /// largest record it accepts.
    pub fn new(client_config: &ClientConfig) -> Result<Self, Error> {
        let mut config = client_config.clone();
        for key in CONSUMER_SETTINGS {
            config.remove(key);
        }
        config.set("enable.idempotence", "true").set("acks", "all");
        if config.get("linger.ms").is_none() {
            config.set("linger.ms", "5");
        }
        let delivery_timeout = Duration::from_millis(
            config
                .get("delivery.timeout.ms")
                .or_else(|| config.get("message.timeout.ms"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
        );
        config.remove("message.timeout.ms").set(
            "delivery.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
        let max_record_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let producer = config
            .create()
            .map_err(|e| kafka_error("create producer", e))?;
        Ok(AckedProducer {
            producer,
            delivery_timeout,
            max_record_bytes,
        })
    }

    /// The largest record it accepts, in bytes.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// How long the producer tries before an acknowledgement fails.
    pub fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    /// Enqueues `record` and returns its acknowledgement: where it was stored, or
    /// [`Error::NotAcknowledged`] once the producer gave up. Blocks (briefly, serving
    /// deliveries) while the local queue is full; call from a blocking thread when that matters,
    /// or await acknowledgements as they come.
    pub fn send(
        &self,
        record: Outgoing<'_>,
    ) -> Result<impl Future<Output = Result<Delivered, Error>> + Send + use<>, Error> {
        let mut out =
            FutureRecord::<[u8], [u8]>::to(record.topic).headers(owned_headers(record.headers));
        if let Some(partition) = record.partition {
            out = out.partition(partition);
        }
        if let Some(key) = record.key {
            out = out.key(key);
        }
        if let Some(value) = record.value {
            out = out.payload(value);
        }
        if let Some(time) = record.timestamp {
            out = out.timestamp(time.as_millis());
        }
        let delivery = loop {
            match self.producer.send_result(out) {
                Ok(delivery) => break delivery,
                Err((error, back))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    // The local queue is full: let deliveries drain, then enqueue again.
                    self.producer.poll(Duration::from_millis(10));
                    out = back;
                }
                Err((error, _)) => return Err(kafka_error("produce", error)),
            }
        };
        Ok(acknowledged(record.topic.to_string(), delivery))
    }

    /// Sends `record` and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: Outgoing<'_>) -> Result<Delivered, Error> {
        self.send(record)?.await
    }

    /// Waits (up to `timeout`) until every record sent so far is acknowledged or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer
            .flush(timeout)
            .map_err(|e| kafka_error("flush producer", e))
    }

    /// The partition count of `topic` as the cluster's metadata gives it (`None` when the
    /// topic does not exist or the metadata cannot be read within `timeout`). Blocking.
    pub fn partition_count(&self, topic: &str, timeout: Duration) -> Option<i32> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .ok()?;
        let topic = metadata.topics().first()?;
        if topic.error().is_some() || topic.partitions().is_empty() {
            return None;
        }
        i32::try_from(topic.partitions().len()).ok()
    }
}

async fn acknowledged(topic: String, delivery: DeliveryFuture) -> Result<Delivered, Error> {
    match delivery.await {
        Ok(Ok(delivered)) => Ok(Delivered {
            partition: delivered.partition,
            offset: delivered.offset,
        }),
        Ok(Err((error, _))) => Err(Error::NotAcknowledged {
            topic,
            source: Box::new(kafka_error("produce", error)),
        }),
        Err(_cancelled) => Err(Error::NotAcknowledged {
            topic,
            source: "the producer went away before acknowledging".into(),
        }),
    }
}
