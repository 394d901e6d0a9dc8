//! Partition leadership per broker, from metadata alone: "partition leader balance".

use std::collections::BTreeMap;

use kafka_ops_core::TopicPartition;
use kafka_ops_core::cluster::ClusterMetadata;
use serde::{Deserialize, Serialize};

/// One broker's share of partition leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerLeadership {
    /// Broker id.
    pub broker: i32,
    /// Partitions it leads.
    pub leaders: usize,
    /// Partitions whose preferred (first) replica it is: what it would lead after a preferred
    /// leader election.
    pub preferred: usize,
    /// Partitions it leads without being their preferred replica.
    pub not_preferred: usize,
}

/// A partition led by a broker other than its preferred replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisplacedLeader {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its leader now.
    pub leader: i32,
    /// Its first replica.
    pub preferred: i32,
}

/// Partition leadership over the whole cluster (internal topics included: they load brokers too).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Leadership {
    /// Every broker the metadata lists, and every broker named as a leader, by id.
    pub brokers: Vec<BrokerLeadership>,
    /// Partitions led off their preferred replica, by topic and partition.
    pub not_preferred: Vec<MisplacedLeader>,
    /// Partitions without a leader (offline).
    pub leaderless: Vec<TopicPartition>,
    /// Most leaders on one broker minus fewest on another.
    pub skew: usize,
}

fn blank(broker: i32) -> BrokerLeadership {
    BrokerLeadership {
        broker,
        leaders: 0,
        preferred: 0,
        not_preferred: 0,
    }
}

/// Leadership as `metadata` shows it.
pub fn leadership(metadata: &ClusterMetadata) -> Leadership {
    let mut counts: BTreeMap<i32, BrokerLeadership> = metadata
        .brokers
        .iter()
        .map(|b| (b.id, blank(b.id)))
        .collect();
    let mut out = Leadership::default();
    for topic in metadata.topics.iter().filter(|t| t.error.is_none()) {
        for partition in &topic.partitions {
            let preferred = partition.replicas.first().copied();
            if let Some(first) = preferred {
                counts
                    .entry(first)
                    .or_insert_with(|| blank(first))
                    .preferred += 1;
            }
            let Some(leader) = partition.leader else {
                out.leaderless
                    .push(TopicPartition::new(topic.name.clone(), partition.id));
                continue;
            };
            let row = counts.entry(leader).or_insert_with(|| blank(leader));
            row.leaders += 1;
            if let Some(first) = preferred.filter(|first| *first != leader) {
                row.not_preferred += 1;
                out.not_preferred.push(MisplacedLeader {
                    topic: topic.name.to_string(),
                    partition: partition.id,
                    leader,
                    preferred: first,
                });
            }
        }
    }
    out.brokers = counts.into_values().collect();
    let most = out.brokers.iter().map(|b| b.leaders).max().unwrap_or(0);
    let fewest = out.brokers.iter().map(|b| b.leaders).min().unwrap_or(0);
    out.skew = most - fewest;
    out
}
