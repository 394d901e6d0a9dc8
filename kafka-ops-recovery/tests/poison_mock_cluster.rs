//! Skipping a poison record on librdkafka's mock cluster: only a group standing right at the
//! record is moved past it; one below it (records before the poison unfinished) or past it
//! (moved on) is left where it is, and nothing is dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, Timestamp, TopicPartition};
use kafka_ops_recovery::poison::SkipPoisonRecord;
use kafka_ops_recovery::{Anomaly, RecoveryAction};
use serde_json::json;

fn poison_at(group: &str, topic: &str, offset: i64) -> Anomaly {
    Anomaly {
        key: "poison_record".into(),
        monitor: "billing".into(),
        message: "stopped".into(),
        checks: 1,
        first_seen: Timestamp::from_millis(0),
        details: json!({
            "group": group,
            "topic": topic,
            "partition": 0,
            "offset": offset,
            "class": "permanent",
            "error": "bad amount",
        }),
        extent: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_group_standing_at_the_poison_record_is_moved_past_it() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, group) = (unique_name("orders"), unique_name("billing"));
    kafka.create_topic(&topic, 1).unwrap();
    kafka.create_topic(&format!("{topic}.dlq"), 1).unwrap();
    let records =
        (0..10).map(|i| TestRecord::keyed(format!("k{i}"), format!("{i}")).to_partition(0));
    kafka.produce(&topic, records).await.unwrap();
    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let skip = SkipPoisonRecord::new(kafka.client_config(), sink);
    let tp = TopicPartition::new(topic.as_str(), 0);
    let commit = |at: i64| {
        let (kafka, group, tp) = (&kafka, &group, tp.clone());
        async move {
            kafka
                .commit(group, &[(tp, Offset::new(at).unwrap())])
                .await
                .unwrap();
        }
    };

    // Below the record (records 2..5 not finished) and past it: refused, nothing written.
    for at in [2, 7] {
        commit(at).await;
        let refused = skip
            .execute(&poison_at(&group, &topic, 5))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("not moved"), "{refused}");
        assert_eq!(
            kafka.committed(&group, &topic, 1).await.unwrap(),
            [Some(at)]
        );
    }
    assert!(
        kafka
            .read_all(&format!("{topic}.dlq"))
            .await
            .unwrap()
            .is_empty()
    );

    // At the record: dead-lettered and committed past it.
    commit(5).await;
    skip.execute(&poison_at(&group, &topic, 5)).await.unwrap();
    assert_eq!(kafka.committed(&group, &topic, 1).await.unwrap(), [Some(6)]);
    assert_eq!(
        kafka.read_all(&format!("{topic}.dlq")).await.unwrap().len(),
        1
    );

    // A group that never committed, stopped on the log's first record.
    let fresh = unique_name("fresh");
    skip.execute(&poison_at(&fresh, &topic, 0)).await.unwrap();
    assert_eq!(kafka.committed(&fresh, &topic, 1).await.unwrap(), [Some(1)]);
}
