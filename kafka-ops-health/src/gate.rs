//! The rolling-restart gate: may this broker be stopped now?

use std::collections::BTreeSet;
use std::fmt;

use kafka_ops_core::cluster::MetadataQuery;
use serde::{Deserialize, Serialize};

use crate::error::HealthError;
use crate::probes::cluster::is_offline;

/// How many partitions a reason lists by name.
const LISTED: usize = 10;

/// Why a broker may not be restarted now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum RestartRefusal {
    /// The metadata does not list the broker (it is down already, or the id is wrong).
    UnknownBroker {
        /// The brokers it does list.
        listed: Vec<i32>,
    },
    /// The broker is the controller: move the controller first.
    IsController,
    /// The metadata names no controller that is a listed broker, so it cannot be ruled out.
    ControllerUnknown,
    /// Partitions are under-replicated somewhere in the cluster.
    UnderReplicated {
        /// How many.
        count: usize,
        /// The first few, as `topic/partition`.
        examples: Vec<String>,
    },
    /// Partitions are offline already.
    Offline {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// Partitions whose in-sync replicas other than this broker are too few to carry on
    /// without it.
    NoInSyncReplicaElsewhere {
        /// In-sync replicas needed elsewhere (1, or `min.insync.replicas`).
        required: usize,
        /// How many partitions fall short.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
}

impl fmt::Display for RestartRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartRefusal::UnknownBroker { listed } => {
                write!(f, "the broker is not among the listed brokers {listed:?}")
            }
            RestartRefusal::IsController => {
                f.write_str("the broker is the controller; move the controller first")
            }
            RestartRefusal::ControllerUnknown => {
                f.write_str("no known controller, so the broker may be it")
            }
            RestartRefusal::UnderReplicated { count, examples } => write!(
                f,
                "{count} under-replicated partitions in the cluster: {}",
                examples.join(", ")
            ),
            RestartRefusal::Offline { count, examples } => {
                write!(f, "{count} offline partitions: {}", examples.join(", "))
            }
            RestartRefusal::NoInSyncReplicaElsewhere {
                required,
                count,
                examples,
            } => write!(
                f,
                "{count} partitions would keep fewer than {required} in-sync replicas without it: {}",
                examples.join(", ")
            ),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartVerdict {
    /// The broker asked about.
    pub broker: i32,
    /// Whether it may be stopped now.
    pub safe: bool,
    /// Every reason it may not (empty when safe).
    pub refusals: Vec<RestartRefusal>,
    /// Partitions it leads.
    pub leads: usize,
    /// Partitions whose in-sync replica set includes it.
    pub in_sync_for: usize,
}

/// Options for [`safe_to_restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartGateOptions {
    /// The topics' `min.insync.replicas`, when known: every partition must keep at least this
    /// many in-sync replicas without the broker (otherwise at least one).
    pub min_insync_replicas: Option<usize>,
}

fn examples(names: &[String]) -> Vec<String> {
    names.iter().take(LISTED).cloned().collect()
}

