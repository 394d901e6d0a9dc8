//! The admin-API paths against a real broker process (tansu): list groups, describe groups, a
//! group's committed offsets, list offsets, and the lag path built on them.
//!
//! tansu miscounts the high watermark after keyed, batched produces across partitions, so records
//! here are produced one batch at a time; data-path numbers are asserted on the mock cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::cluster::{
    Discovery, GroupQuery, GroupState, LagOptions, MetadataQuery, OffsetQuery, all_groups_lag,
    group_lag,
};
use kafka_ops_core::testkit::{Tansu, TestRecord};
use kafka_ops_core::{ManualClock, Offset, OffsetSpec, Timestamp, TopicPartition};

fn o(v: i64) -> Offset {
    Offset::new(v).unwrap()
}

async fn start() -> Tansu {
    tokio::task::spawn_blocking(Tansu::start)
        .await
        .unwrap()
        .expect("tansu must be installed and start (the README's test command installs it)")
}

async fn produce_one_by_one(
    tansu: &Tansu,
    topic: &str,
    partition: i32,
    count: i64,
    base_time: i64,
) {
    let producer = tansu.producer().unwrap();
    for i in 0..count {
        let record = TestRecord::keyed(format!("k{i}"), format!("v{i}"))
            .to_partition(partition)
            .at(base_time + i * 1_000);
        producer.produce(topic, [record]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_lag_path_lists_groups_then_offsets_then_end_offsets() {
    let tansu = start().await;
    tansu.create_topic("audit_events", 2).await.unwrap();
    tansu.create_topic("outbox_events", 1).await.unwrap();
    produce_one_by_one(&tansu, "audit_events", 0, 6, 1_700_000_000_000).await;
    produce_one_by_one(&tansu, "audit_events", 1, 3, 1_700_000_000_000).await;
    produce_one_by_one(&tansu, "outbox_events", 0, 4, 1_700_000_000_000).await;
    tansu
        .commit(
            "audit_processor_group",
            &[(TopicPartition::new("audit_events", 0), o(2))],
        )
        .await
        .unwrap();
    tansu
        .commit(
            "outbox_publisher_group",
            &[(TopicPartition::new("outbox_events", 0), o(4))],
        )
        .await
        .unwrap();
    let cluster = tansu.cluster().unwrap();

    let groups = cluster.list_groups().await.unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["audit_processor_group", "outbox_publisher_group"]);

    let described = cluster
        .describe_groups(&["audit_processor_group".into()])
        .await
        .unwrap();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].state, GroupState::Empty);
    assert!(described[0].members.is_empty());
    assert!(described[0].error.is_none());

    let offsets = cluster
        .group_offsets("audit_processor_group")
        .await
        .unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!(offsets[&TopicPartition::new("audit_events", 0)], Ok(o(2)));

    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_100_000));
    let (lag, discovery) = group_lag(
        &cluster,
        "audit_processor_group",
        &clock,
        LagOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(discovery, Discovery::GroupOffsets);
    let rows: Vec<(String, Option<u64>)> = lag
        .partitions
        .iter()
        .map(|r| (r.topic_partition().to_string(), r.lag))
        .collect();
    // Both partitions of the committed topic are listed; the one without a commit is unknown.
    assert_eq!(
        rows,
        [
            ("audit_events/0".to_string(), Some(4)),
            ("audit_events/1".to_string(), None)
        ]
    );

    let all = all_groups_lag(&cluster, &clock, LagOptions::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].total_lag(), 4);
    assert_eq!(all[1].group, "outbox_publisher_group");
    assert_eq!(all[1].total_lag(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_offsets_by_spec_on_a_real_broker() {
    let tansu = start().await;
    tansu.create_topic("somabrain_events", 1).await.unwrap();
    let now = Timestamp::from_system_time(std::time::SystemTime::now()).as_millis();
    produce_one_by_one(&tansu, "somabrain_events", 0, 5, now - 10_000).await;
    let cluster = tansu.cluster().unwrap();
    let tp = TopicPartition::new("somabrain_events", 0);
    let answers = cluster
        .list_offsets(&[(tp.clone(), OffsetSpec::Latest)], Default::default())
        .await
        .unwrap();
    assert_eq!(answers[0].1.as_ref().unwrap().offset, Some(o(5)));
    let answers = cluster
        .list_offsets(&[(tp.clone(), OffsetSpec::Earliest)], Default::default())
        .await
        .unwrap();
    assert_eq!(answers[0].1.as_ref().unwrap().offset, Some(o(0)));
    // By time (librdkafka's mock cluster answers -1 to every by-time query, so it is asserted
    // here): records written after a pause are found by a time inside the pause, whichever of
    // create time or append time the broker indexes.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let pause = Timestamp::from_system_time(std::time::SystemTime::now());
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let producer = tansu.producer().unwrap();
    for i in 0..2 {
        producer
            .produce(
                "somabrain_events",
                [TestRecord::value(format!("late{i}")).to_partition(0)],
            )
            .await
            .unwrap();
    }
    let answers = cluster
        .list_offsets(
            &[(tp.clone(), OffsetSpec::AtTime(pause))],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(answers[0].1.as_ref().unwrap().offset, Some(o(5)));
    let metadata = cluster.metadata(&[]).await.unwrap();
    assert_eq!(metadata.brokers.len(), 1);
    assert_eq!(metadata.controller, Some(metadata.brokers[0].id));
    assert_eq!(
        metadata.topic("somabrain_events").unwrap().partitions.len(),
        1
    );
}
