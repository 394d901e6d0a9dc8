//! The provenance header set kafka-ops writes on a dead-letter record (version 1), and the
//! reader that turns it — or the headers Spring Kafka, Kafka Connect, Kafka Streams and Karafka
//! write — into one model.
//!
//! # Version 1
//!
//! Every value is UTF-8 text; numbers are decimal, times are milliseconds since the Unix epoch.
//!
//! | header | value |
//! |---|---|
//! | `kafka-ops.dlt.version` | `1` |
//! | `kafka-ops.dlt.original-topic` | the source topic |
//! | `kafka-ops.dlt.original-partition` | the source partition |
//! | `kafka-ops.dlt.original-offset` | the source offset |
//! | `kafka-ops.dlt.original-timestamp` | the source record's timestamp (absent when it had none) |
//! | `kafka-ops.dlt.original-timestamp-type` | `create` or `log-append` |
//! | `kafka-ops.dlt.group` | the consumer group |
//! | `kafka-ops.dlt.error-class` | `transient`, `permanent` or `fatal` |
//! | `kafka-ops.dlt.error-message` | the error's message |
//! | `kafka-ops.dlt.cause-chain` | a JSON array of the error's causes, outermost first (capped; absent when turned off) |
//! | `kafka-ops.dlt.attempts` | how many times the record was tried, over every failure so far |
//! | `kafka-ops.dlt.first-failure` | when it first failed |
//! | `kafka-ops.dlt.last-failure` | when it last failed |
//! | `kafka-ops.dlt.instance-id` | the consumer instance that dead-lettered it |
//! | `kafka-ops.dlt.truncated-value-size` | the value's size before it was truncated to fit (only then) |
//! | `kafka-ops.dlt.value-digest` | hex xxh3-128 of the untruncated value (only then) |
//!
//! When a record fails again, its previous `kafka-ops.dlt.*` headers are replaced, not piled
//! up; the first failure time is kept and the attempts add up.

use std::borrow::Cow;

use crate::{ErrorClass, Headers, Timestamp};

use super::retry::PREFIX as RETRY_PREFIX;
use serde::{Deserialize, Serialize};

/// The prefix of every provenance header.
pub const PREFIX: &str = "kafka-ops.dlt.";
/// The header-set version this crate writes.
pub const VERSION: u32 = 1;

/// Names of the version-1 headers.
pub mod names {
    /// `kafka-ops.dlt.version`
    pub const VERSION: &str = "kafka-ops.dlt.version";
    /// `kafka-ops.dlt.original-topic`
    pub const ORIGINAL_TOPIC: &str = "kafka-ops.dlt.original-topic";
    /// `kafka-ops.dlt.original-partition`
    pub const ORIGINAL_PARTITION: &str = "kafka-ops.dlt.original-partition";
    /// `kafka-ops.dlt.original-offset`
    pub const ORIGINAL_OFFSET: &str = "kafka-ops.dlt.original-offset";
    /// `kafka-ops.dlt.original-timestamp`
    pub const ORIGINAL_TIMESTAMP: &str = "kafka-ops.dlt.original-timestamp";
    /// `kafka-ops.dlt.original-timestamp-type`
    pub const ORIGINAL_TIMESTAMP_TYPE: &str = "kafka-ops.dlt.original-timestamp-type";
    /// `kafka-ops.dlt.group`
    pub const GROUP: &str = "kafka-ops.dlt.group";
    /// `kafka-ops.dlt.error-class`
    pub const ERROR_CLASS: &str = "kafka-ops.dlt.error-class";
    /// `kafka-ops.dlt.error-message`
    pub const ERROR_MESSAGE: &str = "kafka-ops.dlt.error-message";
    /// `kafka-ops.dlt.cause-chain`
    pub const CAUSE_CHAIN: &str = "kafka-ops.dlt.cause-chain";
    /// `kafka-ops.dlt.attempts`
    pub const ATTEMPTS: &str = "kafka-ops.dlt.attempts";
    /// `kafka-ops.dlt.first-failure`
    pub const FIRST_FAILURE: &str = "kafka-ops.dlt.first-failure";
    /// `kafka-ops.dlt.last-failure`
    pub const LAST_FAILURE: &str = "kafka-ops.dlt.last-failure";
    /// `kafka-ops.dlt.instance-id`
    pub const INSTANCE_ID: &str = "kafka-ops.dlt.instance-id";
    /// `kafka-ops.dlt.truncated-value-size`
    pub const TRUNCATED_VALUE_SIZE: &str = "kafka-ops.dlt.truncated-value-size";
    /// `kafka-ops.dlt.value-digest`
    pub const VALUE_DIGEST: &str = "kafka-ops.dlt.value-digest";
}

