//! The rdkafka adapters: a cluster-query client, message conversion, secret-safe config
//! handling, and the consumer [`driver`].
//!
//! Everything here takes a caller-supplied [`rdkafka::ClientConfig`], so SASL and TLS settings pass
//! straight through; nothing here prints them (see [`redacted_config`]).

mod cluster;
mod dead_letter_sink;
pub mod driver;
mod group_state;
mod metadata;
mod producer;
mod reader;
mod wire;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message};

use crate::class::{ErrorClass, KafkaCode};
use crate::error::Error;
use crate::record::{Header, Headers, Record, RecordTimestamp};
use crate::types::{Offset, Timestamp};

pub use cluster::{DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT, KafkaCluster};
pub use dead_letter_sink::KafkaDeadLetterSink;
pub use producer::{Ack, AckedProducer, Outgoing};
pub use reader::{Range, RangeReader, RemovedOffsets, Step};

/// Locks `mutex`, poisoned or not: the adapter's guarded data stays consistent across a panic in
/// another holder (plain collections updated by single calls), so a poisoned lock is still
/// usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The instant `timeout` after `from`; far in the future for a bound too large to add (a
/// caller's `Duration::MAX` means "no bound", not a panic).
pub(crate) fn deadline_after(
    from: std::time::Instant,
    timeout: std::time::Duration,
) -> std::time::Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
    from.checked_add(timeout)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// How long [`commit_group_offsets`] keeps trying a commit the cluster refuses for now.
const COMMIT_RETRY_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Commits `offsets` for the group `consumer_config` names, without joining the group, as
/// `kafka-consumer-groups --reset-offsets --execute` does. Nothing checks the group is idle:
/// a member that commits later overwrites these offsets (offset tools check first).
///
/// The broker's answer is awaited (a refusal for now, such as NOT_COORDINATOR while the
/// coordinator loads, is retried for up to 15 s); the blocking client work runs off the async
/// threads.
pub async fn commit_group_offsets(
    consumer_config: &ClientConfig,
    offsets: &[(crate::types::TopicPartition, Offset)],
) -> Result<(), Error> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let config = consumer_config.clone();
    let offsets = offsets.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("create committer", e))?;
        let mut list = rdkafka::TopicPartitionList::with_capacity(offsets.len());
        for (tp, offset) in &offsets {
            add_at_offset(&mut list, &tp.topic, tp.partition, offset.get())
                .map_err(|e| kafka_error("commit", e))?;
        }
        // A cluster that just started, or a coordinator that just moved, answers
        // NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS for a moment: the same offsets are
        // committed again until a bound passes.
        let deadline = std::time::Instant::now() + COMMIT_RETRY_LIMIT;
        loop {
            match consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => return Ok(()),
                Err(error)
                    if kafka_code(&error).is_some_and(|code| {
                        [
                            KafkaCode::COORDINATOR_LOAD_IN_PROGRESS,
                            KafkaCode::COORDINATOR_NOT_AVAILABLE,
                            KafkaCode::NOT_COORDINATOR,
                        ]
                        .contains(&code)
                    }) && std::time::Instant::now() < deadline =>
                {
                    tracing::debug!(%error, "commit refused for now; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(error) => return Err(kafka_error("commit", error)),
            }
        }
    })
    .await
    .map_err(|e| Error::Task(Box::new(e)))?
}

/// The code inside an rdkafka error, when it carries one.
pub(crate) fn kafka_code(error: &KafkaError) -> Option<KafkaCode> {
    match error {
        KafkaError::AdminOp(code) => Some(KafkaCode(*code as i32)),
        other => other
            .rdkafka_error_code()
            .map(|code| KafkaCode(code as i32)),
    }
}

/// How an rdkafka error should be treated (see [`ErrorClass`]).
pub(crate) fn classify(error: &KafkaError) -> ErrorClass {
    match error {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorClass::Fatal,
        KafkaError::Canceled => ErrorClass::Transient,
        other => kafka_code(other).map_or(ErrorClass::Transient, KafkaCode::class),
    }
}

/// Wraps an rdkafka error with what was being done.
///
/// A configuration error about a secret property (`sasl.password`, `ssl.key.password`, ...)
/// carries the property's value, which librdkafka and rdkafka print: the value is redacted here,
/// before the error can reach a log or a user.
pub(crate) fn kafka_error(operation: &'static str, error: KafkaError) -> Error {
    let error = match error {
        KafkaError::ClientConfig(result, description, key, value) if is_secret_key(&key) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, REDACTED)
            };
            KafkaError::ClientConfig(result, description, key, REDACTED.to_string())
        }
        other => other,
    };
    Error::Kafka {
        operation,
        code: kafka_code(&error),
        source: Box::new(error),
    }
}

