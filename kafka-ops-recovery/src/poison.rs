//! Poison records: a consumer that stopped on a record its handler cannot process, noticed by
//! [`PoisonRecordMonitor`] and moved out of the way by [`SkipPoisonRecord`] — dead-lettered in
//! the same format as the dead-letter layer's, so `kafka-ops dlq inspect` and `dlq replay` read
//! it like any other dead letter, and the group committed past it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::dead_letter::{DeadLetterSink, Delivered, Envelope};
use kafka_ops_core::handler::{ConsumerControl, HandlerError};
use kafka_ops_core::kafka::{KafkaCluster, RangeReader, commit_group_offsets};
use kafka_ops_core::{ErrorClass, Offset, TopicPartition};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::actions::RestartFuture;
use crate::engine::{Anomaly, Monitor, RecoveryAction, Signal};
use crate::error::RecoveryError;

/// The signal key of a consumer stopped on a record.
pub const POISON_RECORD: &str = "poison_record";

/// Watches a consumer (its driver's handle) and raises [`POISON_RECORD`] while its last run
/// ended on an unrecovered handler failure, naming the record:
/// `{"group", "topic", "partition", "offset", "class", "error"}` — what [`SkipPoisonRecord`]
/// needs.
pub struct PoisonRecordMonitor {
    name: String,
    consumer: Arc<dyn ConsumerControl>,
}

impl fmt::Debug for PoisonRecordMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoisonRecordMonitor")
            .field("name", &self.name)
            .finish()
    }
}

impl PoisonRecordMonitor {
    /// A monitor named `name` of `consumer`.
    pub fn new(name: impl Into<String>, consumer: Arc<dyn ConsumerControl>) -> Self {
        PoisonRecordMonitor {
            name: name.into(),
            consumer,
        }
    }
}

#[async_trait]
impl Monitor for PoisonRecordMonitor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn observe(&self) -> Result<Vec<Signal>, RecoveryError> {
        let signal = match self.consumer.stopped_on() {
            None => Signal::healthy(POISON_RECORD),
            Some(stopped) => Signal::anomaly(
                POISON_RECORD,
                format!(
                    "{} stopped on {}@{}: {}",
                    stopped.group, stopped.partition, stopped.offset, stopped.error
                ),
            )
            .with_details(json!({
                "group": stopped.group,
                "topic": stopped.partition.topic.as_ref(),
                "partition": stopped.partition.partition,
                "offset": stopped.offset.get(),
                "class": stopped.class,
                "error": stopped.error,
            })),
        };
        Ok(vec![signal])
    }
}

/// The failure a skipped record is dead-lettered with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Skipped(String);

/// Skips a poison record: reads it, dead-letters it through a [`DeadLetterSink`] with the
/// provenance an [`Envelope`] writes (the group from the anomaly, the handler's error as the
/// message and class), commits the group past it once the dead letter is acknowledged, and —
/// [with a restart hook](Self::then_restart) — starts the stopped consumer again, which carries
/// on after it.
/// The anomaly's details name it: `{"group", "topic", "partition", "offset"}` (and `"error"`,
/// `"class"` when known), as [`PoisonRecordMonitor`] writes them.
///
/// Safe to retry: it remembers each record it dead-lettered until it is done with it, so a try
/// after a failed commit commits without writing a second dead letter, and a try after a failed
/// restart finds the group just past the record it skipped and only restarts.
pub struct SkipPoisonRecord {
    client_config: ClientConfig,
    sink: Arc<dyn DeadLetterSink>,
    envelope: Envelope,
    restart: Option<Arc<dyn Fn() -> RestartFuture + Send + Sync>>,
    /// Records dead-lettered by a try whose commit or restart has not succeeded yet.
    lettered: Mutex<HashMap<RecordId, Lettered>>,
}

/// A poison record as a group stopped on it: group, partition, offset.
type RecordId = (String, TopicPartition, i64);

/// Where a record's dead letter was written.
#[derive(Debug, Clone)]
struct Lettered {
    topic: String,
    delivered: Delivered,
}

impl fmt::Debug for SkipPoisonRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkipPoisonRecord")
            .field("envelope", &self.envelope)
            .finish()
    }
}

