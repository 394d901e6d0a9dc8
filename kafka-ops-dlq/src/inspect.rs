//! "DLQ filling up: sample messages to identify error patterns": depth per partition, a sample,
//! and the records grouped by error class and a normalized error-message fingerprint.

use std::collections::BTreeMap;

use kafka_ops_core::dead_letter::headers::{self, DeadLetterInfo};
use kafka_ops_core::dead_letter::{PartitionDepth, dead_letter_depths};
use kafka_ops_core::kafka::{KafkaCluster, Range, RangeReader, Step};
use kafka_ops_core::{ErrorClass, OwnedRecord, Timestamp};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::error::DlqError;

/// An error message with its variable parts (numbers, ids, quoted values) replaced, so
/// "offset 17 out of range" and "offset 942 out of range" are one pattern.
pub fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                // A quoted value: up to the matching quote (or the end).
                for next in chars.by_ref() {
                    if next == c {
                        break;
                    }
                }
                out.push_str("<str>");
            }
            c if c.is_ascii_hexdigit() => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_ascii_alphanumeric() || next == '-' || next == '_' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&normalize_word(&word));
            }
            c if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => {
                out.push(c);
                // Letters start words that are kept whole (so "id42" stays a word with a number).
                if c.is_alphabetic() {
                    while let Some(&next) = chars.peek() {
                        if next.is_alphanumeric() || next == '_' {
                            out.push(if next.is_ascii_digit() { '#' } else { next });
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
        }
    }
    out.trim().to_string()
}

fn normalize_word(word: &str) -> String {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    let hex = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if word.chars().all(|c| c.is_ascii_digit()) {
        "#".into()
    } else if hex && digits > 0 && word.len() >= 8 {
        "<id>".into()
    } else {
        // An ordinary word that happens to start with a-f ("failed", "bad42").
        word.chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect()
    }
}

/// A 16-hex-digit fingerprint of a normalized message.
pub fn fingerprint(message: &str) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(normalize(message).as_bytes())
    )
}

/// Records of one error pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pattern {
    /// The error class (`None` for foreign records without one).
    pub error_class: Option<ErrorClass>,
    /// The exception type, for foreign formats.
    pub error_type: Option<String>,
    /// [`fingerprint`] of the message.
    pub fingerprint: String,
    /// The normalized message.
    pub normalized: String,
    /// One real message of the pattern.
    pub example: String,
    /// How many records.
    pub count: u64,
    /// Earliest failure (or dead-letter record time).
    pub first_seen: Option<Timestamp>,
    /// Latest.
    pub last_seen: Option<Timestamp>,
    /// Source topics the pattern came from.
    pub original_topics: Vec<String>,
}

/// Groups dead-letter records into [`Pattern`]s, largest first.
#[derive(Debug, Default)]
pub struct Patterns {
    groups: BTreeMap<(Option<&'static str>, Option<String>, String), Pattern>,
}

impl Patterns {
    /// Adds one dead-letter record.
    pub fn add(&mut self, record: &OwnedRecord) {
        let info = headers::parse(&record.headers);
        self.add_info(&info, record.timestamp.time());
    }