/// The lineage headers a replay (`kafka-ops-dlq`) writes on every record it copies back.
pub mod lineage {
    /// `kafka-ops.replay.id`: the replay that wrote the record.
    pub const REPLAY_ID: &str = "kafka-ops.replay.id";
    /// `kafka-ops.replay.count`: how many times the record has been replayed, this time
    /// included (the loop guard reads it).
    pub const REPLAY_COUNT: &str = "kafka-ops.replay.count";
    /// `kafka-ops.replay.source`: `<dead-letter topic>/<partition>/<offset>` it was copied from.
    pub const REPLAY_SOURCE: &str = "kafka-ops.replay.source";
}

/// Removes the dead-letter provenance a record carries (kafka-ops' own and the retry tiers'
/// always; a foreign tool's when `format` says it wrote them), leaving the application's
/// headers: what a record replayed to its topic should look like.
pub fn strip_provenance(headers: &mut Headers<'_>, format: Format) {
    let foreign: &[&str] = match format {
        Format::Spring => &SPRING_PREFIXES,
        Format::Connect => &["__connect.errors."],
        Format::Streams => &["__streams.errors."],
        Format::Karafka => &["source_"],
        Format::KafkaOps(_) | Format::Unknown => &[],
    };
    headers.remove_where(|key| {
        key.starts_with(PREFIX)
            || key.starts_with(RETRY_PREFIX)
            || foreign.iter().any(|prefix| key.starts_with(prefix))
    });
}

/// Every prefix Spring Kafka writes provenance under: `kafka_dlt-*` from the
/// `DeadLetterPublishingRecoverer`, and on the `@RetryableTopic` path `kafka_original-*`,
/// `kafka_exception-*`, `kafka_key-exception-*` and `retry_topic-*` (its group header stays
/// `kafka_dlt-original-consumer-group`). The last is not a sign of Spring on its own.
const SPRING_PREFIXES: [&str; 5] = [
    "kafka_dlt-",
    "kafka_original-",
    "kafka_exception-",
    "kafka_key-exception-",
    "retry_topic-",
];

/// Whose headers a dead-letter record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// kafka-ops' own set, with its version.
    KafkaOps(u32),
    /// Spring Kafka's `DeadLetterPublishingRecoverer` (`kafka_dlt-*`).
    Spring,
    /// Kafka Connect's error reporter (`__connect.errors.*`).
    Connect,
    /// Kafka Streams' dead-letter queue (`__streams.errors.*`).
    Streams,
    /// Karafka's dead-letter queue (`source_*`).
    Karafka,
    /// No known provenance headers.
    Unknown,
}

/// A header that was there but could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderProblem {
    /// The header's name.
    pub header: String,
    /// What was wrong with it.
    pub reason: String,
}

