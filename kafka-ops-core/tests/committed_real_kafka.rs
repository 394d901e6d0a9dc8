//! Committed offsets of many groups on a real Apache Kafka cluster: asked of each group's
//! coordinator many groups a request, they are exact, and reading them makes no client (with
//! its threads and connections) per group. Alone in its binary: the test counts the process's
//! threads.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::cluster::{GroupQuery, OffsetQuery};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::testkit::{RealKafka, process_threads, unique_name};
use kafka_ops_core::{Offset, TopicPartition};

/// The process's threads, from the kernel.
fn threads() -> usize {
    process_threads().expect("the kernel counts this process's threads")
}

#[tokio::test(flavor = "multi_thread")]
async fn many_groups_offsets_are_exact_and_need_no_client_per_group() {
    const GROUPS: usize = 30;
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("committed_many");
    kafka.create_topic(&topic, 3).await.unwrap();
    let tp = |p| TopicPartition::new(topic.as_str(), p);
    let groups: Vec<String> = (0..GROUPS)
        .map(|i| unique_name(&format!("committed_many_{i}")))
        .collect();
    // Group i commits i on partition 0 and 2i + 1 on partition 2; partition 1 never.
    let commits = groups.iter().enumerate().map(|(i, group)| {
        let i = i as i64;
        let offsets = [
            (tp(0), Offset::new(i).unwrap()),
            (tp(2), Offset::new(2 * i + 1).unwrap()),
        ];
        let kafka = &kafka;
        async move { kafka.commit(group, &offsets).await }
    });
    for committed in futures_util::future::join_all(commits).await {
        committed.unwrap();
    }

    // A client of its own, so no other test's groups are kept in it; its own threads are
    // made by a first call.
    let cluster = KafkaCluster::from_config(&kafka.client_config()).unwrap();
    let never = unique_name("committed_never");
    let first = cluster
        .groups_committed_offsets(std::slice::from_ref(&never), &[tp(0)])
        .await
        .unwrap();
    assert_eq!(first[0].1.as_ref().unwrap(), &vec![(tp(0), Ok(None))]);
    let before = threads();

    let partitions = [tp(0), tp(1), tp(2)];
    let answers = cluster
        .groups_committed_offsets(&groups, &partitions)
        .await
        .unwrap();
    let grown = threads().saturating_sub(before);
    assert_eq!(answers.len(), GROUPS);
    for (i, (group, answer)) in answers.into_iter().enumerate() {
        assert_eq!(group, groups[i]);
        let i = i as i64;
        assert_eq!(
            answer.unwrap(),
            vec![
                (tp(0), Ok(Some(Offset::new(i).unwrap()))),
                (tp(1), Ok(None)),
                (tp(2), Ok(Some(Offset::new(2 * i + 1).unwrap()))),
            ],
            "group {i}"
        );
    }
    // A consumer per group has six threads on this cluster (180 for these groups).
    assert!(
        grown < GROUPS,
        "{grown} threads more after reading {GROUPS} groups"
    );

    // Every offset a group committed, found through the metadata, the same way.
    let listed = cluster.groups_offsets(&groups[..3]).await.unwrap();
    for (i, (group, answer)) in listed.into_iter().enumerate() {
        assert_eq!(group, groups[i]);
        let i = i as i64;
        assert_eq!(
            answer.unwrap().into_iter().collect::<Vec<_>>(),
            [
                (tp(0), Ok(Offset::new(i).unwrap())),
                (tp(2), Ok(Offset::new(2 * i + 1).unwrap())),
            ]
        );
    }
    assert!(threads().saturating_sub(before) < GROUPS);
    kafka.delete_topics(&[topic.as_str()]).await.unwrap();
}
