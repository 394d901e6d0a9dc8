//! Archive and purge: "purge only after investigation".
//!
//! [`archive`] copies a topic, up to the end offsets of the moment it starts, to a file of JSON
//! lines — one record per line, key, value and header values in base64, nothing lost — written
//! to a temporary name and renamed only once complete and synced. Records removed from the
//! topic while it reads them (retention, another purge) make it fail
//! ([`DlqError::ArchiveIncomplete`]) rather than write an archive with a hole. [`read_archive`]
//! reads it back. [`purge`] archives first, then deletes exactly what it archived (admin
//! `DeleteRecords` up to the offset after each partition's last archived record), and only when
//! the caller confirms by naming the topic again; a broker that cannot delete records gets a
//! clear refusal, the archive kept.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::{Range, RangeReader, Step};
use kafka_ops_core::{KafkaCode, Offset, OwnedRecord, Record, RecordTimestamp, Timestamp};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::DlqError;

/// One header of an [`ArchivedRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedHeader {
    /// Name.
    pub key: String,
    /// Value in base64; `None` for a null value.
    pub value: Option<String>,
}

/// One line of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in milliseconds, when the record had one.
    pub timestamp: Option<i64>,
    /// `create` or `log-append`, when it had a timestamp.
    pub timestamp_type: Option<String>,
    /// Key in base64; `None` for a null key.
    pub key: Option<String>,
    /// Value in base64; `None` for a tombstone.
    pub value: Option<String>,
    /// Headers in order.
    pub headers: Vec<ArchivedHeader>,
}

impl ArchivedRecord {
    /// The archive line for `record`.
    pub fn from_record(record: &Record<'_>) -> Self {
        let (timestamp, timestamp_type) = match record.timestamp {
            RecordTimestamp::NotAvailable => (None, None),
            RecordTimestamp::CreateTime(t) => (Some(t.as_millis()), Some("create".to_string())),
            RecordTimestamp::LogAppendTime(t) => {
                (Some(t.as_millis()), Some("log-append".to_string()))
            }
        };
        ArchivedRecord {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset.get(),
            timestamp,
            timestamp_type,
            key: record.key().map(|k| BASE64.encode(k)),
            value: record.value().map(|v| BASE64.encode(v)),
            headers: record
                .headers
                .iter()
                .map(|h| ArchivedHeader {
                    key: h.key.to_string(),
                    value: h.value.as_deref().map(|v| BASE64.encode(v)),
                })
                .collect(),
        }
    }

    /// The record this line holds.
    pub fn to_record(&self) -> Result<OwnedRecord, String> {
        let decode = |field: &str, text: &Option<String>| -> Result<Option<Vec<u8>>, String> {
            text.as_deref()
                .map(|t| BASE64.decode(t).map_err(|e| format!("{field}: {e}")))
                .transpose()
        };
        let offset = Offset::new(self.offset).map_err(|e| format!("offset: {e}"))?;
        let mut record = Record::new(self.topic.clone(), self.partition, offset);
        record.key = decode("key", &self.key)?.map(Into::into);
        record.value = decode("value", &self.value)?.map(Into::into);
        for header in &self.headers {
            let value = decode(&header.key, &header.value)?;
            record.headers.push(header.key.clone(), value);
        }
        record.timestamp = match (self.timestamp, self.timestamp_type.as_deref()) {
            (Some(t), Some("log-append")) => {
                RecordTimestamp::LogAppendTime(Timestamp::from_millis(t))
            }
            (Some(t), _) => RecordTimestamp::CreateTime(Timestamp::from_millis(t)),
            (None, _) => RecordTimestamp::NotAvailable,
        };
        Ok(record)
    }
}

/// Archived offsets of one partition, `[from, to)`: every record the partition held there (as
/// a `read_committed` reader sees it) is in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArchivedRange {
    /// Partition.
    pub partition: i32,
    /// The partition's start offset when the archive began.
    pub from: i64,
    /// The offset after the last record archived (`from` when none was). It falls short of
    /// the partition's end offset of the start where the last offsets held no readable record:
    /// transaction markers, records of aborted transactions.
    pub to: i64,
}

/// What [`archive`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    /// The topic.
    pub topic: String,
    /// The archive file.
    pub path: PathBuf,
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Offsets archived per partition.
    pub ranges: Vec<ArchivedRange>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DlqError + '_ {
    move |source| DlqError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Archives `topic` from its start to the end offsets of now into `path` (JSON lines),
