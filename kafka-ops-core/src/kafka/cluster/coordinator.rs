//! Which broker coordinates a group, worked out the way Apache Kafka assigns it: the leader of
//! the group's partition of `__consumer_offsets`.
//!
//! Requests about a group are sent to that broker by id. librdkafka's own way — an admin
//! request that looks the coordinator up — frees its request state twice when the request times
//! out while the coordinator is unreachable, and the process aborts when the coordinator comes
//! back (librdkafka 2.12, `rd_kafka_admin_coord_request`). A health probe describing its group
//! during a broker restart must not take the service down.

use std::collections::HashMap;

use super::Inner;
use crate::error::Error;
use crate::kafka::metadata;

/// Apache Kafka's topic of group offsets and metadata, one partition per coordinator shard.
pub(super) const GROUP_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The partition of `__consumer_offsets` that holds `group`: `Utils.abs(groupId.hashCode()) %
/// partitions` in Kafka, with Java's `String.hashCode` over UTF-16 code units and `Utils.abs`
/// mapping `i32::MIN` to 0.
pub(super) fn group_offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

/// Each group's coordinator from the current metadata of `__consumer_offsets` (`None` for a
/// group whose partition has no leader now), or `None` when the cluster has no such topic —
/// librdkafka's mock cluster, or a cluster no group has used yet.
pub(super) fn coordinators(
    inner: &Inner<'_>,
    groups: &[String],
) -> Result<Option<HashMap<String, Option<i32>>>, Error> {
    let metadata = metadata::all_topics(inner.admin.inner(), inner.timeout)?;
    let Some(topic) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == GROUP_OFFSETS_TOPIC && t.error().is_none())
    else {
        return Ok(None);
    };
    let partitions = topic.partitions();
    if partitions.is_empty() {
        return Ok(None);
    }
    let leaders = leaders_by_partition(
        partitions.len(),
        partitions.iter().map(|p| {
            let leader = (p.error().is_none() && p.leader() >= 0).then_some(p.leader());
            (p.id(), leader)
        }),
    );
    Ok(Some(
        groups
            .iter()
            .map(|group| (group.clone(), coordinator_of(group, &leaders)))
            .collect(),
    ))
}

/// The leader of each of `count` partitions of `__consumer_offsets`, indexed by partition id,
/// from `(id, leader)` pairs (`None`: no leader now, or a partition the answer left out).
pub(super) fn leaders_by_partition(
    count: usize,
    leaders: impl Iterator<Item = (i32, Option<i32>)>,
) -> Vec<Option<i32>> {
    let mut by_id = vec![None; count];
    for (id, leader) in leaders {
        if let Some(slot) = usize::try_from(id).ok().and_then(|id| by_id.get_mut(id)) {
            *slot = leader;
        }
    }
    by_id
}

/// The coordinator of `group` given the leader of each partition of `__consumer_offsets`, by
/// partition id (`None` when that partition has no leader now, or the cluster has no such
/// topic).
pub(super) fn coordinator_of(group: &str, leaders: &[Option<i32>]) -> Option<i32> {
    let count = i32::try_from(leaders.len()).ok().filter(|c| *c > 0)?;
    let partition = group_offsets_partition(group, count);
    leaders
        .get(usize::try_from(partition).ok()?)
        .copied()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partitions_match_kafkas_hash() {
        // Java: "test".hashCode() == 3556498; "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(group_offsets_partition("test", 50), 3_556_498 % 50);
        assert_eq!(group_offsets_partition("polygenelubricants", 50), 0);
        assert_eq!(group_offsets_partition("", 50), 0);
        // "billing".hashCode() == -109829509 (negative: abs, not a bit mask).
        assert_eq!(group_offsets_partition("billing", 50), 109_829_509 % 50);
        // Non-ASCII: hashed over UTF-16 units ("é" is one unit, 0xE9; "😀" two).
        assert_eq!(group_offsets_partition("é", 50), 0xE9 % 50);
        let smile = (0xD83Di32 * 31 + 0xDE00) % 50;
        assert_eq!(group_offsets_partition("😀", 50), smile);
    }

    #[test]
    fn a_group_is_coordinated_by_the_leader_of_its_partition() {
        let leaders = [Some(1), None, Some(3)];
        let on = |group: &str| group_offsets_partition(group, 3);
        let group = |partition| {
            (0..)
                .map(|i| format!("g{i}"))
                .find(|g| on(g) == partition)
                .unwrap()
        };
        assert_eq!(coordinator_of(&group(0), &leaders), Some(1));
        assert_eq!(coordinator_of(&group(1), &leaders), None, "no leader now");
        assert_eq!(coordinator_of(&group(2), &leaders), Some(3));
        assert_eq!(coordinator_of("g", &[]), None, "no __consumer_offsets");
    }

    proptest! {
        #[test]
        fn always_a_partition_of_the_topic(group in ".*", partitions in 1i32..200) {
            let p = group_offsets_partition(&group, partitions);
            prop_assert!((0..partitions).contains(&p));
        }
    }
}
