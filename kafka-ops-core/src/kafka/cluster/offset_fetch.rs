//! Committed offsets of many groups in one request to each coordinator: OffsetFetch v8
//! (KIP-709, Kafka 3.0 and later) names several groups per request, on a plaintext connection.
//!
//! librdkafka asks one group per client (see [`committed`](super::committed)): a consumer per
//! group, each with its threads and its connections to every broker, so a lag pass over 300
//! groups held about 1 800 threads. Here a pass opens one connection per coordinator and asks
//! each for all of its groups. Whatever this path cannot answer — a secured listener, a group
//! without a known coordinator, a coordinator that moved or is loading, a broker too old for
//! v8, any connection or decoding failure — is left to the per-group consumers, which follow a
//! moving coordinator themselves: an answer from here is a broker's answer, never a guess.

use std::collections::HashMap;
use std::time::Instant;

use crate::class::KafkaCode;
use crate::cluster::{PartitionError, PartitionResults};
use crate::error::Error;
use crate::kafka::wire::{
    Connection, Cursor, Request, put_compact_len, put_compact_string, put_uvarint,
};
use crate::types::{Offset, TopicPartition};

const API_KEY: i16 = 9;
/// The first version that takes many groups.
const VERSION: i16 = 8;
const OPERATION: &str = "read committed offsets";
/// A partition's answer while a transactional offset commit is pending (older coordinators).
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
/// Group × partition entries in one request: an answer takes about 20 bytes an entry, so a
/// response stays near a megabyte.
pub(super) const MAX_ENTRIES: usize = 50_000;

/// Where a group's offsets are asked: its coordinator's host and port.
pub(super) type Coordinator = (String, u16);

/// One group's offsets as a coordinator answered them: for each asked partition, the committed
/// offset (`None`: never committed) or the partition's error.
type GroupAnswer = PartitionResults<Option<Offset>>;

/// Each of `groups`' committed offsets of `partitions`, asked of the coordinator `locate`
/// gives for it, at most `max_entries` group × partition entries a request ([`MAX_ENTRIES`]);
/// `None` for each group this path could not answer. The call gives up at `deadline`;
/// coordinators are asked in parallel, each over one connection.
pub(super) fn committed_at_coordinators(
    groups: &[String],
    partitions: &[TopicPartition],
    locate: impl Fn(&str) -> Option<Coordinator>,
    deadline: Instant,
    max_entries: usize,
) -> Vec<Option<GroupAnswer>> {
    let mut answers: Vec<Option<GroupAnswer>> = groups.iter().map(|_| None).collect();
    if partitions.iter().any(|tp| tp.topic.contains('\0')) {
        // The consumers' path refuses such names with a typed error: leave them to it.
        return answers;
    }
    let mut by_coordinator: HashMap<Coordinator, Vec<usize>> = HashMap::new();
    for (index, group) in groups.iter().enumerate() {
        // The same for a group no consumer can be made for, where a broker would answer
        // (librdkafka answers an empty group id with UNKNOWN_GROUP; a NUL cannot be set).
        if group.is_empty() || group.contains('\0') {
            continue;
        }
        if let Some(coordinator) = locate(group) {
            by_coordinator.entry(coordinator).or_default().push(index);
        }
    }
    let found: Vec<(usize, GroupAnswer)> = std::thread::scope(|scope| {
        let asks: Vec<_> = by_coordinator
            .iter()
            .map(|(coordinator, mine)| {
                let ask = Ask {
                    groups,
                    partitions,
                    deadline,
                    max_entries,
                };
                // A thread that cannot be started leaves its groups to the consumers.
                std::thread::Builder::new()
                    .name("kafka-ops-offset-fetch".into())
                    .spawn_scoped(scope, move || ask.coordinator(coordinator, mine))
                    .ok()
            })
            .collect();
        asks.into_iter()
            .flatten()
            .flat_map(|ask| ask.join().unwrap_or_default())
            .collect()
    });
    for (index, answer) in found {
        answers[index] = Some(answer);
    }
    answers
}

