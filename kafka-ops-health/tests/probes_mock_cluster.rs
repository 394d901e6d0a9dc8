//! Every built-in probe's healthy and failing paths on librdkafka's mock cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use kafka_ops_core::Severity;
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::client_config;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, Record, TopicPartition};
use kafka_ops_health::probes::*;
use kafka_ops_health::{HealthChecker, HealthProbe, ProbeKind, Status};

fn cluster(kafka: &MockKafka) -> Arc<KafkaCluster> {
    Arc::new(
        kafka
            .cluster()
            .unwrap()
            .with_timeout(Duration::from_secs(3)),
    )
}

async fn fill(kafka: &MockKafka, topic: &str, partitions: i32, per_partition: usize) {
    kafka.create_topic(topic, partitions).unwrap();
    for p in 0..partitions {
        let records =
            (0..per_partition).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(p));
        kafka.produce(topic, records).await.unwrap();
    }
}

/// The broker leading `topic`/`partition`.
async fn leader(cluster: &KafkaCluster, topic: &str, partition: i32) -> i32 {
    use kafka_ops_core::cluster::MetadataQuery;
    let metadata = cluster.metadata(&[topic.to_string()]).await.unwrap();
    metadata.topic(topic).unwrap().partitions[partition as usize]
        .leader
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_connectivity_counts_brokers_and_sees_one_go_down() {
    let kafka = MockKafka::start(3).unwrap();
    let probe = BrokerConnectivityProbe::new(cluster(&kafka)).expect_brokers(3);
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.message, "3 of 3 brokers up");

    kafka.broker_down(2).unwrap();
    // The metadata stops listing a broker that is down once a refresh notices.
    let deadline = Instant::now() + Duration::from_secs(20);
    let check = loop {
        let check = probe.check().await.unwrap();
        if check.status != Status::Healthy || Instant::now() > deadline {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(check.status, Status::Degraded, "{check:?}");
    assert_eq!(check.severity, Severity::Warning);
    assert_eq!(check.message, "2 of 3 brokers up");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_is_unhealthy_not_a_hang() {
    let cluster = Arc::new(
        KafkaCluster::from_config(&client_config("127.0.0.1:1"))
            .unwrap()
            .with_timeout(Duration::from_millis(500)),
    );
    let report = HealthChecker::new()
        .with_default_timeout(Duration::from_secs(3))
        .probe(BrokerConnectivityProbe::new(cluster.clone()))
        .probe(PartitionsProbe::new(cluster))
        .check()
        .await;
    let connectivity = report.probe("broker_connectivity").unwrap();
    assert_eq!(connectivity.status, Status::Unhealthy);
    assert!(
        connectivity.message.starts_with("cluster unreachable"),
        "{connectivity:?}"
    );
    assert_eq!(
        report.probe("partitions").unwrap().status,
        Status::Unhealthy
    );
    assert_eq!(report.ready, Status::Unhealthy);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_broker_times_the_probe_out() {
    let kafka = MockKafka::start(1).unwrap();
    let cluster = Arc::new(
        kafka
            .cluster()
            .unwrap()
            .with_timeout(Duration::from_secs(30)),
    );
    kafka
        .broker_round_trip_time(1, Duration::from_secs(5))
        .unwrap();
    let started = Instant::now();
    let report = HealthChecker::new()
        .probe_with_timeout(
            BrokerConnectivityProbe::new(cluster),
            Duration::from_millis(700),
        )
        .check()
        .await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let probe = report.probe("broker_connectivity").unwrap();
    assert_eq!(probe.status, Status::Unhealthy);
    assert_eq!(probe.message, "timed out after 700ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mock_cluster_reports_no_real_controller() {
    // librdkafka's mock cluster answers controller id 0, which names none of its brokers
    // (1..=n); the healthy path is tested on the real cluster (real_kafka.rs).
    let kafka = MockKafka::start(3).unwrap();
    let check = ControllerProbe::new(cluster(&kafka)).check().await.unwrap();
    assert_eq!(check.status, Status::Unhealthy);
    assert!(check.message.contains("not among the brokers"), "{check:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_whose_leader_is_down_is_offline() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("replicated");
    kafka.create_topic(&topic, 6).unwrap();
    let cluster = cluster(&kafka);
    let probe = PartitionsProbe::new(cluster.clone()).topics([topic.clone()]);
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.message, "6 partitions fully replicated and led");

    let down = leader(&cluster, &topic, 0).await;
    kafka.broker_down(down).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let check = loop {
        let check = probe.check().await.unwrap();
        if check.status != Status::Healthy || Instant::now() > deadline {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(check.status, Status::Unhealthy, "{check:?}");
    assert_eq!(check.severity, Severity::Critical);
    assert!(check.message.contains(&format!("{topic}/0")), "{check:?}");
    assert!(check.details["offline"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn required_topics_missing_or_too_small() {
    let kafka = MockKafka::start(1).unwrap();
    let (audit, outbox) = (unique_name("audit_events"), unique_name("outbox_events"));
    kafka.create_topic(&audit, 3).unwrap();
    kafka.create_topic(&outbox, 1).unwrap();
    let cluster = cluster(&kafka);
    let healthy = RequiredTopicsProbe::new(cluster.clone())
        .topic(audit.clone())
        .topic_with_partitions(outbox.clone(), 1);
    assert_eq!(healthy.check().await.unwrap().status, Status::Healthy);

    let short = RequiredTopicsProbe::new(cluster.clone()).topic_with_partitions(outbox.clone(), 6);
    let check = short.check().await.unwrap();
    assert_eq!(check.status, Status::Degraded);
    assert_eq!(
        check.message,
        format!("{outbox} has 1 partitions, expected 6")
    );

    let missing = unique_name("somabrain_events");
    let absent = RequiredTopicsProbe::new(cluster)
        .topic(audit)
        .topic(missing.clone());
    let check = absent.check().await.unwrap();
    assert_eq!(check.status, Status::Unhealthy);
    assert_eq!(check.message, format!("missing topics: {missing}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_with_growing_lag_degrades_and_names_its_worst_partitions() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("orders");
    fill(&kafka, &topic, 2, 10).await;
    let group = unique_name("billing");
    let zero = Offset::new(0).unwrap();
    kafka
        .commit(
            &group,
            &[
                (TopicPartition::new(topic.as_str(), 0), zero),
                (
                    TopicPartition::new(topic.as_str(), 1),
                    Offset::new(10).unwrap(),
                ),
            ],
        )
        .await
        .unwrap();
    let probe = ConsumerLagProbe::new(cluster(&kafka), [group.clone()]);
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");

    // The group stands still while 12 000 records arrive on partition 0.
    let records = (0..12_000).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(0));
    kafka.produce(&topic, records).await.unwrap();
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Degraded, "{check:?}");
    assert_eq!(check.severity, Severity::Warning);
    assert!(
        check
            .message
            .contains(&format!("worst: {topic}/0 lag 12010")),
        "{check:?}"
    );
    assert_eq!(check.details[&group]["total_lag"], 12_010);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_without_committed_offsets_is_not_healthy() {
    let kafka = MockKafka::start(1).unwrap();
    fill(&kafka, &unique_name("orders"), 1, 5).await;
    let group = unique_name("bilings");
    let probe = ConsumerLagProbe::new(cluster(&kafka), [group.clone()]);
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Degraded, "{check:?}");
    assert_eq!(check.severity, Severity::Warning);
    assert!(check.message.contains("no committed offsets"), "{check:?}");
    assert_eq!(check.details[&group]["committed"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_with_150_records_is_a_warning() {
    let kafka = MockKafka::start(1).unwrap();
    let dlq = format!("{}.dlq", unique_name("orders"));
    fill(&kafka, &dlq, 3, 50).await;
    let cluster = cluster(&kafka);
    let probe = DeadLetterDepthProbe::new(cluster.clone(), DeadLetterTopics::default());
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Degraded, "{check:?}");
    assert_eq!(check.severity, Severity::Warning);
    assert!(check.message.contains("holds 150 records"), "{check:?}");

    let critical =
        DeadLetterDepthProbe::new(cluster.clone(), DeadLetterTopics::Named(vec![dlq.clone()]))
            .with_depths(10, 100);
    assert_eq!(critical.check().await.unwrap().status, Status::Unhealthy);

    // A group that worked through most of it leaves little waiting.
    let group = unique_name("dlq-reader");
    let commits: Vec<_> = (0..3)
        .map(|p| {
            (
                TopicPartition::new(dlq.as_str(), p),
                Offset::new(40).unwrap(),
            )
        })
        .collect();
    kafka.commit(&group, &commits).await.unwrap();
    let consumed =
        DeadLetterDepthProbe::new(cluster, DeadLetterTopics::default()).consumed_by(group);
    let check = consumed.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.details["total"], 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_canary_round_trips_and_notices_a_dead_leader() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("canary");
    kafka.create_topic(&topic, 1).unwrap();
    let probe = CanaryProbe::new(&kafka.client_config(), topic.clone())
        .unwrap()
        .with_deadline(Duration::from_secs(5));
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert!(check.message.starts_with("3 canary records round trip in"));
    // A second round reads only its own records.
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.details["lost"], serde_json::json!([]));

    let down = leader(&cluster(&kafka), &topic, 0).await;
    kafka.broker_down(down).unwrap();
    let started = Instant::now();
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Unhealthy, "{check:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by its deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_poll_loop_fails_liveness() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("stall");
    fill(&kafka, &topic, 1, 5).await;
    let stalled = Arc::new(AtomicBool::new(false));
    let handler = {
        let stalled = stalled.clone();
        handler_fn(move |record: &Record<'_>| {
            if record.offset.get() == 2 {
                stalled.store(true, AtomicOrdering::SeqCst);
                // Blocks the thread it runs on; here that is the poll loop's.
                std::thread::sleep(Duration::from_secs(3));
                stalled.store(false, AtomicOrdering::SeqCst);
            }
            async { Ok(Outcome::Processed) }
        })
    };
    let driver = Driver::new(
        kafka.consumer_config(&unique_name("g")),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    let handle = driver.handle();
    let probe = ConsumerLivenessProbe::new(Arc::new(handle.clone()))
        .with_max_poll_gap(Duration::from_secs(1));
    let check = probe.check().await.unwrap();
    assert_eq!(
        check.status,
        Status::Unhealthy,
        "not running yet: {check:?}"
    );
    let run = tokio::spawn(driver.run());

    let deadline = Instant::now() + Duration::from_secs(30);
    while !stalled.load(AtomicOrdering::SeqCst) {
        assert!(Instant::now() < deadline, "the handler never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let report = HealthChecker::new()
        .with_default_timeout(Duration::from_millis(500))
        .probe(probe)
        .check()
        .await;
    let liveness = report.probe("consumer_liveness").unwrap();
    assert_eq!(liveness.kind, ProbeKind::Liveness);
    assert_eq!(liveness.status, Status::Unhealthy, "{liveness:?}");
    assert!(
        liveness.message.contains("has not polled for"),
        "{liveness:?}"
    );
    assert_eq!(report.live, Status::Unhealthy);

    while stalled.load(AtomicOrdering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = ConsumerLivenessProbe::new(Arc::new(handle.clone()))
        .with_max_poll_gap(Duration::from_secs(1));
    assert_eq!(probe.check().await.unwrap().status, Status::Healthy);
    handle.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_restart_gate_refuses_while_a_broker_is_down() {
    use kafka_ops_health::{RestartGateOptions, RestartRefusal, safe_to_restart};
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("gate");
    kafka.create_topic(&topic, 6).unwrap();
    let cluster = cluster(&kafka);
    // The mock cluster answers no DescribeConfigs: the gate refuses rather than guess (the
    // topics' setting, and whether the node is a KRaft voter)...
    let unread = safe_to_restart(cluster.as_ref(), 1, RestartGateOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(
            unread.refusals.as_slice(),
            [
                RestartRefusal::ControlPlaneUnknown { cause: Some(_) },
                RestartRefusal::MinInsyncReplicasUnknown { count: 6, .. }
            ]
        ),
        "{unread:?}"
    );
    // ...until it is told the topics' setting and that the quorum was checked.
    let options = RestartGateOptions {
        min_insync_replicas: Some(1),
        allow_unverified_quorum: true,
    };
    // Healthy but for the mock's controller id 0, which names no broker.
    let verdict = safe_to_restart(cluster.as_ref(), 1, options).await.unwrap();
    assert_eq!(
        verdict.refusals,
        vec![RestartRefusal::ControllerUnknown],
        "{verdict:?}"
    );
    assert_eq!(verdict.in_sync_for, 6, "replicated on every broker");

    let down = leader(&cluster, &topic, 0).await;
    kafka.broker_down(down).unwrap();
    let other = if down == 1 { 2 } else { 1 };
    let deadline = Instant::now() + Duration::from_secs(20);
    let verdict = loop {
        let verdict = safe_to_restart(cluster.as_ref(), other, options)
            .await
            .unwrap();
        if verdict.refusals.len() > 1 || Instant::now() > deadline {
            break verdict;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!verdict.safe);
    assert!(
        verdict
            .refusals
            .iter()
            .any(|r| matches!(r, RestartRefusal::Offline { examples, .. } if examples.contains(&format!("{topic}/0")))),
        "{verdict:?}"
    );
    // The broker that is down is not listed: asking about it says so.
    let verdict = safe_to_restart(cluster.as_ref(), down, options)
        .await
        .unwrap();
    assert!(
        verdict
            .refusals
            .iter()
            .any(|r| matches!(r, RestartRefusal::UnknownBroker { .. })),
        "{verdict:?}"
    );
}
