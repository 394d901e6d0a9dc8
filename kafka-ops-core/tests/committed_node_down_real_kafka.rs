//! Committed offsets while a node of the real Apache Kafka cluster is killed: groups whose
//! coordinator was on it are read again through their new coordinator, and no answer is ever
//! wrong in between — also while the client's cached metadata still names the dead node.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{GroupQuery, OffsetQuery, PartitionResult};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::testkit::{RealKafka, TopicSpec, unique_name};
use kafka_ops_core::{Offset, TopicPartition};

#[tokio::test(flavor = "multi_thread")]
async fn offsets_stay_exact_while_a_coordinator_dies() {
    let kafka = RealKafka::exclusive().await.unwrap();
    let topic = unique_name("committed_node_down");
    kafka
        .create_topic_with(&topic, &TopicSpec::replicated(2))
        .await
        .unwrap();
    let tp = |p| TopicPartition::new(topic.as_str(), p);
    let partitions = [tp(0), tp(1)];
    let groups: Vec<String> = (0..24)
        .map(|i| unique_name(&format!("committed_node_down_{i}")))
        .collect();
    // Group i's offsets when committed from `base`: base + i on partition 0, none on 1.
    let committed_from = |base: i64| {
        move |i: usize| {
            vec![
                (tp(0), Ok(Some(Offset::new(base + i as i64).unwrap()))),
                (tp(1), Ok(None)),
            ]
        }
    };
    let expected = committed_from(1);
    commit_all(&kafka, &groups, &tp(0), 1).await;
    // A client of its own with a bound a probe would use; its metadata (and so the
    // coordinators it works out) is read here and kept for ten seconds.
    let cluster = KafkaCluster::from_config(&kafka.client_config())
        .unwrap()
        .with_timeout(Duration::from_secs(4));
    // The node that coordinates most of the groups (leaders stay where a restart left them).
    let mut per_node = [0usize; 4];
    for described in cluster.describe_groups(&groups).await.unwrap() {
        if let Some(node) = described.coordinator.and_then(|c| usize::try_from(c).ok()) {
            per_node[node.min(3)] += 1;
        }
    }
    let node = (1..=3u8).max_by_key(|n| per_node[usize::from(*n)]).unwrap();
    let on_node = per_node[usize::from(node)];
    assert!(on_node > 0, "no coordinators among the nodes: {per_node:?}");
    let answers = cluster
        .groups_committed_offsets(&groups, &partitions)
        .await
        .unwrap();
    for (i, (_, answer)) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), expected(i));
    }

    kafka.stop_broker(node).await.unwrap();
    let killed = Instant::now();
    // At once, while the cached metadata still names the dead node: right or failed.
    let exact = read_all(&cluster, &groups, &partitions, &expected, killed).await;
    eprintln!(
        "right after node {node} was killed ({on_node} of the groups were on it): {exact} of {} groups read",
        groups.len()
    );
    // New commits, each acknowledged by the group's coordinator now: from here on only the new
    // offsets are right.
    let moved = committed_from(100);
    commit_all(&kafka, &groups, &tp(0), 100).await;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let exact = read_all(&cluster, &groups, &partitions, &moved, killed).await;
        if exact == groups.len() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "{exact} of {} groups read after a minute",
            groups.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "every group's new offsets read {:?} after the kill ({rounds} rounds)",
        killed.elapsed(),
    );
    kafka.restore().await.unwrap();
    kafka.delete_topics(&[topic.as_str()]).await.unwrap();
}

/// Commits `base + i` on `tp` for group i, each acknowledged by the group's coordinator.
async fn commit_all(kafka: &RealKafka, groups: &[String], tp: &TopicPartition, base: i64) {
    for (i, group) in groups.iter().enumerate() {
        let offset = Offset::new(base + i as i64).unwrap();
        kafka.commit(group, &[(tp.clone(), offset)]).await.unwrap();
    }
}

/// Reads every group once; a group may fail (its coordinator moving), never answer other than
/// `expected`. Returns how many answered.
async fn read_all(
    cluster: &KafkaCluster,
    groups: &[String],
    partitions: &[TopicPartition],
    expected: &dyn Fn(usize) -> Vec<(TopicPartition, PartitionResult<Option<Offset>>)>,
    killed: Instant,
) -> usize {
    let answers = cluster
        .groups_committed_offsets(groups, partitions)
        .await
        .unwrap();
    let mut exact = 0;
    for (i, (group, answer)) in answers.into_iter().enumerate() {
        if let Ok(answer) = answer {
            assert_eq!(
                answer,
                expected(i),
                "{group}, {:?} after the kill",
                killed.elapsed()
            );
            exact += 1;
        }
    }
    exact
}