/// The maintenance runbook's checklist before stopping `broker`: no under-replicated or offline
/// partitions in the cluster, the broker is not the controller, and every partition whose ISR
/// includes it keeps enough in-sync replicas elsewhere (one, or `min.insync.replicas`). The
/// verdict lists every reason it refuses, not just the first.
pub async fn safe_to_restart(
    cluster: &dyn MetadataQuery,
    broker: i32,
    options: RestartGateOptions,
) -> Result<RestartVerdict, HealthError> {
    let metadata = cluster.metadata(&[]).await?;
    let brokers: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.id).collect();
    let mut refusals = Vec::new();
    if !brokers.contains(&broker) {
        refusals.push(RestartRefusal::UnknownBroker {
            listed: brokers.iter().copied().collect(),
        });
    }
    match metadata.controller {
        Some(id) if id == broker => refusals.push(RestartRefusal::IsController),
        Some(id) if brokers.contains(&id) => {}
        _ => refusals.push(RestartRefusal::ControllerUnknown),
    }
    let required = options.min_insync_replicas.unwrap_or(1).max(1);
    let (mut under, mut offline, mut short) = (Vec::new(), Vec::new(), Vec::new());
    let (mut leads, mut in_sync_for) = (0, 0);
    for topic in metadata.topics.iter().filter(|t| t.error.is_none()) {
        for partition in &topic.partitions {
            let name = format!("{}/{}", topic.name, partition.id);
            if is_offline(partition, &brokers) {
                offline.push(name.clone());
            } else if partition.is_under_replicated() {
                under.push(name.clone());
            }
            if partition.leader == Some(broker) {
                leads += 1;
            }
            if partition.isr.contains(&broker) {
                in_sync_for += 1;
                let elsewhere = partition.isr.iter().filter(|id| **id != broker).count();
                if elsewhere < required {
                    short.push(name);
                }
            }
        }
    }
    if !under.is_empty() {
        refusals.push(RestartRefusal::UnderReplicated {
            count: under.len(),
            examples: examples(&under),
        });
    }
    if !offline.is_empty() {
        refusals.push(RestartRefusal::Offline {
            count: offline.len(),
            examples: examples(&offline),
        });
    }
    if !short.is_empty() {
        refusals.push(RestartRefusal::NoInSyncReplicaElsewhere {
            required,
            count: short.len(),
            examples: examples(&short),
        });
    }
    Ok(RestartVerdict {
        broker,
        safe: refusals.is_empty(),
        refusals,
        leads,
        in_sync_for,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::cluster::{
        BrokerInfo, ClusterMetadata, MockMetadataQuery, PartitionInfo, TopicInfo,
    };

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "localhost".into(),
            port: 9092,
        }
    }

    fn partition(id: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            id,
            leader: Some(leader),
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            error: None,
        }
    }

    fn cluster(controller: Option<i32>, partitions: Vec<PartitionInfo>) -> MockMetadataQuery {
        let metadata = ClusterMetadata {
            brokers: vec![broker(1), broker(2), broker(3)],
            controller,
            topics: vec![TopicInfo {
                name: "orders".into(),
                partitions,
                error: None,
            }],
        };
        let mut mock = MockMetadataQuery::new();
        mock.expect_metadata()
            .returning(move |_| Ok(metadata.clone()));
        mock
    }

    #[tokio::test]
    async fn a_healthy_follower_may_restart() {
        let mock = cluster(
            Some(3),
            vec![
                partition(0, 1, &[1, 2, 3], &[1, 2, 3]),
                partition(1, 2, &[2, 3, 1], &[2, 3, 1]),
            ],
        );
        let verdict = safe_to_restart(&mock, 1, RestartGateOptions::default())
            .await
            .unwrap();
        assert!(verdict.safe, "{verdict:?}");
        assert_eq!((verdict.leads, verdict.in_sync_for), (1, 2));
    }

    #[tokio::test]
    async fn every_reason_is_listed() {
        let mock = cluster(
            Some(1),
            vec![
                // Led by 1 with no other in-sync replica.
                partition(0, 1, &[1, 2], &[1]),
                // Offline: its leader is not a listed broker.
                partition(1, 9, &[9, 2], &[9, 2]),
            ],
        );
        let verdict = safe_to_restart(&mock, 1, RestartGateOptions::default())
            .await
            .unwrap();
        assert!(!verdict.safe);
        assert_eq!(
            verdict.refusals,
            vec![
                RestartRefusal::IsController,
                RestartRefusal::UnderReplicated {
                    count: 1,
                    examples: vec!["orders/0".into()]
                },
                RestartRefusal::Offline {
                    count: 1,
                    examples: vec!["orders/1".into()]
                },
                RestartRefusal::NoInSyncReplicaElsewhere {
                    required: 1,
                    count: 1,
                    examples: vec!["orders/0".into()]
                },
            ]
        );
    }

    #[tokio::test]
    async fn min_insync_replicas_raises_the_bar() {
        let partitions = vec![partition(0, 1, &[1, 2, 3], &[1, 2, 3])];
        let lenient = safe_to_restart(
            &cluster(Some(2), partitions.clone()),
            1,
            RestartGateOptions::default(),
        )
        .await
        .unwrap();
        assert!(lenient.safe);
        let strict = safe_to_restart(
            &cluster(Some(2), partitions),
            1,
            RestartGateOptions {
                min_insync_replicas: Some(3),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            strict.refusals,
            vec![RestartRefusal::NoInSyncReplicaElsewhere {
                required: 3,
                count: 1,
                examples: vec!["orders/0".into()]
            }]
        );
    }

    #[tokio::test]
    async fn unknown_brokers_and_controllers_are_refused() {
        let verdict = safe_to_restart(&cluster(None, vec![]), 7, RestartGateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            verdict.refusals,
            vec![
                RestartRefusal::UnknownBroker {
                    listed: vec![1, 2, 3]
                },
                RestartRefusal::ControllerUnknown
            ]
        );
        assert!(verdict.refusals[0].to_string().contains("[1, 2, 3]"));
    }
}
