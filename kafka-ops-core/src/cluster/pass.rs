//! Lag of many groups in one pass: one description batch, every group's committed offsets asked
//! together, one metadata answer and one end-offset snapshot shared by all groups. A group whose
//! offsets cannot be read is reported with its error; the others still come back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use serde::{Deserialize, Serialize};

use super::{ClusterQuery, Discovery, GroupOffsetMap, LagOptions, PartitionResult};
use crate::class::KafkaCode;
use crate::clock::Clock;
use crate::error::Error;
use crate::lag::{GroupLag, PartitionLag};
use crate::types::{Offset, TopicPartition, Watermarks};

/// The lag of several groups taken in one pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllGroupsLag {
    /// The groups whose lag was read, sorted by name (all sharing one end-offset snapshot).
    pub groups: Vec<GroupLag>,
    /// The groups whose committed offsets could not be read, sorted by name.
    pub failed: Vec<GroupFailure>,
}

/// A group left out of an [`AllGroupsLag`] because its committed offsets could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("group {group}: {reason}")]
pub struct GroupFailure {
    /// The group id.
    pub group: String,
    /// The Kafka error code, when the broker gave one.
    pub code: Option<KafkaCode>,
    /// What went wrong.
    pub reason: String,
}

impl GroupFailure {
    fn new(group: String, error: &Error) -> Self {
        GroupFailure {
            group,
            code: error.code(),
            reason: error.to_string(),
        }
    }
}

/// A group's committed offsets (per partition: the offset, "never committed", or why it could not
/// be read) for every partition of every topic it committed on.
type Committed = BTreeMap<TopicPartition, PartitionResult<Option<Offset>>>;

/// What the "all offsets of a group" request said about one group.
enum Listed {
    /// Offsets listed.
    Offsets(GroupOffsetMap),
    /// An empty list: no commits, or a broker that cannot list (told apart by the other groups).
    Empty,
    /// The broker cannot list a group's offsets: scan the metadata's partitions instead.
    Unsupported,
    /// The group's offsets could not be read.
    Failed(Error),
}

impl Listed {
    fn from(answer: Result<GroupOffsetMap, Error>) -> Self {
        match answer {
            Ok(offsets) if offsets.is_empty() => Listed::Empty,
            Ok(offsets) => Listed::Offsets(offsets),
            Err(Error::Unsupported { .. }) => Listed::Unsupported,
            Err(error) => Listed::Failed(error),
        }
    }
}

/// The partitions each group's members own now, so a member that has not committed yet shows as
/// "no committed offset" (as `kafka-consumer-groups --describe` prints `-`) instead of not at all.
/// Empty where the broker cannot describe groups: the lag then covers committed topics only.
async fn assigned_partitions<C: ClusterQuery + ?Sized>(
    cluster: &C,
    groups: &[String],
) -> HashMap<String, Vec<TopicPartition>> {
    match cluster.describe_groups(groups).await {
        Ok(described) => described
            .into_iter()
            .filter(|d| d.error.is_none())
            .map(|d| {
                let owned = d.members.into_iter().flat_map(|m| m.assignment).collect();
                (d.group, owned)
            })
            .collect(),
        Err(error) => {
            tracing::debug!(%error, "cannot describe the groups; lag covers committed partitions only");
            HashMap::new()
        }
    }
}

