//! Purge on a real Apache Kafka cluster, where DeleteRecords works: the archive holds every
//! record that was deleted, byte for byte, and each partition's log start offset moves exactly
//! to the offsets that were archived — records written afterwards stay.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::testkit::{self, RealKafka, TestRecord, unique_name};
use kafka_ops_core::{IsolationLevel, OwnedRecord, TopicPartition};
use kafka_ops_dlq::purge::{purge, read_archive};

/// Records with everything that must survive the archive, and bulk.
fn awkward() -> Vec<TestRecord> {
    let mut records = testkit::awkward_records();
    records.extend(
        (0..300)
            .map(|i| TestRecord::keyed(format!("k{i}"), vec![i as u8; 5_000]).to_partition(i % 3)),
    );
    records
}

fn by_position(records: &mut [OwnedRecord]) {
    records.sort_by_key(|r| (r.partition, r.offset.get()));
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_deletes_exactly_what_it_archived() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("orders.dlq");
    kafka.create_topic(&topic, 3).await.unwrap();
    kafka.produce(&topic, awkward()).await.unwrap();
    let mut before = kafka.read_all(&topic).await.unwrap();
    by_position(&mut before);
    assert_eq!(before.len(), 304);

    let path = std::env::temp_dir().join(format!("{}.jsonl", unique_name("purge")));
    let report = purge(&kafka.client_config(), &topic, &path, &topic)
        .await
        .unwrap();
    let mut archived = read_archive(&path).unwrap();
    by_position(&mut archived);
    assert_eq!(archived, before, "the archive holds every deleted record");
    assert_eq!(report.archive.records, 304);

    // Each partition now starts where the archive ended.
    let archived_to: BTreeMap<i32, i64> = report
        .archive
        .ranges
        .iter()
        .map(|r| (r.partition, r.to))
        .collect();
    assert_eq!(report.low_watermarks, archived_to);
    let partitions: Vec<TopicPartition> = (0..3)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    let marks = kafka
        .cluster()
        .watermarks(&partitions, IsolationLevel::ReadUncommitted)
        .await
        .unwrap();
    let low: BTreeMap<i32, i64> = marks
        .iter()
        .map(|(tp, w)| (tp.partition, w.as_ref().unwrap().low.get()))
        .collect();
    assert_eq!(low, archived_to);
    assert!(kafka.read_all(&topic).await.unwrap().is_empty());

    // What arrives afterwards is not touched.
    kafka
        .produce(
            &topic,
            [TestRecord::keyed("late", "letter").to_partition(1)],
        )
        .await
        .unwrap();
    let after = kafka.read_all(&topic).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].offset.get(), archived_to[&1]);
    std::fs::remove_file(&path).unwrap();
}
