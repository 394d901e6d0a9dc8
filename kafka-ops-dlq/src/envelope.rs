//! Building the dead-letter record: target topic and partition, the original bytes, the
//! provenance headers, and what happens when it would be too large.

use std::fmt;
use std::sync::Arc;

use kafka_ops_core::handler::HandlerError;
use kafka_ops_core::{Clock, Headers, Record, RecordTimestamp, Timestamp};

use crate::error::DlqError;
use crate::headers::{self, Provenance};

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
        match crate::retry::RetryState::read(&record.headers) {
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
            clock: Arc::new(kafka_ops_core::SystemClock),
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
    /// too large (a huge key or headers) the answer is [`DlqError::Oversize`] — never a record
    /// silently dropped.
    pub fn build(
        &self,
        record: &Record<'_>,
        error: &HandlerError,
        target_partitions: Option<i32>,
    ) -> Result<DeadLetter, DlqError> {
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
        let attempts = error.attempts().max(1) + previous.attempts.filter(|_| earlier).unwrap_or(0);
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
        headers.remove_where(|key| key.starts_with(headers::RETRY_PREFIX));
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
        Err(DlqError::Oversize {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset.get(),
            size: letter.size(),
            limit: self.max_record_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::headers::{Format, names, parse};
    use kafka_ops_core::{ErrorClass, ManualClock, Offset};

    fn envelope() -> Envelope {
        Envelope {
            clock: Arc::new(ManualClock::at(Timestamp::from_millis(5_000))),
            ..Envelope::new("billing", "billing-1")
        }
    }

    fn record() -> Record<'static> {
        Record::new("orders", 2, Offset::new(41).unwrap())
            .with_key(b"k1".to_vec())
            .with_value(vec![0xff, 0x00, 0xfe])
            .with_header("traceparent", b"00-1".to_vec())
            .with_timestamp(RecordTimestamp::CreateTime(Timestamp::from_millis(1_000)))
    }

    #[derive(Debug, thiserror::Error)]
    #[error("bad amount")]
    struct BadAmount(#[source] std::num::ParseIntError);

    fn failure() -> HandlerError {
        HandlerError::permanent(BadAmount("x".parse::<i64>().unwrap_err()))
    }

    #[test]
    fn keeps_the_bytes_and_adds_provenance() {
        let letter = envelope().build(&record(), &failure(), Some(4)).unwrap();
        assert_eq!(letter.topic, "orders.dlq");
        assert_eq!(letter.partition, Some(2));
        assert_eq!(letter.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(letter.value.as_deref(), Some(&[0xff, 0x00, 0xfe][..]));
        assert_eq!(letter.timestamp, Some(Timestamp::from_millis(1_000)));
        assert_eq!(letter.headers.get_bytes("traceparent"), Some(&b"00-1"[..]));
        let info = parse(&letter.headers);
        assert_eq!(info.format, Some(Format::KafkaOps(1)));
        assert_eq!(info.original_topic.as_deref(), Some("orders"));
        assert_eq!(
            (info.original_partition, info.original_offset),
            (Some(2), Some(41))
        );
        assert_eq!(info.error_class, Some(ErrorClass::Permanent));
        assert_eq!(info.error_message.as_deref(), Some("bad amount"));
        assert_eq!(
            info.cause_chain,
            vec![
                "bad amount".to_string(),
                "invalid digit found in string".to_string()
            ]
        );
        assert_eq!(info.attempts, Some(1));
        assert_eq!(info.first_failure, Some(Timestamp::from_millis(5_000)));
        assert_eq!(info.group.as_deref(), Some("billing"));
    }

    #[test]
    fn tombstones_and_null_keys_stay_null() {
        let letter = envelope()
            .build(&Record::new("orders", 0, Offset::ZERO), &failure(), None)
            .unwrap();
        assert_eq!(
            (letter.key, letter.value, letter.partition),
            (None, None, None)
        );
    }

    #[test]
    fn partitions_same_when_present_else_by_key() {
        let s = PartitionStrategy::SameOrByKey;
        assert_eq!(s.choose(3, Some(4)), Some(3));
        assert_eq!(s.choose(4, Some(4)), None);
        assert_eq!(s.choose(0, None), None);
        assert_eq!(PartitionStrategy::ByKey.choose(0, Some(4)), None);
        assert_eq!(TopicNaming::spring().target("orders"), "orders-dlt");
        assert_eq!(TopicNaming::Fixed("all.dlq".into()).target("x"), "all.dlq");
        let custom = TopicNaming::Custom(Arc::new(|t: &str| format!("dlq.{t}")));
        assert_eq!(custom.target("orders"), "dlq.orders");
    }

    #[test]
    fn a_second_failure_keeps_the_first_time_and_adds_attempts() {
        let first = envelope()
            .build(&record(), &failure().with_attempts(3), None)
            .unwrap();
        let mut replayed = record();
        replayed.headers = first.headers.clone();
        let later = Envelope {
            clock: Arc::new(ManualClock::at(Timestamp::from_millis(9_000))),
            ..envelope()
        };
        let second = later
            .build(&replayed, &failure().with_attempts(2), None)
            .unwrap();
        let info = parse(&second.headers);
        assert_eq!(info.attempts, Some(5));
        assert_eq!(info.first_failure, Some(Timestamp::from_millis(5_000)));
        assert_eq!(info.last_failure, Some(Timestamp::from_millis(9_000)));
        assert_eq!(second.headers.get_all(names::GROUP).count(), 1);
    }

    #[test]
    fn the_cause_chain_can_be_turned_off() {
        let quiet = Envelope {
            causes: CausePolicy {
                max_causes: 0,
                max_message_bytes: 4_096,
            },
            ..envelope()
        };
        let letter = quiet.build(&record(), &failure(), None).unwrap();
        assert!(letter.headers.get(names::CAUSE_CHAIN).is_none());
    }

    #[test]
    fn oversize_drops_causes_then_truncates_the_value_then_refuses() {
        let small = Envelope {
            max_record_bytes: 2_000,
            ..envelope()
        };
        // Fits once the cause chain is gone.
        let long_cause = HandlerError::permanent(std::io::Error::other("c".repeat(1_200)));
        let letter = small.build(&record(), &long_cause, None).unwrap();
        assert!(letter.headers.get(names::CAUSE_CHAIN).is_none());
        assert_eq!(letter.truncated_from, None);
        assert!(letter.size() <= 2_000);

        // Needs the value cut: size and digest recorded.
        let big = record().with_value(vec![7_u8; 10_000]);
        let letter = small.build(&big, &failure(), None).unwrap();
        assert_eq!(letter.truncated_from, Some(10_000));
        assert!(letter.size() <= 2_000, "{}", letter.size());
        let info = parse(&letter.headers);
        assert_eq!(info.truncated_value_size, Some(10_000));
        assert_eq!(
            info.value_digest,
            Some(format!(
                "{:032x}",
                xxhash_rust::xxh3::xxh3_128(&[7_u8; 10_000])
            ))
        );

        // A key alone over the limit: refused, with the numbers.
        let huge_key = record().with_key(vec![1_u8; 5_000]);
        match small.build(&huge_key, &failure(), None) {
            Err(DlqError::Oversize {
                size,
                limit,
                offset,
                ..
            }) => {
                assert!(size > limit);
                assert_eq!((limit, offset), (2_000, 41));
            }
            other => panic!("{other:?}"),
        }
    }
}