/// Each group's committed partitions and how they were found, or the group's error.
async fn discover<C: ClusterQuery + ?Sized>(
    cluster: &C,
    groups: &[String],
) -> Result<Vec<(String, Result<(Committed, Discovery), Error>)>, Error> {
    let listed: Vec<(String, Listed)> = match cluster.groups_offsets(groups).await {
        Ok(answers) => answers
            .into_iter()
            .map(|(group, answer)| (group, Listed::from(answer)))
            .collect(),
        Err(Error::Unsupported { .. }) => groups
            .iter()
            .map(|group| (group.clone(), Listed::Unsupported))
            .collect(),
        Err(other) => return Err(other),
    };
    if listed.iter().all(|(_, l)| matches!(l, Listed::Failed(_))) {
        return Ok(listed
            .into_iter()
            .filter_map(|(group, l)| match l {
                Listed::Failed(error) => Some((group, Err(error))),
                _ => None,
            })
            .collect());
    }
    // A broker that lists one group's offsets lists every group's: an empty answer then means
    // "no commits". Where no group was listed, an empty answer may be a broker that cannot
    // list, so those groups are scanned.
    let broker_lists = listed.iter().any(|(_, l)| matches!(l, Listed::Offsets(_)));
    let metadata = cluster.metadata(&[]).await?;
    let scan: Vec<String> = listed
        .iter()
        .filter(|(_, l)| match l {
            Listed::Unsupported => true,
            Listed::Empty => !broker_lists,
            _ => false,
        })
        .map(|(group, _)| group.clone())
        .collect();
    let all = metadata.user_partitions();
    let mut scanned: HashMap<String, Result<Committed, Error>> = if scan.is_empty() {
        HashMap::new()
    } else if all.is_empty() {
        scan.iter()
            .map(|group| (group.clone(), Ok(Committed::new())))
            .collect()
    } else {
        cluster
            .groups_committed_offsets(&scan, &all)
            .await?
            .into_iter()
            .map(|(group, answers)| (group, answers.map(keep_committed_topics)))
            .collect()
    };
    Ok(listed
        .into_iter()
        .map(|(group, l)| {
            let found = match l {
                Listed::Failed(error) => Err(error),
                Listed::Offsets(offsets) => {
                    let mut committed = Committed::new();
                    let topics: BTreeSet<&str> = offsets.keys().map(|tp| &*tp.topic).collect();
                    for topic in topics.into_iter().filter_map(|t| metadata.topic(t)) {
                        for tp in topic.topic_partitions() {
                            committed.insert(tp, Ok(None));
                        }
                    }
                    for (tp, offset) in offsets {
                        committed.insert(tp, offset.map(Some));
                    }
                    Ok((committed, Discovery::GroupOffsets))
                }
                Listed::Empty if broker_lists => Ok((Committed::new(), Discovery::GroupOffsets)),
                Listed::Empty | Listed::Unsupported => match scanned.remove(&group) {
                    Some(result) => result.map(|c| (c, Discovery::MetadataScan)),
                    None => Ok((Committed::new(), Discovery::MetadataScan)),
                },
            };
            (group, found)
        })
        .collect())
}

/// A scan's answers for the topics where the group committed (a partition whose offset could not
/// be read may have one: its topic is kept too).
fn keep_committed_topics(
    answers: Vec<(TopicPartition, PartitionResult<Option<Offset>>)>,
) -> Committed {
    let topics_with_commits: BTreeSet<Arc<str>> = answers
        .iter()
        .filter(|(_, offset)| !matches!(offset, Ok(None)))
        .map(|(tp, _)| tp.topic.clone())
        .collect();
    answers
        .into_iter()
        .filter(|(tp, _)| topics_with_commits.contains(&tp.topic))
        .collect()
}

/// The pass itself: each group's lag and discovery, or its error, in the order asked.
async fn collect<C: ClusterQuery + ?Sized>(
    cluster: &C,
    groups: &[String],
    clock: &dyn Clock,
    options: LagOptions,
) -> Result<Vec<(String, Result<(GroupLag, Discovery), Error>)>, Error> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    // The members' assignments do not depend on the commits: asked side by side, the pass waits
    // for the slower of the two instead of their sum.
    let (mut assigned, found) = both(
        assigned_partitions(cluster, groups),
        discover(cluster, groups),
    )
    .await;
    let mut found = found?;
    for (group, result) in &mut found {
        if let (Ok((committed, _)), Some(owned)) = (result, assigned.remove(group.as_str())) {
            for tp in owned {
                committed.entry(tp).or_insert(Ok(None));
            }
        }
    }
    let partitions: BTreeSet<TopicPartition> = found
        .iter()
        .filter_map(|(_, result)| result.as_ref().ok())
        .flat_map(|(committed, _)| committed.keys().cloned())
        .collect();
    let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
    let marks: HashMap<TopicPartition, PartitionResult<Watermarks>> = if partitions.is_empty() {
        HashMap::new()
    } else {
        cluster
            .watermarks(&partitions, options.isolation)
            .await?
            .into_iter()
            .collect()
    };
    let taken_at = clock.wall();
    Ok(found
        .into_iter()
        .map(|(group, result)| {
            let lag = result.map(|(committed, discovery)| {
                let rows = committed
                    .iter()
                    .map(|(tp, offset)| row(tp, offset, marks.get(tp)))
                    .collect();
                (GroupLag::new(group.as_str(), taken_at, rows), discovery)
            });
            (group, lag)
        })
        .collect())
}

