//! [`OffsetQuery`] on librdkafka: watermarks, ListOffsets, committed offsets and record
//! timestamps, batched per partition leader.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use super::{Inner, KafkaCluster, leader_chunks, merge_batch, no_answer, unique};
use crate::cluster::{OffsetQuery, PartitionError, PartitionResults, PerGroup};
use crate::error::Error;
use crate::ffi::{self, BatchResults};
use crate::kafka::RangeReader;
use crate::types::{
    IsolationLevel, ListedOffset, Offset, OffsetSpec, Timestamp, TopicPartition, Watermarks,
};

#[async_trait]
impl OffsetQuery for KafkaCluster {
    async fn watermarks(
        &self,
        partitions: &[TopicPartition],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<Watermarks>, Error> {
        let partitions = unique(partitions.iter().cloned());
        self.blocking(move |inner| {
            let started = Instant::now();
            let mut batches = Vec::new();
            for chunk in leader_chunks(inner, &partitions)? {
                for spec in [OffsetSpec::Earliest, OffsetSpec::Latest] {
                    batches.push(
                        chunk
                            .iter()
                            .map(|tp| (tp.clone(), spec))
                            .collect::<Vec<_>>(),
                    );
                }
            }
            let results = send_list_offsets(inner, &batches, isolation, started)?;
            let mut low = HashMap::new();
            let mut high = HashMap::new();
            for (batch, answers) in batches.iter().zip(results) {
                let target = match batch.first() {
                    Some((_, OffsetSpec::Earliest)) => &mut low,
                    _ => &mut high,
                };
                merge_batch(target, batch.iter().map(|(tp, _)| tp), answers);
            }
            Ok(partitions
                .iter()
                .map(|tp| {
                    let answer = match (low.get(tp), high.get(tp)) {
                        (Some(Ok(low)), Some(Ok(high))) => match (low.offset, high.offset) {
                            (Some(low), Some(high)) => Ok(Watermarks { low, high }),
                            _ => Err(PartitionError {
                                code: None,
                                reason: "broker returned no offset".into(),
                            }),
                        },
                        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e.clone()),
                        _ => Err(PartitionError {
                            code: None,
                            reason: "no answer for this partition".into(),
                        }),
                    };
                    (tp.clone(), answer)
                })
                .collect())
        })
        .await
    }