/// calling `progress(records written, records to write)` as it goes. The file appears only
/// once complete; an existing file is not overwritten. Records removed while they are read
/// (retention deleting old segments, another purge) end it with
/// [`DlqError::ArchiveIncomplete`], nothing written: archiving again starts from what is left.
pub async fn archive(
    client_config: &ClientConfig,
    topic: &str,
    path: &Path,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<ArchiveReport, DlqError> {
    if path.exists() {
        return Err(DlqError::Refused(format!(
            "{} exists; an archive is never overwritten",
            path.display()
        )));
    }
    let config = client_config.clone();
    let topic = topic.to_string();
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let reader = RangeReader::with_group(&config, "kafka-ops-dlq-archive")?;
        let ranges: Vec<Range> = reader
            .topic_watermarks(&topic)?
            .into_iter()
            .map(|(partition, low, high)| Range {
                partition,
                start: low,
                end: high,
            })
            .collect();
        let total: u64 = ranges
            .iter()
            .map(|r| u64::try_from(r.end - r.start).unwrap_or(0))
            .sum();
        let partial = path.with_extension("partial");
        let file = File::create(&partial).map_err(io_error(&partial))?;
        let mut out = BufWriter::new(file);
        let mut records = 0_u64;
        let mut bytes = 0_u64;
        // The offset after each partition's last record written: what purge may delete.
        let mut archived_to: BTreeMap<i32, i64> = BTreeMap::new();
        let result = reader.read(&topic, &ranges, |step| {
            // Records removed before they were read (retention, another purge): the archive
            // would have a hole, and purge would delete what it never archived.
            if let Step::Removed(removed) = &step {
                return Err(DlqError::ArchiveIncomplete {
                    topic: removed.topic.clone(),
                    partitions: vec![removed.partition],
                    source: Box::new(kafka_ops_core::Error::Kafka {
                        operation: "archive",
                        code: Some(KafkaCode::OFFSET_OUT_OF_RANGE),
                        source: format!(
                            "offsets {} to {} of partition {} were removed before they were read",
                            removed.from,
                            removed.to - 1,
                            removed.partition
                        )
                        .into(),
                    }),
                });
            }
            if let Step::Record(record) = step {
                let line = serde_json::to_string(&ArchivedRecord::from_record(&record))
                    .map_err(|e| DlqError::Config(format!("archive line: {e}")))?;
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(io_error(&partial))?;
                archived_to.insert(record.partition, record.offset.get() + 1);
                records += 1;
                bytes += line.len() as u64 + 1;
                if records.is_multiple_of(1_000) {
                    progress(records, total);
                }
            }
            Ok::<(), DlqError>(())
        });
        let archived: Vec<ArchivedRange> = ranges
            .iter()
            .map(|r| ArchivedRange {
                partition: r.partition,
                from: r.start,
                to: archived_to.get(&r.partition).copied().unwrap_or(r.start),
            })
            .collect();
        let result = result.map_err(|error| match error {
            DlqError::Kafka(source) if source.code() == Some(KafkaCode::OFFSET_OUT_OF_RANGE) => {
                let short: Vec<i32> = ranges
                    .iter()
                    .zip(&archived)
                    .filter(|(range, done)| done.to < range.end)
                    .map(|(range, _)| range.partition)
                    .collect();
                // The log was truncated under the archive (the reader names the partition
                // only in its message): those not read to their end are the ones affected.
                DlqError::ArchiveIncomplete {
                    topic: topic.clone(),
                    partitions: short,
                    source: Box::new(source),
                }
            }
            other => other,
        });
        let finish = result.and_then(|()| {
            let file = out
                .into_inner()
                .map_err(|e| io_error(&partial)(e.into_error()))?;
            file.sync_all().map_err(io_error(&partial))?;
            std::fs::rename(&partial, &path).map_err(io_error(&path))
        });
        if let Err(error) = finish {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        progress(records, total);
        Ok(ArchiveReport {
            topic,
            path,
            records,
            bytes,
            ranges: archived,
        })
    })
    .await
    .map_err(|e| DlqError::Config(format!("archive task failed: {e}")))?
}

/// Reads an archive back, line by line; a damaged line is an error naming its line number.
pub fn read_archive(path: &Path) -> Result<Vec<OwnedRecord>, DlqError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut records = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_error(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| DlqError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {reason}", number + 1),
            ),
        };
        let archived: ArchivedRecord =
            serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        records.push(archived.to_record().map_err(bad)?);
    }
    Ok(records)
}

/// What [`purge`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// The archive written first.
    pub archive: ArchiveReport,
    /// The new start offset per partition after the deletion.
    pub low_watermarks: BTreeMap<i32, i64>,
}

/// The bound on each DeleteRecords request.
const DELETE_TIMEOUT: Duration = Duration::from_secs(15);

