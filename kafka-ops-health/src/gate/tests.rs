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
    assert_eq!(
        verdict.refusals,
        vec![RestartRefusal::ControlPlaneUnknown { cause: None }]
    );
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

#[tokio::test]
async fn an_unread_control_plane_is_refused_with_what_the_brokers_answered() {
    let mut cluster = Cluster {
        metadata: MockMetadataQuery::new(),
        configs: MockConfigQuery::new(),
    };
    let metadata = metadata(Some(2), vec![partition(0, 2, &[1, 2, 3], &[1, 2, 3])]);
    cluster
        .metadata
        .expect_metadata()
        .returning(move |_| Ok(metadata.clone()));
    cluster.configs.expect_broker_config().returning(|id| {
        Err(Error::Kafka {
            operation: "describe broker config",
            code: None,
            source: format!("broker {id} is restarting").into(),
        })
    });
    let options = RestartGateOptions {
        min_insync_replicas: Some(1),
        ..RestartGateOptions::default()
    };
    let verdict = safe_to_restart(&cluster, 1, options).await.unwrap();
    let [RestartRefusal::ControlPlaneUnknown { cause: Some(cause) }] = verdict.refusals.as_slice()
    else {
        panic!("{verdict:?}");
    };
    // Three brokers asked, each answer kept.
    for id in 1..=3 {
        assert!(
            cause.contains(&format!("broker {id} is restarting")),
            "{cause}"
        );
    }
    assert!(
        verdict.refusals[0]
            .to_string()
            .contains("broker 3 is restarting"),
        "{}",
        verdict.refusals[0]
    );
}