/// Runs two independent queries of a pass at once and waits for both (core has no runtime to
/// spawn on, and each adapter call already runs on its own blocking thread).
async fn both<A: Future, B: Future>(first: A, second: B) -> (A::Output, B::Output) {
    let (mut first, mut second) = (pin!(first), pin!(second));
    let (mut first_out, mut second_out) = (None, None);
    poll_fn(|cx| {
        if first_out.is_none()
            && let Poll::Ready(out) = first.as_mut().poll(cx)
        {
            first_out = Some(out);
        }
        if second_out.is_none()
            && let Poll::Ready(out) = second.as_mut().poll(cx)
        {
            second_out = Some(out);
        }
        match (first_out.take(), second_out.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (first_out, second_out) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}

fn row(
    tp: &TopicPartition,
    offset: &PartitionResult<Option<Offset>>,
    marks: Option<&PartitionResult<Watermarks>>,
) -> PartitionLag {
    match (offset, marks) {
        (Err(e), _) => PartitionLag::unknown(tp, None, format!("committed offset unreadable: {e}")),
        (Ok(offset), Some(Ok(w))) => PartitionLag::compute(tp, *offset, Some(*w)),
        (Ok(offset), Some(Err(e))) => PartitionLag::unknown(tp, *offset, e.reason.clone()),
        (Ok(offset), None) => PartitionLag::unknown(tp, *offset, "no answer for this partition"),
    }
}

/// A consumer group's lag, partition by partition, for every topic the group has committed on
/// and every partition its members own.
///
/// Partitions whose watermarks or committed offset cannot be read (leader down, coordinator
/// error) are reported with `unknown_reason` set and `lag: None`, never with a guessed number. An
/// unknown group or a group without commits yields an empty report.
pub async fn group_lag<C: ClusterQuery + ?Sized>(
    cluster: &C,
    group: &str,
    clock: &dyn Clock,
    options: LagOptions,
) -> Result<(GroupLag, Discovery), Error> {
    let found = collect(cluster, &[group.to_string()], clock, options).await?;
    found.into_iter().next().map_or_else(
        || {
            let empty = GroupLag::new(group, clock.wall(), Vec::new());
            Ok((empty, Discovery::GroupOffsets))
        },
        |(_, result)| result,
    )
}

/// The lag of each of `groups` in one pass (see [`all_groups_lag`]); duplicates are asked once.
///
/// Fails as a whole only when the cluster cannot be asked at all (metadata or end offsets
/// unreadable); a group whose committed offsets cannot be read lands in
/// [`failed`](AllGroupsLag::failed).
pub async fn groups_lag<C: ClusterQuery + ?Sized>(
    cluster: &C,
    groups: &[String],
    clock: &dyn Clock,
    options: LagOptions,
) -> Result<AllGroupsLag, Error> {
    let names: BTreeSet<String> = groups.iter().cloned().collect();
    let names: Vec<String> = names.into_iter().collect();
    let mut out = AllGroupsLag {
        groups: Vec::with_capacity(names.len()),
        failed: Vec::new(),
    };
    for (group, result) in collect(cluster, &names, clock, options).await? {
        match result {
            Ok((lag, _)) => out.groups.push(lag),
            Err(error) => out.failed.push(GroupFailure::new(group, &error)),
        }
    }
    Ok(out)
}

/// Lag of every consumer group the cluster lists (simple groups included), in one pass: one
/// group listing, one description batch, every group's committed offsets asked at once (one
/// OffsetFetch per group, the protocol's unit, all in flight together), one metadata answer and
/// one end-offset snapshot for all groups. The snapshot's requests follow the partition leaders,
/// not the number of groups.
pub async fn all_groups_lag<C: ClusterQuery + ?Sized>(
    cluster: &C,
    clock: &dyn Clock,
    options: LagOptions,
) -> Result<AllGroupsLag, Error> {
    let names: Vec<String> = cluster
        .list_groups()
        .await?
        .into_iter()
        .map(|listing| listing.group)
        .collect();
    groups_lag(cluster, &names, clock, options).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::both;

    #[tokio::test]
    async fn both_runs_the_two_queries_at_the_same_time() {
        // Each half waits for the other to have started: run one after the other, they never end.
        let barrier = tokio::sync::Barrier::new(2);
        let halves = both(
            async {
                barrier.wait().await;
                1
            },
            async {
                barrier.wait().await;
                "two"
            },
        );
        let joined = tokio::time::timeout(Duration::from_secs(5), halves).await;
        assert_eq!(joined.unwrap(), (1, "two"));
    }

    #[tokio::test]
    async fn both_keeps_the_first_answer_while_the_second_is_pending() {
        let (sender, receiver) = tokio::sync::oneshot::channel::<u8>();
        let joined = tokio::spawn(async move {
            both(async { "ready at once" }, async { receiver.await.unwrap() }).await
        });
        tokio::task::yield_now().await;
        sender.send(7).unwrap();
        assert_eq!(joined.await.unwrap(), ("ready at once", 7));
    }
}
