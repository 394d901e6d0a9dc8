//! The rolling-restart gate: may this broker be stopped now?
//!
//! [`safe_to_restart`] reads what it needs from the cluster — the metadata, every topic's
//! `min.insync.replicas` and the [control plane](crate::control_plane) — and [`evaluate`]
//! judges it, purely, so every rule is tested exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kafka_ops_core::ErrorClass;
use kafka_ops_core::cluster::{ClusterMetadata, ConfigQuery, MetadataQuery};
use serde::{Deserialize, Serialize};

use crate::control_plane::ControlPlane;
use crate::error::HealthError;
use crate::probes::is_offline;

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
    /// ZooKeeper mode: the broker is the controller; move the controller first.
    IsController,
    /// ZooKeeper mode (or a cluster whose mode cannot be read): the metadata names no
    /// controller that is a listed broker, so it cannot be ruled out.
    ControllerUnknown,
    /// The brokers' configuration could not be read (DescribeConfigs refused, failed or not
    /// answered), so whether the cluster runs KRaft, and whether the node is a controller voter
    /// the quorum's majority needs, is unknown. The metadata's controller says nothing there
    /// (KRaft brokers name a random live broker). Check the quorum with
    /// `kafka-metadata-quorum describe --status` and pass
    /// [`allow_unverified_quorum`](RestartGateOptions::allow_unverified_quorum); the gate then
    /// judges as in ZooKeeper mode, so it still refuses to stop the broker the metadata names as
    /// controller (in KRaft a random live broker: ask again).
    ControlPlaneUnknown,
    /// KRaft in combined mode: the node is a controller voter, and without it the voters that
    /// are up would not be a majority.
    QuorumAtRisk {
        /// Every voter.
        voters: Vec<i32>,
        /// The voters up now.
        up: Vec<i32>,
    },
    /// KRaft in combined mode with voters this gate cannot see (a dynamic quorum, formatted
    /// with `--standalone` or `--initial-controllers`, has no `controller.quorum.voters`): the
    /// node may be a voter whose loss costs the quorum its majority. Check the quorum with
    /// `kafka-metadata-quorum describe --status` and pass
    /// [`allow_unverified_quorum`](RestartGateOptions::allow_unverified_quorum).
    QuorumUnverified,
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
        /// In-sync replicas needed elsewhere (the highest `min.insync.replicas` among the
        /// partitions listed, at least 1).
        required: usize,
        /// How many partitions fall short.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// Partitions whose ISR includes the broker, of topics whose `min.insync.replicas` could
    /// not be read (the cluster refused DescribeConfigs, or answered without it): whether they
    /// keep enough in-sync replicas without the broker is unknown. Pass
    /// [`min_insync_replicas`](RestartGateOptions::min_insync_replicas) to decide.
    MinInsyncReplicasUnknown {
        /// How many partitions.
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
            RestartRefusal::ControlPlaneUnknown => f.write_str(
                "the brokers' configuration cannot be read, so the broker may be a KRaft \
                 controller voter the quorum's majority needs (check the quorum, then allow it)",
            ),
            RestartRefusal::QuorumAtRisk { voters, up } => write!(
                f,
                "the broker is a KRaft controller voter and only voters {up:?} of {voters:?} are up: \
                 without it the quorum loses its majority"
            ),
            RestartRefusal::QuorumUnverified => f.write_str(
                "KRaft combined mode with controller voters that cannot be read: the broker may \
                 be a voter the quorum's majority needs (check the quorum, then allow it)",
            ),
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
            RestartRefusal::MinInsyncReplicasUnknown { count, examples } => write!(
                f,
                "the min.insync.replicas of {count} partitions it is in sync for could not be \
                 read (pass it to decide): {}",
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
    /// How the cluster is controlled, as it reported.
    pub control_plane: ControlPlane,
}

/// Options for [`safe_to_restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartGateOptions {
    /// Overrides every topic's `min.insync.replicas`, which is otherwise read from the topic
    /// configuration (where it cannot be read, the gate refuses with
    /// [`RestartRefusal::MinInsyncReplicasUnknown`] rather than guess).
    pub min_insync_replicas: Option<usize>,
    /// Do not refuse a node whose quorum cannot be seen — KRaft in combined mode without
    /// static voters ([`RestartRefusal::QuorumUnverified`]), or a cluster whose brokers'
    /// configuration cannot be read ([`RestartRefusal::ControlPlaneUnknown`]): the operator
    /// checked it.
    #[serde(default)]
    pub allow_unverified_quorum: bool,
}