/// What a secret is shown as.
const REDACTED: &str = "[redacted]";

/// Whether a librdkafka configuration key holds a secret that must never be printed.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.contains("token")
        || key.ends_with(".pem")
        || key.ends_with(".key")
        || key == "sasl.oauthbearer.config"
        || key == "sasl.jaas.config"
}

/// The configuration as a map with every secret replaced by `"[redacted]"`, for logs and reports.
pub fn redacted_config(config: &ClientConfig) -> BTreeMap<String, String> {
    config
        .config_map()
        .iter()
        .map(|(key, value)| {
            let shown = if is_secret_key(key) { REDACTED } else { value };
            (key.to_string(), shown.to_string())
        })
        .collect()
}

/// A client configuration for `bootstrap` with the settings every kafka-ops client wants: a
/// bounded socket timeout so an unreachable cluster fails fast instead of hanging.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .set("socket.connection.setup.timeout.ms", "10000");
    config
}

/// Sets each of `defaults` in `config` unless `config` already sets that key: kafka-ops' choices
/// for its own clients, which the caller's configuration overrides.
pub fn set_unless_set(config: &mut ClientConfig, defaults: &[(&str, &str)]) {
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(*key, *value);
        }
    }
}

/// Adds `topic`/`partition` at the raw `offset` (as librdkafka takes it) to `list` and returns
/// the new entry (for metadata).
///
/// rdkafka's `add_partition_offset` looks the entry up again by name to set its offset, so a
/// list of n partitions built with it costs about n²/2 comparisons of topic names: 50 million
/// for a group of 10 000 partitions. A topic name holding a NUL byte, which no Kafka topic
/// has, is refused here instead of panicking inside rdkafka.
pub(crate) fn add_at_offset<'l>(
    list: &'l mut rdkafka::TopicPartitionList,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<rdkafka::topic_partition_list::TopicPartitionListElem<'l>, KafkaError> {
    if topic.contains('\0') {
        return Err(KafkaError::SetPartitionOffset(
            rdkafka::types::RDKafkaErrorCode::InvalidArgument,
        ));
    }
    let mut entry = list.add_partition(topic, partition);
    entry.set_offset(rdkafka::Offset::Offset(offset))?;
    Ok(entry)
}

/// Turns off what a consumer whose offsets kafka-ops commits must not do on its own:
/// auto-commit, auto offset store and partition EOF events.
pub(crate) fn commit_by_hand(config: &mut ClientConfig) {
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
}

/// The headers to produce for `headers`, in order, null values kept: the inverse of what
/// [`record_from_message`] reads.
pub(crate) fn owned_headers(headers: &Headers<'_>) -> rdkafka::message::OwnedHeaders {
    headers.iter().fold(
        rdkafka::message::OwnedHeaders::new_with_capacity(headers.len()),
        |owned, header| {
            owned.insert(rdkafka::message::Header {
                key: &header.key,
                value: header.value.as_deref(),
            })
        },
    )
}

