//! Probes and the restart gate on a real Apache Kafka cluster (3 KRaft nodes, each broker and
//! controller): the controller quorum as the cluster reports it, `min.insync.replicas` read from
//! the topic configuration, and what changes while a node is SIGKILLed and after it returns.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::Severity;
use kafka_ops_core::cluster::MetadataQuery;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::testkit::{RealKafka, TopicSpec, unique_name};
use kafka_ops_health::probes::{BrokerConnectivityProbe, ControllerProbe, PartitionsProbe};
use kafka_ops_health::{
    ControlPlane, HealthProbe, RestartGateOptions, RestartRefusal, Status, safe_to_restart,
};
use kafka_ops_health::{evaluate, topic_min_insync_replicas};
use serde_json::json;

fn kraft() -> ControlPlane {
    ControlPlane::KRaft {
        voters: Some(vec![1, 2, 3]),
        combined: true,
    }
}

fn controller_probe(cluster: &Arc<KafkaCluster>) -> ControllerProbe {
    ControllerProbe::new(cluster.clone()).with_configs(cluster.clone())
}

/// Waits until `metadata` lists only `brokers` and no partition of `topic` still counts
/// `gone` in its ISR.
async fn wait_for_fencing(cluster: &KafkaCluster, topic: &str, gone: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metadata = cluster.metadata(&[]).await.unwrap();
        let listed: Vec<i32> = metadata.brokers.iter().map(|b| b.id).collect();
        let fenced = metadata
            .topic(topic)
            .is_some_and(|t| t.partitions.iter().all(|p| !p.isr.contains(&gone)));
        if !listed.contains(&gone) && fenced {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {gone} still listed or in sync: {metadata:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_probe_reports_the_kraft_quorum_not_the_random_metadata_controller() {
    let kafka = RealKafka::exclusive().await.unwrap();
    let cluster = Arc::new(kafka.cluster());
    for _ in 0..5 {
        // KRaft brokers name a random live broker as "controller": never a false critical.
        let check = controller_probe(&cluster).check().await.unwrap();
        assert_eq!(check.status, Status::Healthy, "{check:?}");
        assert_eq!(check.message, "KRaft quorum: all 3 voters up");
        assert_eq!(check.details["voters_up"], json!([1, 2, 3]));
        assert_eq!(
            check.details["control_plane"],
            json!({"mode": "kraft", "voters": [1, 2, 3], "combined": true})
        );
    }
    let connectivity = BrokerConnectivityProbe::new(cluster.clone())
        .expect_brokers(3)
        .check()
        .await
        .unwrap();
    assert_eq!(connectivity.status, Status::Healthy);
    assert_eq!(connectivity.message, "3 of 3 brokers up");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_down_shows_everywhere_and_goes_away_when_it_returns() {
    let kafka = RealKafka::exclusive().await.unwrap();
    let cluster = Arc::new(kafka.cluster());
    // Replicated everywhere with min.insync.replicas=2; one lenient topic (=1); and one
    // partition that lives on node 3 alone.
    // Named so they sort as audit, node3-only, orders.
    let strict = unique_name("orders");
    let lenient = unique_name("audit");
    let lonely = unique_name("node3-only");
    kafka.create_topic(&strict, 3).await.unwrap();
    kafka
        .create_topic_with(
            &lenient,
            &TopicSpec::replicated(2).config("min.insync.replicas", "1"),
        )
        .await
        .unwrap();
    kafka
        .create_topic_with(&lonely, &TopicSpec::placed(vec![vec![3]]))
        .await
        .unwrap();
    let partitions = PartitionsProbe::new(cluster.clone()).topics([
        strict.clone(),
        lenient.clone(),
        lonely.clone(),
    ]);

    // All in sync: node 1 may be stopped; the topics' min.insync.replicas come from their
    // configuration (the options give none).
    let verdict = safe_to_restart(cluster.as_ref(), 1, RestartGateOptions::default())
        .await
        .unwrap();
    assert!(verdict.safe, "{verdict:?}");
    assert_eq!(verdict.control_plane, kraft());
    let check = partitions.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.message, "6 partitions fully replicated and led");

    kafka.stop_broker(3).await.unwrap();
    wait_for_fencing(&cluster, &strict, 3).await;

    let check = partitions.check().await.unwrap();
    assert_eq!(check.status, Status::Unhealthy, "{check:?}");
    assert_eq!(check.message, format!("1 offline partitions: {lonely}/0"));
    assert_eq!(check.details["under_replicated"], json!(5));
    assert_eq!(check.details["offline"], json!(1));

    let connectivity = BrokerConnectivityProbe::new(cluster.clone())
        .expect_brokers(3)
        .check()
        .await
        .unwrap();
    assert_eq!(connectivity.status, Status::Degraded);
    assert_eq!(connectivity.message, "2 of 3 brokers up");

    let controller = controller_probe(&cluster).check().await.unwrap();
    assert_eq!(
        (controller.status, controller.severity),
        (Status::Degraded, Severity::Warning)
    );
    assert_eq!(
        controller.message,
        "KRaft quorum holds with 2 of 3 voters; voters [3] are down"
    );

    // Node 1 may not go now: the quorum would lose its majority, partitions are under-
    // replicated and offline, and the strict topic's partitions would keep one in-sync replica
    // where their configuration asks for two (the lenient topic's are fine with one).
    let verdict = safe_to_restart(cluster.as_ref(), 1, RestartGateOptions::default())
        .await
        .unwrap();
    assert!(!verdict.safe);
    assert!(
        verdict.refusals.contains(&RestartRefusal::QuorumAtRisk {
            voters: vec![1, 2, 3],
            up: vec![1, 2]
        }),
        "{verdict:?}"
    );
    assert!(verdict.refusals.iter().any(|r| matches!(
        r,
        RestartRefusal::Offline { examples, .. } if examples.contains(&format!("{lonely}/0"))
    )));
    let text = verdict
        .refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("without it the quorum loses its majority"),
        "{text}"
    );

    // The same rules over our three topics alone, exactly: their min.insync.replicas as the
    // topic configuration says.
    let mut metadata = cluster.metadata(&[]).await.unwrap();
    metadata
        .topics
        .retain(|t| [&strict, &lenient, &lonely].contains(&&t.name.to_string()));
    let min_insync = topic_min_insync_replicas(cluster.as_ref(), &metadata).await;
    assert_eq!(
        min_insync,
        BTreeMap::from([
            (strict.clone(), 2),
            (lenient.clone(), 1),
            (lonely.clone(), 1)
        ])
    );
    let ours = evaluate(
        &metadata,
        &verdict.control_plane,
        &min_insync,
        1,
        RestartGateOptions::default(),
    );
    let names = |topic: &str, partitions: i32| -> Vec<String> {
        (0..partitions).map(|p| format!("{topic}/{p}")).collect()
    };
    let mut under = names(&lenient, 2);
    under.extend(names(&strict, 3));
    assert_eq!(
        ours.refusals,
        vec![
            RestartRefusal::QuorumAtRisk {
                voters: vec![1, 2, 3],
                up: vec![1, 2]
            },
            RestartRefusal::UnderReplicated {
                count: 5,
                examples: under
            },
            RestartRefusal::Offline {
                count: 1,
                examples: names(&lonely, 1)
            },
            RestartRefusal::NoInSyncReplicaElsewhere {
                required: 2,
                count: 3,
                examples: names(&strict, 3)
            },
        ]
    );

    // The node that is down is not listed, so asking about it says so.
    let verdict = safe_to_restart(cluster.as_ref(), 3, RestartGateOptions::default())
        .await
        .unwrap();
    assert!(
        verdict
            .refusals
            .contains(&RestartRefusal::UnknownBroker { listed: vec![1, 2] })
    );

    kafka.restore().await.unwrap();
    let check = partitions.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    let controller = controller_probe(&cluster).check().await.unwrap();
    assert_eq!(controller.status, Status::Healthy, "{controller:?}");
    let verdict = safe_to_restart(cluster.as_ref(), 1, RestartGateOptions::default())
        .await
        .unwrap();
    assert!(verdict.safe, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lag_probe_reports_a_kip848_group_rebalancing_as_what_it_is() {
    use kafka_ops_core::testkit::{Subscriber, TestRecord};
    use kafka_ops_health::probes::ConsumerLagProbe;
    let kafka = RealKafka::shared().await.unwrap();
    let cluster = Arc::new(kafka.cluster());
    let topic = unique_name("orders");
    let group = unique_name("kip848-billing");
    kafka.create_topic(&topic, 2).await.unwrap();
    kafka
        .produce(
            &topic,
            (0..30).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(i % 2)),
        )
        .await
        .unwrap();
    // Committed at 10 of 15 on both partitions (before any member: a group with members
    // refuses commits from outside it).
    for partition in 0..2 {
        kafka
            .commit(
                &group,
                &[(
                    kafka_ops_core::TopicPartition::new(topic.as_str(), partition),
                    kafka_ops_core::Offset::new(10).unwrap(),
                )],
            )
            .await
            .unwrap();
    }
    let first = Subscriber::join(&kafka.kip848_consumer_config(&group), &topic).unwrap();
    first.wait_assigned(Duration::from_secs(30)).unwrap();
    let probe = ConsumerLagProbe::new(cluster.clone(), [group.clone()]);
    let check = probe.check().await.unwrap();
    assert_eq!(check.details[&group]["protocol"], json!("consumer"));
    assert_eq!(check.details[&group]["state"], json!("stable"));
    assert_eq!(check.details[&group]["total_lag"], json!(10));

    // A second member joins while the first cannot revoke: reconciling, and the verdict is
    // still the lag's.
    first.freeze(true);
    let _second = Subscriber::join(&kafka.kip848_consumer_config(&group), &topic).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let check = loop {
        let check = probe.check().await.unwrap();
        if check.details[&group]["state"] == json!("reconciling") {
            break check;
        }
        assert!(Instant::now() < deadline, "{check:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.details[&group]["total_lag"], json!(10));
    first.freeze(false);
}