fn examples(names: &[String]) -> Vec<String> {
    names.iter().take(LISTED).cloned().collect()
}

/// The maintenance runbook's checklist before stopping `broker`: no under-replicated or offline
/// partitions in the cluster; the control plane keeps working without it (KRaft: the voters
/// left up are a majority; ZooKeeper: it is not the controller); and every partition whose ISR
/// includes it keeps at least its topic's `min.insync.replicas` in-sync replicas elsewhere (so
/// `acks=all` producers are not refused). The verdict lists every reason it refuses.
pub async fn safe_to_restart<C>(
    cluster: &C,
    broker: i32,
    options: RestartGateOptions,
) -> Result<RestartVerdict, HealthError>
where
    C: MetadataQuery + ConfigQuery + ?Sized,
{
    let metadata = cluster.metadata(&[]).await?;
    let control = ControlPlane::discover(cluster, &metadata).await;
    let min_insync = if options.min_insync_replicas.is_some() {
        BTreeMap::new()
    } else {
        topic_min_insync_replicas(cluster, &metadata).await
    };
    Ok(evaluate(&metadata, &control, &min_insync, broker, options))
}

/// Every topic's `min.insync.replicas`, in one DescribeConfigs request (asked once more after a
/// transient failure: the broker that took it may be the one a rolling restart just stopped);
/// topics the broker cannot answer for are left out (empty when it refuses the request).
pub async fn topic_min_insync_replicas(
    cluster: &(impl ConfigQuery + ?Sized),
    metadata: &ClusterMetadata,
) -> BTreeMap<String, usize> {
    let topics: Vec<String> = metadata
        .topics
        .iter()
        .filter(|t| t.error.is_none())
        .map(|t| t.name.to_string())
        .collect();
    let mut answer = cluster.topic_configs(&topics).await;
    if let Err(error) = &answer
        && error.class() == ErrorClass::Transient
    {
        tracing::debug!(%error, "cannot read topic configurations; asking again");
        answer = cluster.topic_configs(&topics).await;
    }
    match answer {
        Ok(configs) => configs
            .into_iter()
            .filter_map(|(topic, entries)| {
                let value = entries.ok()?.get("min.insync.replicas")?.clone()?;
                Some((topic, value.trim().parse().ok()?))
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read topic configurations: min.insync.replicas unknown");
            BTreeMap::new()
        }
    }
}

/// The gate's rules over what [`safe_to_restart`] read (see there).
pub fn evaluate(
    metadata: &ClusterMetadata,
    control: &ControlPlane,
    min_insync_replicas: &BTreeMap<String, usize>,
    broker: i32,
    options: RestartGateOptions,
) -> RestartVerdict {
    let brokers: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.id).collect();
    let mut refusals = Vec::new();
    if !brokers.contains(&broker) {
        refusals.push(RestartRefusal::UnknownBroker {
            listed: brokers.iter().copied().collect(),
        });
    }
    match control {
        // The metadata's controller is a random live broker in KRaft: only the quorum counts.
        ControlPlane::KRaft { combined, .. } => match control.quorum(metadata) {
            Some(quorum)
                if quorum.voters.contains(&broker) && !quorum.survives_stopping(broker) =>
            {
                refusals.push(RestartRefusal::QuorumAtRisk {
                    voters: quorum.voters,
                    up: quorum.up,
                });
            }
            // Brokers alone (controllers elsewhere) are not voters.
            None if *combined && !options.allow_unverified_quorum => {
                refusals.push(RestartRefusal::QuorumUnverified);
            }
            Some(_) | None => {}
        },
        // Unread, the node may be a KRaft voter, and the metadata's controller (random in
        // KRaft) would only be a guess.
        ControlPlane::Unknown if !options.allow_unverified_quorum => {
            refusals.push(RestartRefusal::ControlPlaneUnknown);
        }
        ControlPlane::ZooKeeper | ControlPlane::Unknown => match metadata.controller {
            Some(id) if id == broker => refusals.push(RestartRefusal::IsController),
            Some(id) if brokers.contains(&id) => {}
            _ => refusals.push(RestartRefusal::ControllerUnknown),
        },
    }
    let (mut under, mut offline, mut short) = (Vec::new(), Vec::new(), Vec::new());
    let mut unknown = Vec::new();
    let (mut leads, mut in_sync_for, mut required_max) = (0, 0, 1);
    for topic in metadata.topics.iter().filter(|t| t.error.is_none()) {
        let required = options
            .min_insync_replicas
            .or_else(|| min_insync_replicas.get(&*topic.name).copied())
            .map(|required| required.max(1));
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
                match required {
                    // Any topic needs one in-sync replica left to stay online.
                    None if elsewhere == 0 => short.push(name),
                    None => unknown.push(name),
                    Some(required) if elsewhere < required => {
                        short.push(name);
                        required_max = required_max.max(required);
                    }
                    Some(_) => {}
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
            required: required_max,
            count: short.len(),
            examples: examples(&short),
        });
    }
    if !unknown.is_empty() {
        refusals.push(RestartRefusal::MinInsyncReplicasUnknown {
            count: unknown.len(),
            examples: examples(&unknown),
        });
    }
    RestartVerdict {
        broker,
        safe: refusals.is_empty(),
        refusals,
        leads,
        in_sync_for,
        control_plane: control.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use kafka_ops_core::Error;
    use kafka_ops_core::cluster::{
        BrokerInfo, ConfigEntries, MockConfigQuery, MockMetadataQuery, PartitionInfo, TopicConfigs,
        TopicInfo,
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

    fn metadata_with(
        brokers: &[i32],
        controller: Option<i32>,
        partitions: Vec<PartitionInfo>,
    ) -> ClusterMetadata {
        ClusterMetadata {
            brokers: brokers.iter().map(|id| broker(*id)).collect(),
            controller,
            topics: vec![TopicInfo {
                name: "orders".into(),
                partitions,
                error: None,
            }],
        }
    }

    fn metadata(controller: Option<i32>, partitions: Vec<PartitionInfo>) -> ClusterMetadata {
        metadata_with(&[1, 2, 3], controller, partitions)
    }

    fn zk() -> ControlPlane {
        ControlPlane::ZooKeeper
    }

    fn kraft() -> ControlPlane {
        ControlPlane::KRaft {
            voters: Some(vec![1, 2, 3]),
            combined: true,
        }
    }

    /// The topic's `min.insync.replicas` as read from the cluster: 1, Kafka's default.
    fn orders_min_insync() -> BTreeMap<String, usize> {
        BTreeMap::from([("orders".to_string(), 1)])
    }

    fn judge(metadata: &ClusterMetadata, control: &ControlPlane, broker: i32) -> RestartVerdict {
        evaluate(
            metadata,
            control,
            &orders_min_insync(),
            broker,
            RestartGateOptions::default(),
        )
    }

    #[test]
    fn a_healthy_follower_may_restart() {
        let metadata = metadata(
            Some(3),
            vec![
                partition(0, 1, &[1, 2, 3], &[1, 2, 3]),
                partition(1, 2, &[2, 3, 1], &[2, 3, 1]),
            ],
        );
        let verdict = judge(&metadata, &zk(), 1);
        assert!(verdict.safe, "{verdict:?}");
        assert_eq!((verdict.leads, verdict.in_sync_for), (1, 2));
    }

    #[test]
    fn every_reason_is_listed() {
        let metadata = metadata(
            Some(1),
            vec![
                // Led by 1 with no other in-sync replica.
                partition(0, 1, &[1, 2], &[1]),
                // Offline: its leader is not a listed broker.
                partition(1, 9, &[9, 2], &[9, 2]),
            ],
        );
        let verdict = judge(&metadata, &zk(), 1);
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

    #[test]
    fn min_insync_replicas_raises_the_bar_per_topic_or_for_all() {
        let metadata = metadata(Some(2), vec![partition(0, 1, &[1, 2, 3], &[1, 2, 3])]);
        assert!(judge(&metadata, &zk(), 1).safe);
        let from_config = BTreeMap::from([("orders".to_string(), 3)]);
        let strict = evaluate(
            &metadata,
            &zk(),
            &from_config,
            1,
            RestartGateOptions::default(),
        );
        let expected = vec![RestartRefusal::NoInSyncReplicaElsewhere {
            required: 3,
            count: 1,
            examples: vec!["orders/0".into()],
        }];
        assert_eq!(strict.refusals, expected);
        let overridden = evaluate(
            &metadata,
            &zk(),
            &BTreeMap::new(),
            1,
            RestartGateOptions {
                min_insync_replicas: Some(3),
                ..RestartGateOptions::default()
            },
        );
        assert_eq!(overridden.refusals, expected);
        // The override wins over the topic's own setting.
        let lenient = evaluate(
            &metadata,
            &zk(),
            &from_config,
            1,
            RestartGateOptions {
                min_insync_replicas: Some(2),
                ..RestartGateOptions::default()
            },
        );
        assert!(lenient.safe, "{lenient:?}");
    }

    #[test]
    fn an_unread_min_insync_replicas_is_refused_not_guessed() {
        let metadata = metadata(
            Some(2),
            vec![
                // In sync elsewhere, but is one other replica enough?
                partition(0, 1, &[1, 2, 3], &[1, 2]),
                partition(1, 2, &[1, 2, 3], &[1, 2, 3]),
                // No other in-sync replica: short whatever the setting.
                partition(2, 1, &[1, 2], &[1]),
                // Not in sync for broker 1: no question.
                partition(3, 2, &[2, 3], &[2, 3]),
            ],
        );
        let unread = evaluate(
            &metadata,
            &zk(),
            &BTreeMap::new(),
            1,
            RestartGateOptions::default(),
        );
        assert_eq!(
            unread.refusals,
            vec![
                RestartRefusal::UnderReplicated {
                    count: 2,
                    examples: vec!["orders/0".into(), "orders/2".into()]
                },
                RestartRefusal::NoInSyncReplicaElsewhere {
                    required: 1,
                    count: 1,
                    examples: vec!["orders/2".into()]
                },
                RestartRefusal::MinInsyncReplicasUnknown {
                    count: 2,
                    examples: vec!["orders/0".into(), "orders/1".into()]
                },
            ]
        );
        assert!(unread.refusals[2].to_string().contains("could not be read"));
        // The operator's value decides.
        let decided = evaluate(
            &metadata_with(
                &[1, 2, 3],
                Some(2),
                vec![partition(0, 1, &[1, 2, 3], &[1, 2, 3])],
            ),
            &zk(),
            &BTreeMap::new(),
            1,
            RestartGateOptions {
                min_insync_replicas: Some(2),
                ..RestartGateOptions::default()
            },
        );
        assert!(decided.safe, "{decided:?}");
    }

    #[test]
    fn unknown_brokers_and_controllers_are_refused() {
        let verdict = judge(&metadata(None, vec![]), &zk(), 7);
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

    #[test]
    fn an_unread_control_plane_is_refused_unless_the_quorum_was_checked() {
        // The metadata's controller is another live broker, which in KRaft means nothing.
        let all_up = metadata(Some(2), vec![partition(0, 2, &[1, 2, 3], &[1, 2, 3])]);
        let verdict = judge(&all_up, &ControlPlane::Unknown, 1);
        assert_eq!(verdict.refusals, vec![RestartRefusal::ControlPlaneUnknown]);
        assert!(verdict.refusals[0].to_string().contains("cannot be read"));
        let allowed = |broker| {
            evaluate(
                &all_up,
                &ControlPlane::Unknown,
                &orders_min_insync(),
                broker,
                RestartGateOptions {
                    allow_unverified_quorum: true,
                    ..RestartGateOptions::default()
                },
            )
        };
        assert!(allowed(1).safe, "{:?}", allowed(1));
        // Allowed, the controller named in the metadata is still not stopped.
        assert_eq!(allowed(2).refusals, vec![RestartRefusal::IsController]);
    }

    #[test]
    fn in_kraft_the_metadata_controller_is_not_judged_but_the_quorum_is() {
        // KRaft brokers name a random live broker as "controller": no refusal for it.
        let all_up = metadata(Some(1), vec![partition(0, 2, &[1, 2, 3], &[1, 2, 3])]);
        let verdict = judge(&all_up, &kraft(), 1);
        assert!(verdict.safe, "{verdict:?}");
        assert_eq!(verdict.control_plane, kraft());
        // A controller naming no listed broker is no reason either.
        assert!(judge(&metadata(None, vec![]), &kraft(), 2).safe);
        // Voter 3 is down already: stopping voter 1 would leave one of three.
        let one_down = metadata_with(&[1, 2], Some(2), vec![]);
        assert_eq!(
            judge(&one_down, &kraft(), 1).refusals,
            vec![RestartRefusal::QuorumAtRisk {
                voters: vec![1, 2, 3],
                up: vec![1, 2]
            }]
        );
        // A broker that is not a voter never endangers the quorum.
        let five = metadata_with(&[1, 2, 4], Some(2), vec![]);
        assert!(judge(&five, &kraft(), 4).safe);
    }

    #[test]
    fn a_combined_node_whose_quorum_cannot_be_seen_is_refused_unless_allowed() {
        let dynamic = ControlPlane::KRaft {
            voters: None,
            combined: true,
        };
        let all_up = metadata(Some(1), vec![partition(0, 2, &[1, 2, 3], &[1, 2, 3])]);
        let verdict = judge(&all_up, &dynamic, 1);
        assert_eq!(verdict.refusals, vec![RestartRefusal::QuorumUnverified]);
        assert!(verdict.refusals[0].to_string().contains("cannot be read"));
        let allowed = evaluate(
            &all_up,
            &dynamic,
            &orders_min_insync(),
            1,
            RestartGateOptions {
                allow_unverified_quorum: true,
                ..RestartGateOptions::default()
            },
        );
        assert!(allowed.safe, "{allowed:?}");
        // Broker-only nodes are never voters.
        let brokers_only = ControlPlane::KRaft {
            voters: None,
            combined: false,
        };
        assert!(judge(&all_up, &brokers_only, 1).safe);
    }

    /// A cluster answering metadata and configuration queries from mocks.
    struct Cluster {
        metadata: MockMetadataQuery,
        configs: MockConfigQuery,
    }

    #[async_trait]
    impl MetadataQuery for Cluster {
        async fn metadata(&self, topics: &[String]) -> Result<ClusterMetadata, Error> {
            self.metadata.metadata(topics).await
        }
    }

    #[async_trait]
    impl ConfigQuery for Cluster {
        async fn topic_configs(&self, topics: &[String]) -> Result<TopicConfigs, Error> {
            self.configs.topic_configs(topics).await
        }
        async fn broker_config(&self, id: i32) -> Result<ConfigEntries, Error> {
            self.configs.broker_config(id).await
        }
    }

    #[tokio::test]
    async fn the_gate_reads_min_insync_replicas_and_the_mode_from_the_cluster() {
        let mut cluster = Cluster {
            metadata: MockMetadataQuery::new(),
            configs: MockConfigQuery::new(),
        };
        // Node 3 is down: orders/0 has ISR {1, 2} = min.insync.replicas.
        let metadata = metadata_with(&[1, 2], Some(2), vec![partition(0, 1, &[1, 2, 3], &[1, 2])]);
        cluster
            .metadata
            .expect_metadata()
            .returning(move |_| Ok(metadata.clone()));
        cluster
            .configs
            .expect_broker_config()
            .withf(|id| *id == 1)
            .returning(|_| {
                Ok(ConfigEntries::from([
                    ("process.roles".into(), Some("broker,controller".into())),
                    (
                        "controller.quorum.voters".into(),
                        Some("1@a:1,2@b:1,3@c:1".into()),
                    ),
                ]))
            });
        cluster
            .configs
            .expect_topic_configs()
            .withf(|topics| topics == ["orders".to_string()])
            .returning(|topics| {
                Ok(vec![(
                    topics[0].clone(),
                    Ok(ConfigEntries::from([(
                        "min.insync.replicas".into(),
                        Some("2".into()),
                    )])),
                )])
            });
        let verdict = safe_to_restart(&cluster, 2, RestartGateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            verdict.refusals,
            vec![
                RestartRefusal::QuorumAtRisk {
                    voters: vec![1, 2, 3],
                    up: vec![1, 2]
                },
                RestartRefusal::UnderReplicated {
                    count: 1,
                    examples: vec!["orders/0".into()]
                },
                RestartRefusal::NoInSyncReplicaElsewhere {
                    required: 2,
                    count: 1,
                    examples: vec!["orders/0".into()]
                },
            ]
        );
    }
}