/// Views an rdkafka message as a [`Record`] without copying its bytes.
///
/// Fails only on a negative offset, which librdkafka never delivers for a consumed message.
pub(crate) fn record_from_message<M: Message>(message: &M) -> Result<Record<'_>, Error> {
    let offset = Offset::new(message.offset())?;
    let headers: Headers<'_> = match message.headers() {
        None => Headers::new(),
        Some(headers) => headers
            .iter()
            .map(|h| Header {
                key: h.key.into(),
                value: h.value.map(Into::into),
            })
            .collect(),
    };
    let mut record = Record::new(message.topic(), message.partition(), offset);
    record.key = message.key().map(Into::into);
    record.value = message.payload().map(Into::into);
    record.headers = headers;
    record.timestamp = match message.timestamp() {
        rdkafka::Timestamp::NotAvailable => RecordTimestamp::NotAvailable,
        rdkafka::Timestamp::CreateTime(ms) => {
            RecordTimestamp::CreateTime(Timestamp::from_millis(ms))
        }
        rdkafka::Timestamp::LogAppendTime(ms) => {
            RecordTimestamp::LogAppendTime(Timestamp::from_millis(ms))
        }
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header as RdHeader, OwnedHeaders, OwnedMessage};
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_deadline_past_what_an_instant_holds_is_far_away_not_a_panic() {
        let now = std::time::Instant::now();
        let far = deadline_after(now, std::time::Duration::MAX);
        assert!(far > now + std::time::Duration::from_secs(3600));
        let near = deadline_after(now, std::time::Duration::from_millis(5));
        assert_eq!(near, now + std::time::Duration::from_millis(5));
    }

    #[test]
    fn offsets_added_to_a_list_land_on_their_own_entries() {
        let mut list = rdkafka::TopicPartitionList::new();
        for partition in 0..1_000 {
            add_at_offset(&mut list, "orders", partition, i64::from(partition) * 7).unwrap();
        }
        add_at_offset(&mut list, "payments", 0, 0)
            .unwrap()
            .set_metadata("checkpoint");
        assert_eq!(list.count(), 1_001);
        for partition in [0, 1, 500, 999] {
            assert_eq!(
                list.find_partition("orders", partition).unwrap().offset(),
                rdkafka::Offset::Offset(i64::from(partition) * 7)
            );
        }
        let payments = list.find_partition("payments", 0).unwrap();
        assert_eq!(payments.offset(), rdkafka::Offset::Offset(0));
        assert_eq!(payments.metadata(), "checkpoint");
    }

    #[test]
    fn a_topic_name_with_a_nul_byte_is_refused_not_a_panic() {
        let mut list = rdkafka::TopicPartitionList::new();
        let refused = add_at_offset(&mut list, "ord\0ers", 0, 0).unwrap_err();
        assert!(
            matches!(refused, KafkaError::SetPartitionOffset(_)),
            "{refused}"
        );
        assert_eq!(list.count(), 0);
        assert_eq!(
            kafka_error("commit", refused).class(),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn defaults_fill_only_the_keys_the_caller_left_unset() {
        let mut config = ClientConfig::new();
        config.set("linger.ms", "50");
        set_unless_set(
            &mut config,
            &[("linger.ms", "5"), ("compression.type", "lz4")],
        );
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("compression.type"), Some("lz4"));
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = client_config("localhost:9092");
        config
            .set("sasl.password", "hunter2")
            .set("ssl.key.password", "k3y")
            .set("sasl.oauthbearer.client.secret", "s3cret")
            .set("ssl.key.pem", "-----BEGIN")
            .set("security.protocol", "SASL_SSL");
        let shown = redacted_config(&config);
        let text = format!("{shown:?}");
        for secret in ["hunter2", "k3y", "s3cret", "BEGIN"] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert_eq!(shown["security.protocol"], "SASL_SSL");
        assert_eq!(shown["sasl.password"], "[redacted]");
    }

    #[test]
    fn rdkafka_errors_are_classified() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas);
        assert_eq!(classify(&e), ErrorClass::Transient);
        assert_eq!(kafka_code(&e), Some(KafkaCode::NOT_ENOUGH_REPLICAS));
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&e), ErrorClass::Permanent);
        let e = KafkaError::ClientCreation("bad".into());
        assert_eq!(classify(&e), ErrorClass::Fatal);
        let wrapped = kafka_error(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown),
        );
        assert_eq!(wrapped.class(), ErrorClass::Transient);
        assert_eq!(wrapped.code(), Some(KafkaCode::ALL_BROKERS_DOWN));
    }

    #[test]
    fn headers_convert_to_rdkafka_and_back() {
        let mut headers = Headers::new();
        headers.push("event-id", Some(b"e-1".to_vec()));
        headers.push("null", None::<Vec<u8>>);
        headers.push("event-id", Some(vec![0xff, 0x00]));
        let message = OwnedMessage::new(
            None,
            None,
            "orders".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            Some(owned_headers(&headers)),
        );
        let record = record_from_message(&message).unwrap();
        assert_eq!(record.headers, headers);
    }

    #[test]
    fn messages_convert_without_losing_anything() {
        let headers = OwnedHeaders::new()
            .insert(RdHeader {
                key: "event-id",
                value: Some("e-1"),
            })
            .insert(RdHeader {
                key: "null",
                value: None::<&[u8]>,
            })
            .insert(RdHeader {
                key: "bin",
                value: Some(&[0xffu8, 0x00][..]),
            });
        let message = OwnedMessage::new(
            Some(vec![1, 2, 3]),
            None,
            "orders".into(),
            rdkafka::Timestamp::LogAppendTime(77),
            4,
            12,
            Some(headers),
        );
        let record = record_from_message(&message).unwrap();
        assert_eq!(record.topic, "orders");
        assert_eq!((record.partition, record.offset.get()), (4, 12));
        assert_eq!(record.key(), None);
        assert_eq!(record.value(), Some(&[1u8, 2, 3][..]));
        assert_eq!(record.headers.get_str("event-id").unwrap(), Some("e-1"));
        assert_eq!(record.headers.get("null"), Some(None));
        assert!(record.headers.get_str("bin").is_err());
        assert_eq!(
            record.timestamp,
            RecordTimestamp::LogAppendTime(Timestamp::from_millis(77))
        );
    }
}
