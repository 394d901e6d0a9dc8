//! Building the dead-letter record: target topic and partition, the original bytes, the
//! provenance headers, and what happens when it would be too large.

use std::fmt;
use std::sync::Arc;

use crate::error::Error;
use crate::handler::HandlerError;
use crate::{Clock, Headers, Record, RecordTimestamp, Timestamp};

use super::headers::{self, Provenance};
use super::retry::{self, RetryState};

/// How a source topic's dead-letter topic is named.
#[derive(Clone)]
pub enum TopicNaming {
    /// `<topic><suffix>`; the default is `.dlq` (`orders.dlq`).
    Suffix(String),
    /// One topic for every source.
    Fixed(String),
    /// Your own rule.
    Custom(Arc<dyn Fn(&str) -> String + Send + Sync>),
}

impl TopicNaming {
    /// `<topic>.dlq`, the default.
    pub fn dlq() -> Self {
        TopicNaming::Suffix(".dlq".into())
    }

    /// Spring Kafka's `<topic>-dlt`, for sharing dead-letter topics with Spring consumers.
    pub fn spring() -> Self {
        TopicNaming::Suffix("-dlt".into())
    }

    /// The dead-letter topic for `source`.
    pub fn target(&self, source: &str) -> String {
        match self {
            TopicNaming::Suffix(suffix) => format!("{source}{suffix}"),
            TopicNaming::Fixed(topic) => topic.clone(),
            TopicNaming::Custom(rule) => rule(source),
        }
    }
}

impl Default for TopicNaming {
    fn default() -> Self {
        Self::dlq()
    }
}

impl fmt::Debug for TopicNaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicNaming::Suffix(suffix) => write!(f, "Suffix({suffix:?})"),
            TopicNaming::Fixed(topic) => write!(f, "Fixed({topic:?})"),
            TopicNaming::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Which dead-letter partition a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionStrategy {
    /// The source partition's number when the dead-letter topic has it; otherwise by key, or
    /// the producer's choice for a null key. The default: ordering per source partition holds.
    #[default]
    SameOrByKey,
    /// By key (the producer's partitioner), or its choice for a null key.
    ByKey,
}

impl PartitionStrategy {
    /// The partition to write to, given the source partition and the dead-letter topic's
    /// partition count (`None`: unknown); `None` leaves it to the producer's partitioner.
    pub fn choose(self, source_partition: i32, target_partitions: Option<i32>) -> Option<i32> {
        match self {
            PartitionStrategy::SameOrByKey => {
                target_partitions.filter(|count| source_partition < *count)?;
                Some(source_partition)
            }
            PartitionStrategy::ByKey => None,
        }
    }
}

/// How much of the error goes into the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausePolicy {
    /// Causes kept, outermost first (0: no cause chain, for data that must not leak).
    pub max_causes: usize,
    /// Longest message kept, in bytes (longer ones are cut at a character boundary, marked `…`).
    pub max_message_bytes: usize,
}

impl Default for CausePolicy {
    fn default() -> Self {
        CausePolicy {
            max_causes: 8,
            max_message_bytes: 4_096,
        }
    }
}

/// The dead-letter record to write, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Target topic.
    pub topic: String,
    /// Target partition, or `None` for the producer's partitioner.
    pub partition: Option<i32>,
    /// The source key, unchanged.
    pub key: Option<Vec<u8>>,
    /// The source value (possibly truncated: see [`truncated_from`](Self::truncated_from)).
    pub value: Option<Vec<u8>>,
    /// The source headers with the provenance set.
    pub headers: Headers<'static>,
    /// The source timestamp (create time), if it had one.
    pub timestamp: Option<Timestamp>,
    /// The value's size before truncation, when it was truncated to fit.
    pub truncated_from: Option<usize>,
}

impl DeadLetter {
    /// Bytes the record takes on the wire, near enough to compare with the producer's
    /// `message.max.bytes` (key, value, headers and the per-record overhead).
    pub fn size(&self) -> usize {
        const RECORD_OVERHEAD: usize = 70;
        const HEADER_OVERHEAD: usize = 10;
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + HEADER_OVERHEAD)
            .sum();
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + headers
    }
}

/// Builds dead-letter records. Pure: time comes from the injected clock.
#[derive(Clone)]
pub struct Envelope {
    /// Target naming.
    pub naming: TopicNaming,
    /// Target partition choice.
    pub partitioning: PartitionStrategy,
    /// How much of the error to keep.
    pub causes: CausePolicy,
    /// The consumer group written into the provenance.
    pub group: String,
    /// This instance's id.
    pub instance_id: String,
    /// The producer's `message.max.bytes`.
    pub max_record_bytes: usize,
    /// The clock failure times come from when the error carries none.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("naming", &self.naming)
            .field("partitioning", &self.partitioning)
            .field("causes", &self.causes)
            .field("group", &self.group)
            .field("instance_id", &self.instance_id)
            .field("max_record_bytes", &self.max_record_bytes)
            .finish()
    }
}

/// Where a record was first consumed: its own coordinates, or those its retry headers carry.
struct Origin {
    topic: String,
    partition: i32,
    offset: i64,
}