    /// Adds a parsed record (`time`: the dead-letter record's own timestamp, used when the
    /// headers carry no failure time).
    pub fn add_info(&mut self, info: &DeadLetterInfo, time: Option<Timestamp>) {
        let message = info
            .error_message
            .clone()
            .unwrap_or_else(|| "<no message>".into());
        let normalized = normalize(&message);
        let fingerprint = fingerprint(&message);
        let key = (
            info.error_class.map(ErrorClass::as_str),
            info.error_type.clone(),
            fingerprint.clone(),
        );
        let first = info.first_failure.or(time);
        let last = info.last_failure.or(time);
        let pattern = self.groups.entry(key).or_insert_with(|| Pattern {
            error_class: info.error_class,
            error_type: info.error_type.clone(),
            fingerprint,
            normalized,
            example: message,
            count: 0,
            first_seen: first,
            last_seen: last,
            original_topics: Vec::new(),
        });
        pattern.count += 1;
        pattern.first_seen = match (pattern.first_seen, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        pattern.last_seen = match (pattern.last_seen, last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(topic) = &info.original_topic
            && !pattern.original_topics.contains(topic)
        {
            pattern.original_topics.push(topic.clone());
        }
    }

    /// The patterns, most frequent first.
    pub fn into_sorted(self) -> Vec<Pattern> {
        let mut patterns: Vec<Pattern> = self.groups.into_values().collect();
        patterns.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        patterns
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The dead-letter topic.
    pub topic: String,
    /// Per partition.
    pub partitions: Vec<PartitionDepth>,
    /// Records waiting in all.
    pub depth: u64,
    /// Error patterns over every record read, most frequent first.
    pub patterns: Vec<Pattern>,
    /// The first `sample` records read, parsed.
    #[serde(skip)]
    pub sample: Vec<(OwnedRecord, DeadLetterInfo)>,
    /// Records read (all of them, up to the end offsets taken at the start).
    pub read: u64,
}

/// Reads `topic` from its start to the end offsets of the moment it was called (records
/// arriving meanwhile are left for next time), and reports depth, `sample` records and the
/// error patterns. Needs no consumer group membership and commits nothing.
pub async fn inspect(
    client_config: &ClientConfig,
    topic: &str,
    sample: usize,
) -> Result<Inspection, DlqError> {
    let cluster = KafkaCluster::from_config(client_config)?;
    let depths = dead_letter_depths(&cluster, &[topic.to_string()], None).await?;
    let partitions: Vec<PartitionDepth> = depths
        .get(topic)
        .ok_or_else(|| DlqError::Config(format!("topic {topic} does not exist")))?
        .iter()
        .map(|(partition, depth)| {
            depth.clone().map_err(|e| {
                DlqError::Config(format!("depth of {topic}/{partition} unreadable: {e}"))
            })
        })
        .collect::<Result<_, _>>()?;
    let config = client_config.clone();
    let topic = topic.to_string();
    let read = move || -> Result<Inspection, DlqError> {
        let reader = RangeReader::with_group(&config, "kafka-ops-dlq-inspect")?;
        let ranges: Vec<Range> = partitions
            .iter()
            .map(|p| Range {
                partition: p.partition,
                start: p.low,
                end: p.high,
            })
            .collect();
        let mut patterns = Patterns::default();
        let mut samples = Vec::new();
        let mut read = 0_u64;
        reader.read(&topic, &ranges, |step| {
            if let Step::Record(record) = step {
                let record = record.into_owned();
                patterns.add(&record);
                read += 1;
                if samples.len() < sample {
                    let info = headers::parse(&record.headers);
                    samples.push((record, info));
                }
            }
            Ok::<(), DlqError>(())
        })?;
        Ok(Inspection {
            depth: partitions.iter().map(PartitionDepth::depth).sum(),
            topic,
            partitions,
            patterns: patterns.into_sorted(),
            sample: samples,
            read,
        })
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| DlqError::Config(format!("inspector task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kafka_ops_core::dead_letter::headers::Format;

    #[test]
    fn normalizing_keeps_the_shape_and_drops_the_values() {
        assert_eq!(
            normalize("offset 17 out of range for partition 3"),
            "offset # out of range for partition #"
        );
        assert_eq!(
            normalize("order 'A-17' failed:  user 5f2b9c1e-0d7a-4b1e-9c3a-1e2f3a4b5c6d   unknown"),
            "order <str> failed: user <id> unknown"
        );
        assert_eq!(normalize("bad42 deadbeef00 cafe"), "bad## <id> cafe");
        assert_eq!(
            fingerprint("timeout after 3000 ms"),
            fingerprint("timeout after 45 ms")
        );
        assert_ne!(
            fingerprint("timeout after 3000 ms"),
            fingerprint("bad amount")
        );
    }

    fn info(class: Option<ErrorClass>, message: &str, first: i64, topic: &str) -> DeadLetterInfo {
        DeadLetterInfo {
            format: Some(Format::KafkaOps(1)),
            error_class: class,
            error_message: Some(message.into()),
            first_failure: Some(Timestamp::from_millis(first)),
            last_failure: Some(Timestamp::from_millis(first + 10)),
            original_topic: Some(topic.into()),
            ..DeadLetterInfo::default()
        }
    }

    #[test]
    fn patterns_group_by_class_and_fingerprint_with_counts_and_times() {
        let mut patterns = Patterns::default();
        let p = Some(ErrorClass::Permanent);
        patterns.add_info(&info(p, "amount 12 is negative", 300, "orders"), None);
        patterns.add_info(&info(p, "amount 7 is negative", 100, "refunds"), None);
        patterns.add_info(&info(p, "amount 9 is negative", 200, "orders"), None);
        patterns.add_info(
            &info(
                Some(ErrorClass::Transient),
                "amount 1 is negative",
                50,
                "orders",
            ),
            None,
        );
        patterns.add_info(&info(p, "unknown currency 'XYZ'", 400, "orders"), None);
        let sorted = patterns.into_sorted();
        assert_eq!(sorted.len(), 3);
        let top = &sorted[0];
        assert_eq!(top.count, 3);
        assert_eq!(top.normalized, "amount # is negative");
        assert_eq!(top.example, "amount 12 is negative");
        assert_eq!(top.first_seen, Some(Timestamp::from_millis(100)));
        assert_eq!(top.last_seen, Some(Timestamp::from_millis(310)));
        assert_eq!(
            top.original_topics,
            vec!["orders".to_string(), "refunds".to_string()]
        );
        assert_eq!(sorted.iter().map(|p| p.count).sum::<u64>(), 5);
    }
}
