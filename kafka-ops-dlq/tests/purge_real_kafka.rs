//! Purge on a real Apache Kafka cluster, where DeleteRecords works: the archive holds every
//! record that was deleted, byte for byte, and each partition's log start offset moves exactly
//! to the offsets that were archived — records written afterwards stay, records removed from
//! under the archive refuse the purge, and offsets holding no readable record (transaction
//! markers, aborted records) after the last one archived are neither archived nor deleted.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::testkit::{
    self, DeleteOnce, RealKafka, TestProducer, TestRecord, TransactionalProducer, unique_name,
};
use kafka_ops_core::{IsolationLevel, Offset, OwnedRecord, TopicPartition};
use kafka_ops_dlq::DlqError;
use kafka_ops_dlq::purge::{purge, purge_with_progress, read_archive};

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

async fn low_watermarks(kafka: &RealKafka, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let partitions: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    kafka
        .cluster()
        .watermarks(&partitions, IsolationLevel::ReadUncommitted)
        .await
        .unwrap()
        .iter()
        .map(|(tp, w)| (tp.partition, w.as_ref().unwrap().low.get()))
        .collect()
}

/// Retention deleting the segment an archive is reading, or another purge, moves a partition's
/// log start past the reader: its next fetch is out of range. librdkafka's default answer is to
/// jump to the end; the first dead letter written after the jump is past the range's end, so
/// the reader took the partition as read and purge deleted up to that end — records never
/// archived among them. Here, once 1 000 of 3 000 records are archived, the records before
/// offset 2 000 are deleted under the reader while dead letters keep arriving.
#[tokio::test(flavor = "multi_thread")]
async fn records_removed_under_the_archive_refuse_the_purge_and_nothing_unarchived_is_deleted() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("orders.dlq");
    kafka.create_topic(&topic, 1).await.unwrap();
    kafka.produce_in_small_sets(&topic, 0, 3_000).await.unwrap();
    let config = kafka.small_prefetch_config();

    // The dead-letter topic is live: a letter every 50 ms while the purge runs.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (writing, topic) = (writing.clone(), topic.clone());
        let producer = TestProducer::new(kafka.bootstrap()).unwrap();
        tokio::spawn(async move {
            while writing.load(Ordering::SeqCst) {
                let late = TestRecord::keyed("late", "letter").to_partition(0);
                producer.produce(&topic, [late]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let deletion = DeleteOnce::new(&kafka, &topic, &[(0, Offset::new(2_000).unwrap())]);
    let progress = {
        let deletion = deletion.clone();
        move |written: u64, _total: u64| {
            if written >= 1_000 {
                deletion.delete().unwrap();
            }
        }
    };
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique_name("purge-moved")));
    let result = purge_with_progress(&config, &topic, &path, &topic, progress).await;
    writing.store(false, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(
        deletion.happened(),
        "the log start moved during the archive"
    );

    // Records 2 000 to 2 999 were in the topic throughout and never archived: still there.
    let left: Vec<i64> = kafka
        .read_all(&topic)
        .await
        .unwrap()
        .iter()
        .map(|r| r.offset.get())
        .filter(|offset| *offset < 3_000)
        .collect();
    assert_eq!(
        (left.first(), left.last(), left.len()),
        (Some(&2_000), Some(&2_999), 1_000),
        "{result:?}"
    );
    assert_eq!(low_watermarks(&kafka, &topic, 1).await[&0], 2_000);
    match result {
        Err(DlqError::ArchiveIncomplete {
            topic: named,
            partitions,
            ..
        }) => {
            assert_eq!((named, partitions), (topic.clone(), vec![0]));
        }
        other => panic!("expected an incomplete archive, got {other:?}"),
    }
    assert!(!path.exists(), "an incomplete archive is not left behind");
    assert!(!path.with_extension("partial").exists());
}

/// A transactional dead-letter topic ends in a transaction marker, and aborted records are
/// never read: the archive stops short of the end offset without anything missing. Purge goes ahead,
/// deletes up to the last record archived, and an empty partition is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_transactional_topic_is_purged_up_to_its_last_archived_record() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("orders.dlq");
    kafka.create_topic(&topic, 2).await.unwrap();
    {
        let (bootstrap, topic) = (kafka.bootstrap().to_string(), topic.clone());
        tokio::task::spawn_blocking(move || {
            let producer = TransactionalProducer::new(&bootstrap, &unique_name("dlq-tx")).unwrap();
            let records = |from: usize| {
                (from..from + 5).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(0))
            };
            producer.begin().unwrap();
            producer.send(&topic, records(0)).unwrap();
            producer.commit().unwrap();
            producer.begin().unwrap();
            producer.send(&topic, records(5)).unwrap();
            producer.abort().unwrap();
        })
        .await
        .unwrap();
    }
    // Offsets 0-4 committed, 5 its marker, 6-10 aborted, 11 their marker.
    let mut before = kafka.read_all(&topic).await.unwrap();
    by_position(&mut before);
    assert_eq!(
        before.iter().map(|r| r.offset.get()).collect::<Vec<_>>(),
        (0..5).collect::<Vec<_>>()
    );

    let path = std::env::temp_dir().join(format!("{}.jsonl", unique_name("purge-tx")));
    let report = purge(&kafka.client_config(), &topic, &path, &topic)
        .await
        .unwrap();
    let mut archived = read_archive(&path).unwrap();
    by_position(&mut archived);
    assert_eq!(archived, before);
    let ranges: Vec<(i32, i64, i64)> = report
        .archive
        .ranges
        .iter()
        .map(|r| (r.partition, r.from, r.to))
        .collect();
    assert_eq!(ranges, vec![(0, 0, 5), (1, 0, 0)]);
    assert_eq!(report.low_watermarks, BTreeMap::from([(0, 5)]));
    assert_eq!(
        low_watermarks(&kafka, &topic, 2).await,
        BTreeMap::from([(0, 5), (1, 0)])
    );
    assert!(kafka.read_all(&topic).await.unwrap().is_empty());
    std::fs::remove_file(&path).unwrap();
}