    async fn list_offsets(
        &self,
        queries: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<ListedOffset>, Error> {
        let queries = unique(
            queries
                .iter()
                .cloned()
                .map(|(tp, spec)| (tp, SpecKey(spec))),
        );
        let queries: Vec<(TopicPartition, OffsetSpec)> = queries
            .into_iter()
            .map(|(tp, SpecKey(spec))| (tp, spec))
            .collect();
        self.blocking(move |inner| {
            let started = Instant::now();
            // ListOffsets takes one spec per partition: a partition asked with several specs
            // (its earliest and latest offsets, say) is asked once per spec, in rounds. The
            // rounds are separate requests sent together, as `watermarks` sends its two, so
            // the call takes its slowest round, within one bound.
            let mut rounds: Vec<HashMap<TopicPartition, OffsetSpec>> = Vec::new();
            for (tp, spec) in &queries {
                match rounds.iter_mut().find(|round| !round.contains_key(tp)) {
                    Some(round) => {
                        round.insert(tp.clone(), *spec);
                    }
                    None => rounds.push(HashMap::from([(tp.clone(), *spec)])),
                }
            }
            let partitions = unique(queries.iter().map(|(tp, _)| tp.clone()));
            let chunks = leader_chunks(inner, &partitions)?;
            let mut batches: Vec<Vec<(TopicPartition, OffsetSpec)>> = Vec::new();
            let mut round_of_batch = Vec::new();
            for (index, specs) in rounds.iter().enumerate() {
                for chunk in &chunks {
                    let batch: Vec<(TopicPartition, OffsetSpec)> = chunk
                        .iter()
                        .filter_map(|tp| specs.get(tp).map(|spec| (tp.clone(), *spec)))
                        .collect();
                    if !batch.is_empty() {
                        batches.push(batch);
                        round_of_batch.push(index);
                    }
                }
            }
            let results = send_list_offsets(inner, &batches, isolation, started)?;
            let mut answered: Vec<HashMap<TopicPartition, _>> =
                rounds.iter().map(|_| HashMap::new()).collect();
            for ((batch, result), index) in batches.iter().zip(results).zip(round_of_batch) {
                merge_batch(&mut answered[index], batch.iter().map(|(tp, _)| tp), result);
            }
            let mut answers = BTreeMap::new();
            for (specs, mut round) in rounds.into_iter().zip(answered) {
                for (tp, spec) in specs {
                    let answer = round.remove(&tp).unwrap_or_else(|| Err(no_answer()));
                    answers.insert((tp, SpecKey(spec)), answer);
                }
            }
            Ok(queries
                .into_iter()
                .map(|(tp, spec)| {
                    let answer = answers
                        .remove(&(tp.clone(), SpecKey(spec)))
                        .unwrap_or_else(|| Err(no_answer()));
                    (tp, answer)
                })
                .collect())
        })
        .await
    }

    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<PartitionResults<Option<Offset>>, Error> {
        let mut answers = self
            .groups_committed_offsets(&[group.to_string()], partitions)
            .await?;
        answers
            .pop()
            .map_or_else(|| Ok(Vec::new()), |(_, answer)| answer)
    }

    async fn groups_committed_offsets(
        &self,
        groups: &[String],
        partitions: &[TopicPartition],
    ) -> Result<PerGroup<PartitionResults<Option<Offset>>>, Error> {
        let groups = unique(groups.iter().cloned());
        let partitions = unique(partitions.iter().cloned());
        self.blocking(move |inner| {
            let answers = inner.committed(&groups, &partitions);
            Ok(groups.into_iter().zip(answers).collect())
        })
        .await
    }

    async fn record_timestamps(
        &self,
        positions: &[(TopicPartition, Offset)],
    ) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error> {
        let positions = unique(positions.iter().cloned());
        self.blocking(move |inner| read_timestamps(inner, &positions))
            .await
    }
}

/// From this many batches in one call, they are split over two admin handles.
const SPLIT_FROM_BATCHES: usize = 8;

/// Sends each of `batches` as one ListOffsets call (one request per leader of its partitions;
/// the callers' batches each have one leader once there are several) and returns the answers
/// in order, within what is left of the client's bound for a call that began at `started`.
///
/// librdkafka runs every admin request of a handle on that handle's one main thread, which parses
/// each answer and merges it into its call by linear search; the calling thread splits each
/// call's partitions by leader, again by linear search. A snapshot of 10 000 partitions (158
/// batches) was bound by those two threads on one core each. A large call therefore sends half
/// its batches through a second handle from a second thread. A handle costs a main thread, a
/// thread and a connection per broker, so small calls stay on one. Both halves share the
/// client's one bound.
fn send_list_offsets(
    inner: &Inner<'_>,
    batches: &[Vec<(TopicPartition, OffsetSpec)>],
    isolation: IsolationLevel,
    started: Instant,
) -> Result<BatchResults<ListedOffset>, Error> {
    let on = |admin: &AdminClient<DefaultClientContext>, batches| {
        let left = inner
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        ffi::list_offsets(admin.inner(), batches, isolation, left)
    };
    let second = if batches.len() >= SPLIT_FROM_BATCHES {
        inner.second_admin()
    } else {
        None
    };
    let Some(second) = second else {
        return on(inner.admin, batches);
    };
    let (front, back) = batches.split_at(batches.len() / 2);
    let (front, back) = std::thread::scope(|scope| {
        let back_thread = std::thread::Builder::new()
            .name("kafka-ops-offsets".into())
            .spawn_scoped(scope, || on(second, back));
        let front = on(inner.admin, front);
        let back = match back_thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: the second half goes after the first, on this one, in what
            // is left of the bound.
            Err(_) => on(second, back),
        };
        (front, back)
    });
    let mut answers = front?;
    answers.extend(back?);
    Ok(answers)
}

/// `OffsetSpec` has no `Ord`; this orders it for deduplication.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SpecKey(OffsetSpec);

impl SpecKey {
    fn rank(&self) -> (u8, i64) {
        match self.0 {
            OffsetSpec::Earliest => (0, 0),
            OffsetSpec::Latest => (1, 0),
            OffsetSpec::MaxTimestamp => (2, 0),
            OffsetSpec::AtTime(t) => (3, t.as_millis()),
        }
    }
}

impl PartialOrd for SpecKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpecKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Reads the first record at or after each position (any record, committed or not: the time
/// a consumer of either isolation waits on), fetching a little per partition.
fn read_timestamps(
    inner: &Inner<'_>,
    positions: &[(TopicPartition, Offset)],
) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let mut config = inner.config.clone();
    config
        .set("isolation.level", "read_uncommitted")
        .set("max.partition.fetch.bytes", "4096")
        .set("queued.max.messages.kbytes", "1024");
    RangeReader::with_group(&config, "kafka-ops-timestamp-reader")?
        .first_record_timestamps(positions, inner.timeout)
}