/// Where a dead-letter record came from and why, as far as its headers tell. Every field is
/// optional: a foreign or damaged record gives what it has, and `problems` lists what could not
/// be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// Whose headers these were (`None` until parsed).
    pub format: Option<Format>,
    /// Source topic.
    pub original_topic: Option<String>,
    /// Source partition.
    pub original_partition: Option<i32>,
    /// Source offset.
    pub original_offset: Option<i64>,
    /// Source record timestamp.
    pub original_timestamp: Option<Timestamp>,
    /// `create` or `log-append`, when known.
    pub original_timestamp_type: Option<String>,
    /// Consumer group (or connector, for Connect).
    pub group: Option<String>,
    /// kafka-ops' error class.
    pub error_class: Option<ErrorClass>,
    /// The exception or error type, for foreign formats (`java.lang.NumberFormatException`).
    pub error_type: Option<String>,
    /// The error message.
    pub error_message: Option<String>,
    /// Causes, outermost first.
    pub cause_chain: Vec<String>,
    /// A stack trace, for foreign formats.
    pub stacktrace: Option<String>,
    /// Attempts so far.
    pub attempts: Option<u32>,
    /// First failure time.
    pub first_failure: Option<Timestamp>,
    /// Last failure time.
    pub last_failure: Option<Timestamp>,
    /// The instance that dead-lettered it.
    pub instance_id: Option<String>,
    /// The value's size before truncation, when it was truncated.
    pub truncated_value_size: Option<u64>,
    /// Digest of the untruncated value, when it was truncated.
    pub value_digest: Option<String>,
    /// Headers present but unreadable.
    pub problems: Vec<HeaderProblem>,
}

/// The provenance kafka-ops writes: [`DeadLetterInfo`]'s fields it fills, as input to
/// [`encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Source topic.
    pub original_topic: String,
    /// Source partition.
    pub original_partition: i32,
    /// Source offset.
    pub original_offset: i64,
    /// Source timestamp and its type (`create` / `log-append`), if it had one.
    pub original_timestamp: Option<(Timestamp, &'static str)>,
    /// Consumer group.
    pub group: String,
    /// Error class.
    pub error_class: ErrorClass,
    /// Error message.
    pub error_message: String,
    /// Causes, outermost first (empty: the header is left out).
    pub cause_chain: Vec<String>,
    /// Attempts, this failure's and earlier ones'.
    pub attempts: u32,
    /// First failure.
    pub first_failure: Timestamp,
    /// Last failure.
    pub last_failure: Timestamp,
    /// This instance.
    pub instance_id: String,
    /// Set when the value was truncated: its original size and digest.
    pub truncated_value: Option<(u64, String)>,
}

/// Replaces every `kafka-ops.dlt.*` header in `headers` with `provenance`'s.
pub fn encode(headers: &mut Headers<'_>, provenance: &Provenance) {
    headers.remove_where(|key| key.starts_with(PREFIX));
    let mut set = |name: &'static str, value: String| {
        headers.push(name, Some(Cow::Owned(value.into_bytes())));
    };
    set(names::VERSION, VERSION.to_string());
    set(names::ORIGINAL_TOPIC, provenance.original_topic.clone());
    set(
        names::ORIGINAL_PARTITION,
        provenance.original_partition.to_string(),
    );
    set(
        names::ORIGINAL_OFFSET,
        provenance.original_offset.to_string(),
    );
    if let Some((time, kind)) = provenance.original_timestamp {
        set(names::ORIGINAL_TIMESTAMP, time.as_millis().to_string());
        set(names::ORIGINAL_TIMESTAMP_TYPE, kind.to_string());
    }
    set(names::GROUP, provenance.group.clone());
    set(
        names::ERROR_CLASS,
        provenance.error_class.as_str().to_string(),
    );
    set(names::ERROR_MESSAGE, provenance.error_message.clone());
    if !provenance.cause_chain.is_empty() {
        // A JSON array of strings cannot fail to serialize.
        let chain = serde_json::to_string(&provenance.cause_chain).unwrap_or_default();
        set(names::CAUSE_CHAIN, chain);
    }
    set(names::ATTEMPTS, provenance.attempts.to_string());
    set(
        names::FIRST_FAILURE,
        provenance.first_failure.as_millis().to_string(),
    );
    set(
        names::LAST_FAILURE,
        provenance.last_failure.as_millis().to_string(),
    );
    set(names::INSTANCE_ID, provenance.instance_id.clone());
    if let Some((size, digest)) = &provenance.truncated_value {
        set(names::TRUNCATED_VALUE_SIZE, size.to_string());
        set(names::VALUE_DIGEST, digest.clone());
    }
}

