//! Reading the review's facts from a cluster, in a few batched requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_ops_core::cluster::{ClusterQuery, LagOptions, groups_lag, timestamps_at};
use kafka_ops_core::dead_letter::dead_letter_depths;
use kafka_ops_core::lag::{GroupLag, PartitionLag};
use kafka_ops_core::{Clock, IsolationLevel, Offset, OffsetSpec, Timestamp, TopicPartition};

use super::{
    GroupFacts, HygieneFacts, HygieneOptions, HygieneReport, TopicFacts, evaluate, total_depth,
    validate,
};
use crate::HealthError;

/// The position of the last record a group consumed on each of `partitions`: one before its
/// committed offset, where that record is still stored.
pub(super) fn consumed_positions(partitions: &[PartitionLag]) -> Vec<(TopicPartition, Offset)> {
    partitions
        .iter()
        .filter_map(|row| {
            let last = Offset::new(row.committed?.get() - 1).ok()?;
            (last >= row.log_start?).then(|| (row.topic_partition(), last))
        })
        .collect()
}

/// The newest timestamp of the records each group last consumed, the records read together.
async fn newest_consumed<C: ClusterQuery + ?Sized>(
    cluster: &C,
    groups: &[GroupLag],
) -> Result<HashMap<String, Option<Timestamp>>, HealthError> {
    let positions: Vec<(TopicPartition, Offset)> = groups
        .iter()
        .flat_map(|lag| consumed_positions(&lag.partitions))
        .collect();
    let stamps = timestamps_at(cluster, &positions).await?;
    Ok(groups
        .iter()
        .map(|lag| {
            let newest = consumed_positions(&lag.partitions)
                .into_iter()
                .filter_map(|position| stamps.get(&position).copied())
                .max();
            (lag.group.clone(), newest)
        })
        .collect())
}

/// Every non-internal topic's size, newest record and dead-letter depth.
async fn topic_facts<C: ClusterQuery + ?Sized>(
    cluster: &C,
    metadata: &kafka_ops_core::cluster::ClusterMetadata,
    options: &HygieneOptions,
) -> Result<Vec<TopicFacts>, HealthError> {
    let partitions = metadata.user_partitions();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let marks = cluster
        .watermarks(&partitions, IsolationLevel::ReadUncommitted)
        .await?;
    let queries: Vec<(TopicPartition, OffsetSpec)> = partitions
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::MaxTimestamp))
        .collect();
    let newest = cluster
        .list_offsets(&queries, IsolationLevel::ReadUncommitted)
        .await?;
    let dead_letters: Vec<String> = metadata
        .topics
        .iter()
        .filter(|t| !t.is_internal() && t.error.is_none() && options.dead_letters.matches(&t.name))
        .map(|t| t.name.to_string())
        .collect();
    let depths = if dead_letters.is_empty() {
        BTreeMap::new()
    } else {
        dead_letter_depths(cluster, &dead_letters, None).await?
    };
    let mut topics: BTreeMap<String, TopicFacts> = metadata
        .topics
        .iter()
        .filter(|t| !t.is_internal() && t.error.is_none())
        .map(|t| {
            let facts = TopicFacts {
                topic: t.name.to_string(),
                partitions: t.partitions.len(),
                records: 0,
                newest_record: None,
                unreadable_partitions: 0,
                dead_letter_depth: depths.get(&*t.name).and_then(total_depth),
            };
            (t.name.to_string(), facts)
        })
        .collect();
    let mut unreadable: BTreeSet<TopicPartition> = BTreeSet::new();
    for (tp, mark) in marks {
        match (mark, topics.get_mut(&*tp.topic)) {
            (Ok(mark), Some(topic)) => {
                topic.records += u64::try_from(mark.high.get() - mark.low.get()).unwrap_or(0);
            }
            (Err(_), _) => {
                unreadable.insert(tp);
            }
            (Ok(_), None) => {}
        }
    }
    for (tp, listed) in newest {
        match (listed, topics.get_mut(&*tp.topic)) {
            (Ok(listed), Some(topic)) => {
                let stamp = listed.offset.and(listed.timestamp);
                topic.newest_record = topic.newest_record.max(stamp);
            }
            (Err(_), _) => {
                unreadable.insert(tp);
            }
            (Ok(_), None) => {}
        }
    }
    for tp in unreadable {
        if let Some(topic) = topics.get_mut(&*tp.topic) {
            topic.unreadable_partitions += 1;
        }
    }
    Ok(topics.into_values().collect())
}

/// Reads everything the review judges: the metadata, every listed group (state, members,
/// committed offsets and lag in one pass, the timestamps behind its commits), and every
/// non-internal topic (size, newest record, dead-letter depth).
pub async fn collect<C: ClusterQuery + ?Sized>(
    cluster: &C,
    options: &HygieneOptions,
    clock: &dyn Clock,
) -> Result<HygieneFacts, HealthError> {
    let metadata = cluster.metadata(&[]).await?;
    let listings = cluster.list_groups().await?;
    let names: Vec<String> = listings.iter().map(|l| l.group.clone()).collect();
    // A failed description leaves every group's members unknown (below), not the review undone.
    let mut not_described = "the group was not described".to_string();
    let described = if names.is_empty() {
        Vec::new()
    } else {
        cluster
            .describe_groups(&names)
            .await
            .unwrap_or_else(|error| {
                not_described = format!("describing the groups failed: {error}");
                Vec::new()
            })
    };
    let mut states: HashMap<String, (kafka_ops_core::cluster::GroupState, usize)> = listings
        .into_iter()
        .map(|l| (l.group, (l.state, 0)))
        .collect();
    // A listing names no members (and a KIP-848 group assigning or reconciling as `Unknown`):
    // until a description says otherwise, a group's members are unknown, never none.
    let mut unread: HashMap<String, String> = names
        .iter()
        .map(|name| (name.clone(), not_described.clone()))
        .collect();
    for description in described {
        match &description.error {
            Some(error) => {
                unread.insert(
                    description.group,
                    format!("describing the group failed: {}", error.reason),
                );
            }
            None => {
                unread.remove(&description.group);
                states.insert(
                    description.group,
                    (description.state, description.members.len()),
                );
            }
        }
    }
    let lag = groups_lag(cluster, &names, clock, LagOptions::default()).await?;
    let mut newest = newest_consumed(cluster, &lag.groups).await?;
    let groups = lag
        .groups
        .into_iter()
        .map(|lag| {
            let (state, members) = states.get(&lag.group).copied().unwrap_or_default();
            GroupFacts {
                state,
                members,
                members_unread: unread.remove(&lag.group),
                newest_consumed: newest.remove(&lag.group).flatten(),
                group: lag.group,
                partitions: lag.partitions,
            }
        })
        .collect();
    let topics = topic_facts(cluster, &metadata, options).await?;
    Ok(HygieneFacts {
        metadata,
        groups,
        unreadable_groups: lag.failed,
        topics,
    })
}

/// [`collect`] then [`evaluate`]: the hygiene review of a cluster now.
pub async fn review<C: ClusterQuery + ?Sized>(
    cluster: &C,
    options: &HygieneOptions,
    clock: &dyn Clock,
) -> Result<HygieneReport, HealthError> {
    validate(options)?;
    let facts = collect(cluster, options, clock).await?;
    Ok(evaluate(&facts, options, clock))
}
