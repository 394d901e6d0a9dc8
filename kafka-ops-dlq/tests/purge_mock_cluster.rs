//! Archive and purge against librdkafka's mock cluster: an archive round-trips every byte,
//! purge wants confirmation, and a broker that cannot delete records gets a clear refusal
//! with the archive kept and nothing deleted.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use kafka_ops_core::testkit::{self, MockKafka, TestRecord, unique_name};
use kafka_ops_dlq::DlqError;
use kafka_ops_dlq::purge::{archive, purge, read_archive};

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.jsonl", unique_name(name)))
}

/// Records with everything that must survive: binary and non-UTF-8 bytes, a null key, a
/// tombstone, an empty value, null and repeated headers, explicit timestamps.
async fn awkward(kafka: &MockKafka, topic: &str) {
    kafka.create_topic(topic, 3).unwrap();
    let mut records = testkit::awkward_records();
    records.extend(
        (0..200)
            .map(|i| TestRecord::keyed(format!("k{i}"), vec![i as u8; 100]).to_partition(i % 3)),
    );
    kafka.produce(topic, records).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_round_trips_every_record_and_is_never_overwritten() {
    let kafka = MockKafka::start(1).unwrap();
    awkward(&kafka, "orders.dlq").await;
    let path = scratch("archive");
    let report = archive(&kafka.client_config(), "orders.dlq", &path, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.records, 204);
    assert_eq!(
        report.ranges.iter().map(|r| r.to - r.from).sum::<i64>(),
        204
    );
    let mut archived = read_archive(&path).unwrap();
    let mut topic = kafka.read_all("orders.dlq").await.unwrap();
    let order = |r: &kafka_ops_core::OwnedRecord| (r.partition, r.offset.get());
    archived.sort_by_key(order);
    topic.sort_by_key(order);
    assert_eq!(archived, topic);

    let again = archive(&kafka.client_config(), "orders.dlq", &path, |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(again, DlqError::Refused(_)), "{again}");
    std::fs::remove_file(&path).unwrap();

    let missing = archive(&kafka.client_config(), "nope", &path, |_, _| {})
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    assert!(!path.exists(), "a failed archive leaves no file");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_wants_the_topic_named_and_refuses_clearly_where_records_cannot_be_deleted() {
    let kafka = MockKafka::start(1).unwrap();
    awkward(&kafka, "orders.dlq").await;
    let path = scratch("purge");
    let unconfirmed = purge(&kafka.client_config(), "orders.dlq", &path, "yes")
        .await
        .unwrap_err();
    assert!(matches!(unconfirmed, DlqError::Refused(_)), "{unconfirmed}");
    assert!(!path.exists(), "nothing is read before confirmation");

    // The mock cluster has no DeleteRecords: archived, then refused, nothing deleted.
    let refused = purge(&kafka.client_config(), "orders.dlq", &path, "orders.dlq")
        .await
        .unwrap_err();
    assert!(matches!(refused, DlqError::Unsupported { .. }), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("nothing was deleted") && message.contains(&path.display().to_string()),
        "{message}"
    );
    assert_eq!(read_archive(&path).unwrap().len(), 204);
    assert_eq!(kafka.read_all("orders.dlq").await.unwrap().len(), 204);
    std::fs::remove_file(&path).unwrap();
}
