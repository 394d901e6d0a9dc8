//! How many dead letters wait: the one count the health probe and `dlq inspect` share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::{MetadataQuery, OffsetQuery, PartitionResult};
use crate::error::Error;
use crate::types::{IsolationLevel, TopicPartition};

/// Records waiting in one partition of a dead-letter topic: from its log start — or the
/// committed offset of the group that drains it, when that is later — to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDepth {
    /// Partition.
    pub partition: i32,
    /// First offset still stored.
    pub low: i64,
    /// Next offset to be written.
    pub high: i64,
    /// The draining group's committed offset, when one was asked for and has committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<i64>,
}

impl PartitionDepth {
    /// Records waiting.
    pub fn depth(&self) -> u64 {
        let from = self.committed.map_or(self.low, |c| c.max(self.low));
        u64::try_from(self.high - from).unwrap_or(0)
    }
}

/// A topic's partitions' depths, by partition: each one, or why it could not be read.
pub type TopicDepth = Vec<(i32, PartitionResult<PartitionDepth>)>;

/// The depth of every partition of `topics` (topics that do not exist are left out), counted
/// from `group`'s committed offsets when given: one metadata request, batched watermarks and one
/// committed-offsets request.
pub async fn dead_letter_depths<Q>(
    cluster: &Q,
    topics: &[String],
    group: Option<&str>,
) -> Result<BTreeMap<String, TopicDepth>, Error>
where
    Q: MetadataQuery + OffsetQuery + ?Sized,
{
    let metadata = cluster.metadata(topics).await?;
    let partitions: Vec<TopicPartition> = metadata
        .topics
        .iter()
        .filter(|t| t.error.is_none())
        .flat_map(|t| t.topic_partitions())
        .collect();
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let marks = cluster
        .watermarks(&partitions, IsolationLevel::ReadUncommitted)
        .await?;
    let committed: BTreeMap<TopicPartition, PartitionResult<Option<i64>>> = match group {
        Some(group) => cluster
            .committed_offsets(group, &partitions)
            .await?
            .into_iter()
            .map(|(tp, offset)| (tp, offset.map(|o| o.map(|o| o.get()))))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut depths: BTreeMap<String, TopicDepth> = BTreeMap::new();
    for (tp, mark) in marks {
        let depth = mark.and_then(|mark| {
            let committed = match committed.get(&tp) {
                None | Some(Ok(None)) => None,
                Some(Ok(Some(offset))) => Some(*offset),
                Some(Err(e)) => return Err(e.clone()),
            };
            Ok(PartitionDepth {
                partition: tp.partition,
                low: mark.low.get(),
                high: mark.high.get(),
                committed,
            })
        });
        depths
            .entry(tp.topic.to_string())
            .or_default()
            .push((tp.partition, depth));
    }
    Ok(depths)
}
