//! Group queries while the group's coordinator is down, on librdkafka's mock cluster. The admin
//! coordinator lookup librdkafka offers frees its request twice when a request times out before
//! the coordinator is back, which aborts the process once it is (librdkafka 2.12); a health
//! probe asking every few seconds hits exactly that during a broker restart. Describing and
//! reading committed offsets must instead time out cleanly and answer again afterwards (the
//! real cluster's side is in `admin_real_kafka.rs`). The metadata every query starts from must
//! answer right after a broker stops, too.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{GroupQuery, MetadataQuery, OffsetQuery};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{KafkaCode, Offset, TopicPartition};

#[tokio::test(flavor = "multi_thread")]
async fn reading_a_group_whose_coordinator_is_down_times_out_then_answers_again() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("invoices");
    let group = unique_name("billing");
    kafka.create_topic(&topic, 3).unwrap();
    kafka
        .produce(
            &topic,
            (0..9).map(|i| TestRecord::keyed(format!("k{i}"), "v")),
        )
        .await
        .unwrap();
    let tp = TopicPartition::new(topic.as_str(), 0);
    kafka
        .commit(&group, &[(tp.clone(), Offset::new(2).unwrap())])
        .await
        .unwrap();
    let cluster = kafka
        .cluster()
        .unwrap()
        .with_timeout(Duration::from_millis(600));
    let groups = [group.clone()];
    // The mock cannot describe groups: said once, then not asked again (each ask would be a
    // coordinator lookup).
    let unsupported = |described: &[kafka_ops_core::cluster::GroupDescription]| {
        described[0].error.as_ref().and_then(|e| e.code) == Some(KafkaCode::UNSUPPORTED_FEATURE)
    };
    let patient = cluster.clone().with_timeout(Duration::from_secs(10));
    assert!(unsupported(
        &patient.describe_groups(&groups).await.unwrap()
    ));

    // Every broker takes its turn down, the group's coordinator among them, each for longer
    // than a call's bound, while the group is described and its offsets read.
    for broker in 1..=3 {
        kafka.broker_down(broker).unwrap();
        for _ in 0..3 {
            let described = cluster.describe_groups(&groups).await.unwrap();
            assert!(unsupported(&described), "{described:?}");
            let _ = cluster
                .committed_offsets(&group, std::slice::from_ref(&tp))
                .await;
        }
        kafka.broker_up(broker).unwrap();
        // What timed-out requests left behind now meets a broker that answers: the process must
        // still be here, and the offsets read as before.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let committed = patient
            .committed_offsets(&group, std::slice::from_ref(&tp))
            .await
            .unwrap();
        assert_eq!(committed, [(tp.clone(), Ok(Some(Offset::new(2).unwrap())))]);
    }
}

/// With every broker down, reading twenty groups' offsets over 300 partitions (three requests
/// each) ends within about one bound for the whole call, each group with its timeout: a health
/// probe or exporter pass must not take twenty bounds, one per group.
#[tokio::test(flavor = "multi_thread")]
async fn groups_whose_coordinators_are_down_share_one_bound() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("ledger");
    kafka.create_topic(&topic, 300).unwrap();
    let partitions: Vec<TopicPartition> = (0..300)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    let groups: Vec<String> = (0..20).map(|i| unique_name(&format!("g{i}"))).collect();
    let cluster = kafka
        .cluster()
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    for broker in 1..=3 {
        kafka.broker_down(broker).unwrap();
    }
    let started = std::time::Instant::now();
    let answers = cluster
        .groups_committed_offsets(&groups, &partitions)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(answers.len(), 20);
    for (_, answer) in &answers {
        assert!(
            matches!(answer, Err(kafka_ops_core::Error::Timeout { .. })),
            "{answer:?}"
        );
    }
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for broker in 1..=3 {
        kafka.broker_up(broker).unwrap();
    }
}

/// librdkafka keeps an application's metadata request on the broker it picked, even once that
/// broker's connection drops; with a 600 ms bound a plain fetch timed out in 5 of 30 rounds
/// here. Asked again within the bound, every round answers.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_answers_within_its_bound_right_after_a_broker_stops() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("orders");
    kafka.create_topic(&topic, 6).unwrap();
    let bound = Duration::from_millis(600);
    let cluster = kafka.cluster().unwrap().with_timeout(bound);
    cluster.metadata(&[]).await.unwrap();
    let mut failures = Vec::new();
    for round in 0..20 {
        let broker = round % 3 + 1;
        kafka.broker_down(broker).unwrap();
        let asked = Instant::now();
        match cluster.metadata(&[]).await {
            Ok(metadata) => {
                let listed = metadata.topics.iter().find(|t| *t.name == *topic);
                assert_eq!(listed.map(|t| t.partitions.len()), Some(6), "{metadata:?}");
            }
            Err(error) => failures.push(format!(
                "round {round}: {error} after {:?}",
                asked.elapsed()
            )),
        }
        kafka.broker_up(broker).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Settled again before the next broker stops.
        cluster.metadata(&[]).await.unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