/// Archives `topic` to `archive_path`, then deletes the archived records from it: each
/// partition up to the offset after its last archived record ([`ArchivedRange::to`]), never
/// further, so a record the archive does not hold is never deleted. `confirm` must be the
/// topic's name (as a person would type it): anything else refuses before anything is read.
/// An archive that could not read every record ([`DlqError::ArchiveIncomplete`]) deletes
/// nothing at all. A broker that cannot delete records ([`DlqError::Unsupported`]) leaves the
/// topic untouched and the archive in place.
pub async fn purge(
    client_config: &ClientConfig,
    topic: &str,
    archive_path: &Path,
    confirm: &str,
) -> Result<PurgeReport, DlqError> {
    purge_with_progress(client_config, topic, archive_path, confirm, |_, _| {}).await
}

/// [`purge`], calling `progress(records written, records to write)` while the archive is
/// written, as [`archive`] does: a large topic takes a while to archive before anything is
/// deleted.
pub async fn purge_with_progress(
    client_config: &ClientConfig,
    topic: &str,
    archive_path: &Path,
    confirm: &str,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<PurgeReport, DlqError> {
    if confirm != topic {
        return Err(DlqError::Refused(format!(
            "purging deletes records: confirm by naming the topic ({topic}), got {confirm:?}"
        )));
    }
    let archived = archive(client_config, topic, archive_path, progress).await?;
    // Up to what was archived, not to the end offsets the archive set out for: offsets after
    // a partition's last archived record hold nothing readable (markers, aborted records), and
    // deleting to a planned end would lose any record the read did not reach.
    let before: Vec<(i32, Offset)> = archived
        .ranges
        .iter()
        .filter(|r| r.to > r.from)
        .map(|r| Offset::new(r.to).map(|to| (r.partition, to)))
        .collect::<Result<_, _>>()
        .map_err(kafka_ops_core::Error::from)?;
    if before.is_empty() {
        return Ok(PurgeReport {
            archive: archived,
            low_watermarks: BTreeMap::new(),
        });
    }
    let cluster = KafkaCluster::from_config(client_config)?.with_timeout(DELETE_TIMEOUT);
    let archive_at = archived.path.display().to_string();
    let low_watermarks = match cluster.delete_records(topic, &before).await {
        Ok(low) => low.into_iter().map(|(p, o)| (p, o.get())).collect(),
        Err(error) => {
            let unsupported = error.code().is_some_and(KafkaCode::is_unsupported);
            return Err(match error {
                _ if unsupported => DlqError::Unsupported {
                    operation: "DeleteRecords",
                    reason: format!("{error}; nothing was deleted, the archive is at {archive_at}"),
                },
                kafka_ops_core::Error::Timeout { .. } => DlqError::Unsupported {
                    operation: "DeleteRecords",
                    reason: format!(
                        "{error}: the broker may or may not have deleted the records; the \
                         archive at {archive_at} holds every one of them"
                    ),
                },
                other => other.into(),
            });
        }
    };
    tracing::warn!(%topic, archive = %archived.path.display(), records = archived.records,
        "dead letters purged after archiving");
    Ok(PurgeReport {
        archive: archived,
        low_watermarks,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any record survives a trip through an archive line: bytes, nulls, header order.
        #[test]
        fn archive_lines_round_trip(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
            headers in proptest::collection::vec(
                ("[a-z.-]{1,12}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32))),
                0..6,
            ),
            time in proptest::option::of((0_i64..4_000_000_000_000, any::<bool>())),
            offset in 0_i64..i64::MAX,
        ) {
            let mut record = Record::new("t", 3, Offset::new(offset).unwrap());
            record.key = key.map(Into::into);
            record.value = value.map(Into::into);
            for (name, value) in headers {
                record.headers.push(name, value);
            }
            record.timestamp = match time {
                None => RecordTimestamp::NotAvailable,
                Some((t, true)) => RecordTimestamp::CreateTime(Timestamp::from_millis(t)),
                Some((t, false)) => RecordTimestamp::LogAppendTime(Timestamp::from_millis(t)),
            };
            let line = serde_json::to_string(&ArchivedRecord::from_record(&record)).unwrap();
            let back: ArchivedRecord = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(back.to_record().unwrap(), record);
        }
    }

    #[test]
    fn damaged_lines_are_reported_with_their_number() {
        let path =
            std::env::temp_dir().join(format!("kafka-ops-archive-{}.jsonl", std::process::id()));
        let good = ArchivedRecord::from_record(&Record::new("t", 0, Offset::new(1).unwrap()));
        let mut bad_base64 = good.clone();
        bad_base64.value = Some("not base64!".into());
        let text = format!(
            "{}\n{}\n",
            serde_json::to_string(&good).unwrap(),
            serde_json::to_string(&bad_base64).unwrap()
        );
        std::fs::write(&path, text).unwrap();
        let error = read_archive(&path).unwrap_err().to_string();
        assert!(
            error.contains("line 2") && error.contains("value"),
            "{error}"
        );
        std::fs::write(&path, "{\"topic\":").unwrap();
        assert!(
            read_archive(&path)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        std::fs::remove_file(&path).unwrap();
    }
}
