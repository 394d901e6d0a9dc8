//! Skipping a poison record on librdkafka's mock cluster: only a group standing right at the
//! record is moved past it; one below it (records before the poison unfinished) or past it
//! (moved on) is left where it is, and nothing is dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, Timestamp, TopicPartition};
use kafka_ops_recovery::actions::RestartFuture;
use kafka_ops_recovery::poison::SkipPoisonRecord;
use kafka_ops_recovery::{Anomaly, RecoveryAction, RecoveryError};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
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

/// A topic of ten records with its dead-letter topic, and a group standing at record 5.
async fn stopped_at_five(kafka: &MockKafka) -> (String, String) {
    let (topic, group) = (unique_name("orders"), unique_name("billing"));
    kafka.create_topic(&topic, 1).unwrap();
    kafka.create_topic(&format!("{topic}.dlq"), 1).unwrap();
    let records =
        (0..10).map(|i| TestRecord::keyed(format!("k{i}"), format!("{i}")).to_partition(0));
    kafka.produce(&topic, records).await.unwrap();
    kafka
        .commit(
            &group,
            &[(
                TopicPartition::new(topic.as_str(), 0),
                Offset::new(5).unwrap(),
            )],
        )
        .await
        .unwrap();
    (topic, group)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_failed_commit_does_not_dead_letter_the_record_again() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, group) = stopped_at_five(&kafka).await;
    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let skip = SkipPoisonRecord::new(kafka.client_config(), sink);

    // The dead letter is written, then the commit is refused.
    kafka.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
    );
    let refused = skip
        .execute(&poison_at(&group, &topic, 5))
        .await
        .unwrap_err();
    assert!(
        refused.describe().contains("GroupAuthorizationFailed"),
        "{}",
        refused.describe()
    );
    assert_eq!(kafka.committed(&group, &topic, 1).await.unwrap(), [Some(5)]);
    assert_eq!(
        kafka.read_all(&format!("{topic}.dlq")).await.unwrap().len(),
        1
    );

    // The engine's retry: the group still stands at the record, whose dead letter is written.
    let done = skip.execute(&poison_at(&group, &topic, 5)).await.unwrap();
    assert!(done.contains("dead-lettered to"), "{done}");
    assert_eq!(kafka.committed(&group, &topic, 1).await.unwrap(), [Some(6)]);
    assert_eq!(
        kafka.read_all(&format!("{topic}.dlq")).await.unwrap().len(),
        1,
        "one dead letter for one record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_failed_restart_restarts_the_consumer() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, group) = stopped_at_five(&kafka).await;
    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let restarts = Arc::new(AtomicU32::new(0));
    let hook = {
        let restarts = restarts.clone();
        move || -> RestartFuture {
            let n = restarts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    Err(RecoveryError::Config("the driver is still stopping".into()))
                } else {
                    Ok(())
                }
            })
        }
    };
    let skip = SkipPoisonRecord::new(kafka.client_config(), sink).then_restart(Arc::new(hook));

    // Dead-lettered and committed past, then the restart fails.
    let failed = skip
        .execute(&poison_at(&group, &topic, 5))
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("still stopping"), "{failed}");
    assert_eq!(kafka.committed(&group, &topic, 1).await.unwrap(), [Some(6)]);

    // The engine's retry: the group already stands past the record this action skipped; only
    // the restart is left to do.
    let done = skip.execute(&poison_at(&group, &topic, 5)).await.unwrap();
    assert!(done.contains("consumer restarted"), "{done}");
    assert_eq!(restarts.load(Ordering::SeqCst), 2);
    assert_eq!(kafka.committed(&group, &topic, 1).await.unwrap(), [Some(6)]);
    assert_eq!(
        kafka.read_all(&format!("{topic}.dlq")).await.unwrap().len(),
        1
    );

    // Another action never skipped that record: a group past it is not its business.
    let other = SkipPoisonRecord::new(
        kafka.client_config(),
        Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap()),
    );
    let refused = other
        .execute(&poison_at(&group, &topic, 5))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not moved"), "{refused}");
}