/// Reads one header at a time, recording what it cannot read.
struct Reader<'h, 'a> {
    headers: &'h Headers<'a>,
    problems: Vec<HeaderProblem>,
}

impl Reader<'_, '_> {
    fn problem(&mut self, header: &str, reason: impl Into<String>) {
        self.problems.push(HeaderProblem {
            header: header.to_string(),
            reason: reason.into(),
        });
    }

    /// The last value of `name` (Kafka allows repeats; the last one written wins).
    fn bytes(&mut self, name: &str) -> Option<Vec<u8>> {
        match self.headers.get_all(name).last() {
            None => None,
            Some(None) => {
                self.problem(name, "null value");
                None
            }
            Some(Some(bytes)) => Some(bytes.to_vec()),
        }
    }

    fn text(&mut self, name: &str) -> Option<String> {
        let bytes = self.bytes(name)?;
        match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(error) => {
                self.problem(name, format!("not UTF-8 ({error})"));
                Some(String::from_utf8_lossy(error.as_bytes()).into_owned())
            }
        }
    }

    /// A number written as decimal text (kafka-ops, Connect, Streams, Karafka) or, as Spring
    /// does, as big-endian binary of 4 or 8 bytes.
    fn number(&mut self, name: &str) -> Option<i64> {
        let bytes = self.bytes(name)?;
        if let Some(value) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
        {
            return Some(value);
        }
        match bytes.len() {
            4 => Some(i64::from(i32::from_be_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3],
            ]))),
            8 => {
                let mut word = [0_u8; 8];
                word.copy_from_slice(&bytes);
                Some(i64::from_be_bytes(word))
            }
            _ => {
                self.problem(
                    name,
                    format!(
                        "not a number (neither decimal text nor 4/8-byte binary): {} bytes",
                        bytes.len()
                    ),
                );
                None
            }
        }
    }

    fn int32(&mut self, name: &str) -> Option<i32> {
        let value = self.number(name)?;
        match i32::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(name, format!("{value} is out of range"));
                None
            }
        }
    }

    fn count(&mut self, name: &str) -> Option<u32> {
        let value = self.number(name)?;
        match u32::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(name, format!("{value} is not a count"));
                None
            }
        }
    }

    fn time(&mut self, name: &str) -> Option<Timestamp> {
        self.number(name).map(Timestamp::from_millis)
    }

    /// A number Spring wrote in binary: big-endian two's complement of one of `sizes` bytes
    /// (Java's `BigInteger.toByteArray()` writes the shortest form, so timestamps on the
    /// retry-topic path come as 6 bytes today).
    fn binary(&mut self, name: &str, sizes: std::ops::RangeInclusive<usize>) -> Option<i64> {
        let bytes = self.bytes(name)?;
        if !sizes.contains(&bytes.len()) {
            self.problem(
                name,
                format!(
                    "{} bytes where Spring writes {}..={} (big-endian binary)",
                    bytes.len(),
                    sizes.start(),
                    sizes.end()
                ),
            );
            return None;
        }
        let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
        let mut word = [if negative { 0xff } else { 0 }; 8];
        word[8 - bytes.len()..].copy_from_slice(&bytes);
        Some(i64::from_be_bytes(word))
    }

    /// The text of the first of `names` that is present.
    fn first_text(&mut self, names: &[&str]) -> Option<String> {
        let name = names
            .iter()
            .find(|n| self.headers.get_all(n).next().is_some())?;
        self.text(name)
    }

    /// Like [`text`](Self::text), but a null value is an absent one, not a problem (Kafka
    /// Streams writes a null message for an exception without one).
    fn nullable_text(&mut self, name: &str) -> Option<String> {
        match self.headers.get_all(name).last() {
            Some(None) => None,
            _ => self.text(name),
        }
    }
}

fn has_prefix(headers: &Headers<'_>, prefix: &str) -> bool {
    headers.iter().any(|h| h.key.starts_with(prefix))
}

