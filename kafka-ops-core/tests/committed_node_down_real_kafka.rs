//! Committed offsets while a node of the real Apache Kafka cluster is killed: groups whose
//! coordinator was on it are read again through their new coordinator, and no answer is ever
//! wrong in between — also while the client's cached metadata still names the dead node.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{GroupQuery, OffsetQuery};
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
    let expected = |i: usize| {
        vec![
            (tp(0), Ok(Some(Offset::new(i as i64 + 1).unwrap()))),
            (tp(1), Ok(None)),
        ]
    };
    for (i, group) in groups.iter().enumerate() {
        kafka
            .commit(group, &[(tp(0), Offset::new(i as i64 + 1).unwrap())])
            .await
            .unwrap();
    }
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
    let mut rounds = 0;
    loop {
        rounds += 1;
        let answers = cluster
            .groups_committed_offsets(&groups, &partitions)
            .await
            .unwrap();
        let mut exact = 0;
        for (i, (group, answer)) in answers.into_iter().enumerate() {
            // While the node's partitions move, a group may fail; it may never be wrong.
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
        "every group read exactly {:?} after node {node} was killed ({rounds} rounds; {on_node} groups were on it)",
        killed.elapsed(),
    );
    kafka.restore().await.unwrap();
    kafka.delete_topics(&[topic.as_str()]).await.unwrap();
}