impl Origin {
    fn of(record: &Record<'_>) -> Origin {
        match RetryState::read(&record.headers) {
            Ok(Some(state)) => Origin {
                topic: state.topic,
                partition: state.partition,
                offset: state.offset,
            },
            // Unreadable retry headers: the record is taken as it is.
            _ => Origin {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset.get(),
            },
        }
    }
}

fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Envelope {
    /// Defaults for `group` on the system clock: `<topic>.dlq`, same partition or by key, 8
    /// causes of at most 4 KiB, a 1 000 000-byte limit (librdkafka's default).
    pub fn new(group: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Envelope {
            naming: TopicNaming::default(),
            partitioning: PartitionStrategy::default(),
            causes: CausePolicy::default(),
            group: group.into(),
            instance_id: instance_id.into(),
            max_record_bytes: 1_000_000,
            clock: Arc::new(crate::SystemClock),
        }
    }

    /// The dead-letter topic for `record`: its original topic's, when it was read from a retry
    /// tier.
    pub fn target_for(&self, record: &Record<'_>) -> String {
        self.naming.target(&Origin::of(record).topic)
    }

    /// The dead-letter record for `record`, which failed with `error`. `target_partitions` is
    /// the dead-letter topic's partition count, when known.
    ///
    /// When the record would exceed `max_record_bytes`: the cause chain goes first, then the
    /// value is truncated (its original size and digest recorded in headers); if it is still
    /// too large (a huge key or headers) the answer is [`Error::Oversize`] — never a record
    /// silently dropped.
    pub fn build(
        &self,
        record: &Record<'_>,
        error: &HandlerError,
        target_partitions: Option<i32>,
    ) -> Result<DeadLetter, Error> {
        let origin = Origin::of(record);
        let topic = self.naming.target(&origin.topic);
        let now = self.clock.wall();
        let previous = headers::parse(&record.headers);
        let earlier = matches!(previous.format, Some(headers::Format::KafkaOps(_)));
        let (first, last) = error.failure_times();
        let first = first.unwrap_or(now);
        let first = match previous.first_failure.filter(|_| earlier) {
            Some(before) if before < first => before,
            _ => first,
        };
        let attempts = error
            .attempts()
            .max(1)
            .saturating_add(previous.attempts.filter(|_| earlier).unwrap_or(0));
        let cause_chain: Vec<String> = error
            .cause_chain(self.causes.max_causes)
            .iter()
            .map(|cause| cut(cause, self.causes.max_message_bytes))
            .collect();
        let mut provenance = Provenance {
            original_topic: origin.topic,
            original_partition: origin.partition,
            original_offset: origin.offset,
            original_timestamp: match record.timestamp {
                RecordTimestamp::NotAvailable => None,
                RecordTimestamp::CreateTime(t) => Some((t, "create")),
                RecordTimestamp::LogAppendTime(t) => Some((t, "log-append")),
            },
            group: self.group.clone(),
            error_class: error.class(),
            error_message: cut(&error.cause().to_string(), self.causes.max_message_bytes),
            cause_chain: if self.causes.max_causes == 0 {
                Vec::new()
            } else {
                cause_chain
            },
            attempts,
            first_failure: first,
            last_failure: last.unwrap_or(now),
            instance_id: self.instance_id.clone(),
            truncated_value: None,
        };
        let mut headers = record.headers.clone().into_owned();
        // The retry tiers' state is summed up in the provenance.
        headers.remove_where(|key| key.starts_with(retry::PREFIX));
        headers::encode(&mut headers, &provenance);
        let mut letter = DeadLetter {
            partition: self
                .partitioning
                .choose(origin.partition, target_partitions),
            topic,
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers,
            timestamp: record.timestamp.time(),
            truncated_from: None,
        };
        if letter.size() <= self.max_record_bytes {
            return Ok(letter);
        }
        // 1: drop the cause chain and cut the message short.
        provenance.cause_chain.clear();
        provenance.error_message = cut(&provenance.error_message, 256);
        headers::encode(&mut letter.headers, &provenance);
        if letter.size() <= self.max_record_bytes {
            return Ok(letter);
        }
        // 2: truncate the value, recording its size and digest.
        if let Some(value) = letter.value.take() {
            let digest = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&value));
            provenance.truncated_value = Some((value.len() as u64, digest));
            headers::encode(&mut letter.headers, &provenance);
            let room = self.max_record_bytes.saturating_sub(letter.size());
            let kept = room.min(value.len());
            letter.value = Some(value[..kept].to_vec());
            letter.truncated_from = Some(value.len());
            if letter.size() <= self.max_record_bytes {
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset.get(),
                    original = value.len(), kept,
                    "dead-letter value truncated to fit the producer's limit"
                );
                metrics::counter!("kafka_ops_dlq_truncated_total").increment(1);
                return Ok(letter);
            }
        }
        Err(Error::Oversize {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset.get(),
            size: letter.size(),
            limit: self.max_record_bytes,
        })
    }
}

#[cfg(test)]
mod tests;