impl SkipPoisonRecord {
    /// An action reading and committing through `client_config` and dead-lettering into `sink`
    /// with the default envelope (`<topic>.dlq`, same partition).
    pub fn new(client_config: ClientConfig, sink: Arc<dyn DeadLetterSink>) -> Self {
        SkipPoisonRecord {
            client_config,
            sink,
            envelope: Envelope::new("", "kafka-ops-self-healing"),
            restart: None,
            lettered: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the consumer again through `restart` once the record is skipped (it stopped on
    /// the record, so nothing else would).
    pub fn then_restart(mut self, restart: Arc<dyn Fn() -> RestartFuture + Send + Sync>) -> Self {
        self.restart = Some(restart);
        self
    }

    /// Dead-letters with `envelope` (its naming, partitioning, cause policy and clock; the
    /// group comes from each anomaly).
    pub fn with_envelope(mut self, envelope: Envelope) -> Self {
        self.envelope = envelope;
        self
    }
}

impl SkipPoisonRecord {
    /// The first offset `tp` still stores.
    async fn log_start(
        &self,
        cluster: &KafkaCluster,
        tp: &TopicPartition,
    ) -> Result<Option<Offset>, RecoveryError> {
        let marks = cluster
            .watermarks(
                std::slice::from_ref(tp),
                kafka_ops_core::IsolationLevel::ReadUncommitted,
            )
            .await?;
        Ok(marks
            .into_iter()
            .next()
            .and_then(|(_, marks)| marks.ok())
            .map(|marks| marks.low))
    }

    /// The dead letter an earlier try wrote for `id`, if one is still unfinished.
    fn remembered(&self, id: &RecordId) -> Option<Lettered> {
        let lettered = self.lettered.lock().unwrap_or_else(PoisonError::into_inner);
        lettered.get(id).cloned()
    }

    /// Remembers (`Some`) or forgets (`None`) `id`'s dead letter.
    fn set_remembered(&self, id: &RecordId, letter: Option<Lettered>) {
        let mut lettered = self.lettered.lock().unwrap_or_else(PoisonError::into_inner);
        match letter {
            Some(letter) => lettered.insert(id.clone(), letter),
            None => lettered.remove(id),
        };
    }

    /// Reads the record at `tp@offset` and dead-letters it with the anomaly's error.
    async fn dead_letter(
        &self,
        anomaly: &Anomaly,
        group: &str,
        tp: &TopicPartition,
        offset: Offset,
    ) -> Result<Lettered, RecoveryError> {
        let d = &anomaly.details;
        let record = RangeReader::new(&self.client_config)?
            .read_one(tp, offset)
            .await?
            .ok_or_else(|| failed(format!("no record at {tp}@{offset}")))?;
        let message = d["error"].as_str().unwrap_or(&anomaly.message).to_string();
        let class = serde_json::from_value::<ErrorClass>(d["class"].clone())
            .unwrap_or(ErrorClass::Permanent);
        let error = match class {
            ErrorClass::Transient => HandlerError::transient(Skipped(message)),
            ErrorClass::Fatal => HandlerError::fatal(Skipped(message)),
            _ => HandlerError::permanent(Skipped(message)),
        };
        let mut envelope = self.envelope.clone();
        envelope.group = group.to_string();
        let target = envelope.target_for(&record);
        let partitions = self.sink.partitions(&target).await;
        let letter = envelope.build(&record, &error, partitions)?;
        let delivered = self.sink.send(&letter).await?;
        Ok(Lettered {
            topic: letter.topic,
            delivered,
        })
    }
}

fn failed(reason: impl Into<String>) -> RecoveryError {
    RecoveryError::ActionFailed {
        action: "skip_poison_record".into(),
        reason: reason.into(),
    }
}

#[async_trait]
impl RecoveryAction for SkipPoisonRecord {
    fn name(&self) -> &str {
        "skip_poison_record"
    }

    async fn execute(&self, anomaly: &Anomaly) -> Result<String, RecoveryError> {
        let d = &anomaly.details;
        let (Some(group), Some(topic), Some(partition), Some(offset)) = (
            d["group"].as_str().filter(|g| !g.is_empty()),
            d["topic"].as_str(),
            d["partition"].as_i64().and_then(|p| i32::try_from(p).ok()),
            d["offset"].as_i64(),
        ) else {
            return Err(failed(format!("the anomaly does not name a record: {d}")));
        };
        let tp = TopicPartition::new(topic, partition);
        let offset = Offset::new(offset).map_err(kafka_ops_core::Error::from)?;
        let id: RecordId = (group.to_string(), tp.clone(), offset.get());
        let remembered = self.remembered(&id);
        // Only a group standing right at the record moves past it: below it, records before
        // the poison were not finished (unordered processing) and would be skipped with it;
        // above it, the group moved on and would be sent back.
        let cluster = KafkaCluster::from_config(&self.client_config)?;
        let committed = cluster
            .committed_offsets(group, std::slice::from_ref(&tp))
            .await?
            .into_iter()
            .next()
            .map(|(_, committed)| committed);
        let at_record = match committed {
            Some(Ok(Some(at))) if at == offset => true,
            // A group that never committed starts at the log's start: the poison record is
            // its first.
            Some(Ok(None)) if self.log_start(&cluster, &tp).await? == Some(offset) => true,
            // Just past a record this action dead-lettered: an earlier try committed, then
            // failed after (or did not hear the commit's answer); what is left is the restart.
            Some(Ok(Some(at))) if remembered.is_some() && at == offset.next() => false,
            Some(Ok(at)) => {
                return Err(failed(format!(
                    "{group} is at {} on {tp}, not at the poison record {offset}: not moved",
                    at.map_or_else(|| "no committed offset".to_string(), |o| o.to_string())
                )));
            }
            Some(Err(error)) => {
                return Err(failed(format!(
                    "cannot read {group}'s committed offset on {tp}: {error}"
                )));
            }
            None => return Err(failed(format!("no committed offset answer for {tp}"))),
        };
        // A dead letter an earlier try wrote is not written again: a retry after a failed
        // commit would put a second copy of the record in the dead-letter topic.
        let (lettered, earlier) = match remembered {
            Some(lettered) => (lettered, " (by an earlier try)"),
            None => {
                let lettered = self.dead_letter(anomaly, group, &tp, offset).await?;
                self.set_remembered(&id, Some(lettered.clone()));
                (lettered, "")
            }
        };
        if at_record {
            let mut config = self.client_config.clone();
            config.set("group.id", group);
            commit_group_offsets(&config, &[(tp.clone(), offset.next())]).await?;
        }
        let mut done = format!(
            "{tp}@{offset} dead-lettered to {}/{}@{}{earlier}; {group} committed past it",
            lettered.topic, lettered.delivered.partition, lettered.delivered.offset
        );
        if let Some(restart) = &self.restart {
            restart().await?;
            done.push_str("; consumer restarted");
        }
        // Done with it: a later stop on the same record (its group sent back) is a new one.
        self.set_remembered(&id, None);
        Ok(done)
    }
}