/// Reads a dead-letter record's provenance, whoever wrote it. Never fails: unreadable headers
/// are listed in [`DeadLetterInfo::problems`], and a record without any known set gives
/// [`Format::Unknown`].
pub fn parse(headers: &Headers<'_>) -> DeadLetterInfo {
    let mut r = Reader {
        headers,
        problems: Vec::new(),
    };
    let mut info = if has_prefix(headers, PREFIX) {
        parse_kafka_ops(&mut r)
    } else if SPRING_PREFIXES[..4]
        .iter()
        .any(|prefix| has_prefix(headers, prefix))
    {
        parse_spring(&mut r)
    } else if has_prefix(headers, "__connect.errors.") {
        parse_connect(&mut r)
    } else if has_prefix(headers, "__streams.errors.") {
        parse_streams(&mut r)
    } else if has_prefix(headers, "source_") {
        parse_karafka(&mut r)
    } else {
        DeadLetterInfo {
            format: Some(Format::Unknown),
            ..DeadLetterInfo::default()
        }
    };
    info.problems = r.problems;
    info
}

fn parse_kafka_ops(r: &mut Reader<'_, '_>) -> DeadLetterInfo {
    let version = match r.count(names::VERSION) {
        Some(version) => version,
        None => {
            r.problem(names::VERSION, "missing or unreadable; read as version 1");
            VERSION
        }
    };
    if version > VERSION {
        r.problem(
            names::VERSION,
            format!("version {version} is newer than {VERSION}; read as {VERSION}"),
        );
    }
    let error_class = r.text(names::ERROR_CLASS).and_then(|text| {
        let parsed = text.parse::<ErrorClass>().ok();
        if parsed.is_none() {
            r.problem(names::ERROR_CLASS, format!("unknown class {text:?}"));
        }
        parsed
    });
    let cause_chain = match r.text(names::CAUSE_CHAIN) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
            r.problem(
                names::CAUSE_CHAIN,
                format!("not a JSON array of strings ({error})"),
            );
            vec![text]
        }),
    };
    DeadLetterInfo {
        format: Some(Format::KafkaOps(version)),
        original_topic: r.text(names::ORIGINAL_TOPIC),
        original_partition: r.int32(names::ORIGINAL_PARTITION),
        original_offset: r.number(names::ORIGINAL_OFFSET),
        original_timestamp: r.time(names::ORIGINAL_TIMESTAMP),
        original_timestamp_type: r.text(names::ORIGINAL_TIMESTAMP_TYPE),
        group: r.text(names::GROUP),
        error_class,
        error_type: None,
        error_message: r.text(names::ERROR_MESSAGE),
        cause_chain,
        stacktrace: None,
        attempts: r.count(names::ATTEMPTS),
        first_failure: r.time(names::FIRST_FAILURE),
        last_failure: r.time(names::LAST_FAILURE),
        instance_id: r.text(names::INSTANCE_ID),
        truncated_value_size: r
            .number(names::TRUNCATED_VALUE_SIZE)
            .and_then(|n| u64::try_from(n).ok()),
        value_digest: r.text(names::VALUE_DIGEST),
        problems: Vec::new(),
    }
}