/// What every coordinator is asked.
#[derive(Clone, Copy)]
struct Ask<'a> {
    groups: &'a [String],
    partitions: &'a [TopicPartition],
    deadline: Instant,
    max_entries: usize,
}

impl Ask<'_> {
    /// The groups at `mine` (indexes into `groups`), asked of one coordinator over one connection,
    /// as many groups per request as `max_entries` allows. Returns the groups answered in full;
    /// the first failure ends the connection's work.
    fn coordinator(self, (host, port): &Coordinator, mine: &[usize]) -> Vec<(usize, GroupAnswer)> {
        let Ask {
            groups,
            partitions,
            deadline,
            max_entries,
        } = self;
        let mut answered = Vec::with_capacity(mine.len());
        let mut connection = match Connection::open(OPERATION, host, *port, deadline) {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, host, port, "coordinator not reached; its groups go through consumers");
                return answered;
            }
        };
        let partition_chunk = partitions.len().clamp(1, max_entries.max(1));
        let groups_per_request = (max_entries / partition_chunk).max(1);
        // Every request of the connection asks the same partition chunks, by topic.
        let chunks: Vec<(&[TopicPartition], ByTopic<'_>)> = partitions
            .chunks(partition_chunk)
            .map(|chunk| (chunk, by_topic(chunk)))
            .collect();
        let mut correlation_id = 0;
        for request_groups in mine.chunks(groups_per_request) {
            let names: Vec<&str> = request_groups.iter().map(|i| groups[*i].as_str()).collect();
            let mut parts: Vec<Option<GroupAnswer>> = names
                .iter()
                .map(|_| Some(Vec::with_capacity(partitions.len())))
                .collect();
            for (chunk, topics) in &chunks {
                correlation_id += 1;
                let request = encode_request(&names, topics, correlation_id);
                let body = match connection.round_trip(&request, deadline) {
                    Ok(body) => body,
                    Err(error) => {
                        tracing::debug!(%error, host, port, "OffsetFetch v8 failed; its groups go through consumers");
                        return answered;
                    }
                };
                let groups_answered = match decode_response(&body, correlation_id) {
                    Ok(groups_answered) => groups_answered,
                    Err(error) => {
                        tracing::debug!(%error, host, port, "OffsetFetch v8 answer unreadable; its groups go through consumers");
                        return answered;
                    }
                };
                // A request names thousands of groups when they have few partitions: found by
                // name, not by a search per group.
                let by_name: HashMap<&str, &AnsweredGroup<'_>> =
                    groups_answered.iter().map(|g| (g.group, g)).collect();
                for (name, part) in names.iter().zip(parts.iter_mut()) {
                    let answer = by_name.get(name).and_then(|g| g.answer(chunk));
                    match (part.as_mut(), answer) {
                        (Some(so_far), Some(answer)) => so_far.extend(answer),
                        _ => *part = None,
                    }
                }
            }
            answered.extend(
                request_groups
                    .iter()
                    .zip(parts)
                    .filter_map(|(index, part)| Some((*index, part?))),
            );
        }
        answered
    }
}

/// Partitions by topic, as a request names them.
type ByTopic<'a> = Vec<(&'a str, Vec<i32>)>;

/// `partitions` by topic, topics in the order first seen.
fn by_topic(partitions: &[TopicPartition]) -> ByTopic<'_> {
    let mut positions: HashMap<&str, usize> = HashMap::new();
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in partitions {
        let position = *positions.entry(&*tp.topic).or_insert_with(|| {
            topics.push((&*tp.topic, Vec::new()));
            topics.len() - 1
        });
        topics[position].1.push(tp.partition);
    }
    topics
}

