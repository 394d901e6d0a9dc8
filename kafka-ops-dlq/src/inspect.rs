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
///
/// Each run of digits becomes one `#`, inside words too ("3000ms" and "45ms" are both `#ms`);
/// a hex word of at least 8 characters with a digit (a UUID, a hash) becomes `<id>`; a value
/// in quotes becomes `<str>`. A quote is taken as one only where it opens a value — at the
/// start, after a space, `=`, `:`, `,` or an opening bracket — and something closes it, so the
/// apostrophe of "can't" or "owner's" stays a letter of its word.
pub fn normalize(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    // Per quote, `"` then `'`: a search for its closing quote already reached the end, so no
    // later one is closed either — searching again would make a long message of unclosed
    // quotes cost quadratic time.
    let mut unclosed = [false; 2];
    let mut at = 0;
    while let Some(&c) = chars.get(at) {
        let previous = at.checked_sub(1).and_then(|i| chars.get(i)).copied();
        let kind = usize::from(c == '\'');
        if (c == '"' || c == '\'') && previous.is_none_or(opens_value) && !unclosed[kind] {
            match closing_quote(&chars, at) {
                Some(close) => {
                    out.push_str("<str>");
                    at = close + 1;
                    continue;
                }
                None => unclosed[kind] = true,
            }
        }
        if c.is_ascii_hexdigit() {
            // Hex words take `-` in, so a UUID is one word.
            let end = word_end(&chars, at, |next| {
                next.is_ascii_alphanumeric() || next == '-' || next == '_'
            });
            out.push_str(&normalize_word(&chars[at..end].iter().collect::<String>()));
            at = end;
        } else if c.is_alphabetic() {
            // Other words are kept, with their digits collapsed ("id42" is `id#`).
            let end = word_end(&chars, at, |next| next.is_alphanumeric() || next == '_');
            push_collapsing_digits(&mut out, chars[at..end].iter().copied());
            at = end;
        } else {
            if !c.is_whitespace() {
                out.push(c);
            } else if !out.ends_with(' ') {
                out.push(' ');
            }
            at += 1;
        }
    }
    out.trim().to_string()
}

/// Whether a quote after `c` opens a value: after a word character it is an apostrophe.
fn opens_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '=' | ':' | ',' | '(' | '[' | '{' | '<')
}

/// The index of the quote closing the one at `open`: the next same quote not followed by a
/// letter or digit (the apostrophe of "o'brien" inside a value does not close it).
fn closing_quote(chars: &[char], open: usize) -> Option<usize> {
    let quote = *chars.get(open)?;
    (open + 1..chars.len()).find(|&i| {
        chars.get(i) == Some(&quote) && !chars.get(i + 1).is_some_and(|next| next.is_alphanumeric())
    })
}

/// The index after the word starting at `start`, its later characters those `inside` takes.
fn word_end(chars: &[char], start: usize, inside: impl Fn(char) -> bool) -> usize {
    (start + 1..chars.len())
        .find(|&i| chars.get(i).is_none_or(|&c| !inside(c)))
        .unwrap_or(chars.len())
}

/// Pushes `word` with each run of digits as one `#`: one cause, whatever its numbers' lengths.
fn push_collapsing_digits(out: &mut String, word: impl IntoIterator<Item = char>) {
    let mut in_digits = false;
    for c in word {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
}

fn normalize_word(word: &str) -> String {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    let hex = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if hex && digits > 0 && word.len() >= 8 && word.chars().any(|c| !c.is_ascii_digit()) {
        "<id>".into()
    } else {
        // A number, or an ordinary word that happens to start with a-f ("failed", "bad42").
        let mut out = String::with_capacity(word.len());
        push_collapsing_digits(&mut out, word.chars());
        out
    }
}

/// A 16-hex-digit fingerprint of a normalized message.
pub fn fingerprint(message: &str) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(normalize(message).as_bytes())
    )
}

/// The message a dead letter is grouped and selected by: its error message, or
/// `<no message>` where its headers carry none (Karafka's). [`Patterns`] and a replay's
/// fingerprint selection both go through it, so a fingerprint inspect shows selects exactly
/// its pattern's records.
pub fn pattern_message(info: &DeadLetterInfo) -> &str {
    info.error_message.as_deref().unwrap_or("<no message>")
}

/// [`fingerprint`] of [`pattern_message`].
pub fn pattern_fingerprint(info: &DeadLetterInfo) -> String {
    fingerprint(pattern_message(info))
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
        let message = pattern_message(info).to_string();
        let normalized = normalize(&message);
        let fingerprint = pattern_fingerprint(info);
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
        assert_eq!(normalize("bad42 deadbeef00 cafe"), "bad# <id> cafe");
        assert_eq!(
            fingerprint("timeout after 3000 ms"),
            fingerprint("timeout after 45 ms")
        );
        assert_ne!(
            fingerprint("timeout after 3000 ms"),
            fingerprint("bad amount")
        );
    }

    #[test]
    fn an_apostrophe_inside_a_word_does_not_open_a_quoted_value() {
        assert_ne!(
            fingerprint("can't parse amount 12"),
            fingerprint("can't reach inventory service")
        );
        assert_eq!(normalize("can't parse amount 12"), "can't parse amount #");
        assert_eq!(
            fingerprint("can't parse amount 12"),
            fingerprint("can't parse amount 7")
        );
        // A value in quotes still is one, wherever it opens a value, apostrophes around it.
        assert_eq!(
            normalize("user 'bob' can't log in, key='k-1' (\"x y\") didn't"),
            "user <str> can't log in, key=<str> (<str>) didn't"
        );
        assert_eq!(
            normalize("owner's account 'o'brien's' locked"),
            "owner's account <str> locked"
        );
        // A quote nothing closes is kept as it is, not taken to the end.
        assert_eq!(
            normalize("unterminated 'value 12 and more"),
            "unterminated 'value # and more"
        );
        assert_eq!(normalize("'quoted' start"), "<str> start");
        assert_eq!(normalize("a 'b 'c"), "a 'b 'c");
        assert_eq!(normalize("x \"y 'z' w"), "x \"y <str> w");
    }

    #[test]
    fn a_run_of_digits_is_one_placeholder_wherever_it_is() {
        assert_eq!(
            fingerprint("timeout after 3000ms"),
            fingerprint("timeout after 45ms")
        );
        assert_eq!(normalize("timeout after 3000ms"), "timeout after #ms");
        assert_eq!(
            fingerprint("order ORD123 not found"),
            fingerprint("order ORD1234 not found")
        );
        assert_eq!(normalize("order ORD1234 not found"), "order ORD# not found");
        assert_eq!(
            normalize("v2 of s3-eu-1 took 12.5s"),
            "v# of s#-eu-# took #.#s"
        );
        assert_ne!(
            fingerprint("timeout after 3000ms"),
            fingerprint("timeout after 3000 retries")
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