fn parse_spring(r: &mut Reader<'_, '_>) -> DeadLetterInfo {
    // The recoverer writes `kafka_dlt-original-*` and `kafka_dlt-exception-*` (or
    // `kafka_dlt-key-exception-*` when the key failed to deserialize); the `@RetryableTopic`
    // path writes `kafka_original-*` and `kafka_exception-*` instead.
    let original = |r: &mut Reader<'_, '_>, part: &str| {
        let dlt = format!("kafka_dlt-original-{part}");
        if r.headers.get_all(&dlt).next().is_some() {
            dlt
        } else {
            format!("kafka_original-{part}")
        }
    };
    let exception = |r: &mut Reader<'_, '_>, part: &str| {
        r.first_text(&[
            &format!("kafka_dlt-exception-{part}"),
            &format!("kafka_exception-{part}"),
            &format!("kafka_dlt-key-exception-{part}"),
            &format!("kafka_key-exception-{part}"),
        ])
    };
    let error_type = exception(r, "fqcn");
    let error_message = exception(r, "message");
    let stacktrace = exception(r, "stacktrace");
    let cause_chain = exception(r, "cause-fqcn").into_iter().collect();
    let name = original(r, "topic");
    let original_topic = r.text(&name);
    let name = original(r, "partition");
    let original_partition = r.binary(&name, 4..=4).and_then(|p| i32::try_from(p).ok());
    let name = original(r, "offset");
    let original_offset = r.binary(&name, 8..=8);
    let name = original(r, "timestamp");
    let original_timestamp = r.binary(&name, 8..=8).map(Timestamp::from_millis);
    let name = original(r, "timestamp-type");
    // Java's `TimestampType` prints as `CreateTime` / `LogAppendTime`.
    let original_timestamp_type = r.text(&name).map(|t| match t.as_str() {
        "CreateTime" | "CREATE_TIME" => "create".to_string(),
        "LogAppendTime" | "LOG_APPEND_TIME" => "log-append".to_string(),
        _ => t,
    });
    let group = r.text("kafka_dlt-original-consumer-group");
    // One byte in older Spring versions, four since; repeated on the dead-letter hop (the
    // last one counts).
    let attempts = r
        .binary("retry_topic-attempts", 1..=4)
        .and_then(|n| u32::try_from(n).ok());
    let last_failure = r
        .binary("retry_topic-backoff-timestamp", 1..=8)
        .map(Timestamp::from_millis);
    DeadLetterInfo {
        format: Some(Format::Spring),
        original_topic,
        original_partition,
        original_offset,
        original_timestamp,
        original_timestamp_type,
        group,
        error_type,
        error_message,
        cause_chain,
        stacktrace,
        attempts,
        last_failure,
        ..DeadLetterInfo::default()
    }
}

fn parse_connect(r: &mut Reader<'_, '_>) -> DeadLetterInfo {
    let connector = r.text("__connect.errors.connector.name");
    let task = r.text("__connect.errors.task.id");
    DeadLetterInfo {
        format: Some(Format::Connect),
        original_topic: r.text("__connect.errors.topic"),
        original_partition: r.int32("__connect.errors.partition"),
        original_offset: r.number("__connect.errors.offset"),
        // A sink connector consumes as the group `connect-<name>`; its task as `<name>-<id>`.
        group: connector.as_ref().map(|name| format!("connect-{name}")),
        instance_id: match (&connector, task) {
            (Some(name), Some(task)) => Some(format!("{name}-{task}")),
            (_, task) => task,
        },
        error_type: r.text("__connect.errors.exception.class.name"),
        error_message: r.text("__connect.errors.exception.message"),
        stacktrace: r.text("__connect.errors.exception.stacktrace"),
        // The stage (KEY_CONVERTER, TRANSFORMATION, ...) and its class locate the failure.
        cause_chain: [
            r.text("__connect.errors.stage"),
            r.text("__connect.errors.class.name"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ..DeadLetterInfo::default()
    }
}

fn parse_streams(r: &mut Reader<'_, '_>) -> DeadLetterInfo {
    DeadLetterInfo {
        format: Some(Format::Streams),
        original_topic: r.text("__streams.errors.topic"),
        original_partition: r.int32("__streams.errors.partition"),
        original_offset: r.number("__streams.errors.offset"),
        error_type: r.text("__streams.errors.exception"),
        error_message: r.nullable_text("__streams.errors.message"),
        stacktrace: r.text("__streams.errors.stacktrace"),
        ..DeadLetterInfo::default()
    }
}

fn parse_karafka(r: &mut Reader<'_, '_>) -> DeadLetterInfo {
    DeadLetterInfo {
        format: Some(Format::Karafka),
        original_topic: r.text("source_topic"),
        original_partition: r.int32("source_partition"),
        original_offset: r.number("source_offset"),
        group: r.text("source_consumer_group"),
        attempts: r.count("source_attempts"),
        ..DeadLetterInfo::default()
    }
}

#[cfg(test)]
mod tests;