/// OffsetFetch v8 for `groups`, each asked for the same `topics`, requiring stable offsets.
///
/// Kafka's group coordinator (the one of KRaft clusters since 4.0) answers a request that does
/// not require them from its last committed state: right after it took over a group (its node
/// became leader of the group's `__consumer_offsets` partition), a commit already acknowledged
/// can still lie above that state, and the group read "never committed" (seen in the
/// coordinator-failover test). Requiring stable offsets makes it answer after its pending
/// writes, from the latest state. The older coordinator answers UNSTABLE_OFFSET_COMMIT for a
/// partition with a transactional commit pending; such a group is left to the consumers' path.
fn encode_request(groups: &[&str], topics: &[(&str, Vec<i32>)], correlation_id: i32) -> Vec<u8> {
    let per_group: usize = topics
        .iter()
        .map(|(name, partitions)| 4 + name.len() + 4 * partitions.len())
        .sum();
    let mut request = Request::new(
        API_KEY,
        VERSION,
        correlation_id,
        groups.len() * (per_group + 64),
    );
    let body = request.body();
    put_compact_len(body, groups.len());
    for group in groups {
        put_compact_string(body, group);
        put_compact_len(body, topics.len());
        for (name, partitions) in topics {
            put_compact_string(body, name);
            put_compact_len(body, partitions.len());
            for partition in partitions {
                body.extend_from_slice(&partition.to_be_bytes());
            }
            put_uvarint(body, 0); // topic tagged fields
        }
        put_uvarint(body, 0); // group tagged fields
    }
    body.push(1); // RequireStable
    put_uvarint(body, 0); // body tagged fields
    request.finish()
}

/// One partition of an answer: its committed offset and error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    offset: i64,
    error: i16,
}

/// One group of a response.
#[derive(Debug, PartialEq, Eq)]
struct AnsweredGroup<'a> {
    group: &'a str,
    error: i16,
    partitions: HashMap<(&'a str, i32), Committed>,
}

impl AnsweredGroup<'_> {
    /// The answer for each of `asked`, in order; `None` when the group as a whole failed (its
    /// coordinator moved or is loading, the group may not be read...), a partition asked is
    /// missing from the answer, or one has a transactional commit pending.
    fn answer(&self, asked: &[TopicPartition]) -> Option<GroupAnswer> {
        if self.error != 0 {
            return None;
        }
        asked
            .iter()
            .map(|tp| {
                let committed = self.partitions.get(&(&*tp.topic, tp.partition))?;
                if committed.error == UNSTABLE_OFFSET_COMMIT {
                    return None;
                }
                let answer = if committed.error == 0 {
                    // Negative offsets (-1) mean "never committed".
                    Ok(Offset::new(committed.offset).ok())
                } else {
                    Err(PartitionError::from_code(KafkaCode(i32::from(
                        committed.error,
                    ))))
                };
                Some((tp.clone(), answer))
            })
            .collect()
    }
}

/// Response header v1 (flexible), then OffsetFetch v8's groups.
fn decode_response(body: &[u8], correlation_id: i32) -> Result<Vec<AnsweredGroup<'_>>, Error> {
    let mut cursor = Cursor::new(OPERATION, body);
    cursor.response_header(correlation_id)?;
    let _throttle_ms = cursor.i32()?;
    // A group takes at least 5 bytes (name, topics, error, tags), a topic 3, a partition 20.
    let groups = cursor.compact_len(5)?.unwrap_or(0);
    let mut answered = Vec::with_capacity(groups);
    for _ in 0..groups {
        let group = cursor.compact_string()?.unwrap_or_default();
        let mut partitions = HashMap::new();
        for _ in 0..cursor.compact_len(3)?.unwrap_or(0) {
            let topic = cursor.compact_string()?.unwrap_or_default();
            let count = cursor.compact_len(20)?.unwrap_or(0);
            partitions.reserve(count);
            for _ in 0..count {
                let partition = cursor.i32()?;
                let offset = cursor.i64()?;
                let _leader_epoch = cursor.i32()?;
                let _metadata = cursor.compact_bytes()?;
                let error = cursor.i16()?;
                cursor.skip_tagged_fields()?;
                partitions.insert((topic, partition), Committed { offset, error });
            }
            cursor.skip_tagged_fields()?;
        }
        let error = cursor.i16()?;
        cursor.skip_tagged_fields()?;
        answered.push(AnsweredGroup {
            group,
            error,
            partitions,
        });
    }
    cursor.skip_tagged_fields()?;
    Ok(answered)
}

#[cfg(test)]
mod tests;
