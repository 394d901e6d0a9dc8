//! Reading records' timestamps on a real Apache Kafka cluster while other partitions of the read
//! keep receiving records: a position whose only offset is a transaction marker ends the read,
//! records arriving on partitions already read do not keep it going, and the call keeps to its
//! bound.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::testkit::{
    DeleteOnce, RealKafka, TestRecord, TransactionalProducer, unique_name,
};
use kafka_ops_core::{Offset, TopicPartition};

#[tokio::test(flavor = "multi_thread")]
async fn a_marker_position_beside_a_busy_partition_ends_the_read_within_its_bound() {
    let kafka = Arc::new(RealKafka::shared().await.unwrap());
    let (ledger, busy) = (unique_name("reader_ledger"), unique_name("reader_busy"));
    kafka.create_topic(&ledger, 1).await.unwrap();
    kafka.create_topic(&busy, 1).await.unwrap();
    // ledger/0: one record at 0, its transaction's commit marker at 1.
    let (bootstrap, id, topic) = (
        kafka.bootstrap().to_string(),
        unique_name("reader_txn"),
        ledger.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let producer = TransactionalProducer::new(&bootstrap, &id).unwrap();
        producer.begin().unwrap();
        producer
            .send(&topic, [TestRecord::keyed("k", "v").to_partition(0)])
            .unwrap();
        producer.commit().unwrap();
    })
    .await
    .unwrap();
    kafka
        .produce(&busy, [TestRecord::keyed("k", "first").to_partition(0)])
        .await
        .unwrap();
    // busy/0 keeps receiving records for the whole read.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (writing, kafka, busy) = (writing.clone(), kafka.clone(), busy.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while writing.load(Ordering::SeqCst) {
                i += 1;
                kafka
                    .produce(
                        &busy,
                        [TestRecord::keyed("k", format!("{i}")).to_partition(0)],
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cluster = kafka.cluster().with_timeout(Duration::from_secs(3));
    let positions = [
        (
            TopicPartition::new(ledger.as_str(), 0),
            Offset::new(1).unwrap(),
        ),
        (TopicPartition::new(busy.as_str(), 0), Offset::ZERO),
    ];
    let started = Instant::now();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        cluster.record_timestamps(&positions),
    )
    .await;
    let took = started.elapsed();
    writing.store(false, Ordering::SeqCst);
    writer.await.unwrap();
    let answers = read
        .expect("the read ends while another partition keeps receiving records")
        .unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].1, None, "no record at or after the marker");
    assert!(answers[1].1.is_some(), "busy/0 has a record at 0");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// Retention (here `DeleteRecords`) moves two partitions' log starts past the reader while it
/// reads them: their next fetches are out of range. librdkafka's default answer, even with the
/// caller's `auto.offset.reset` set to `latest` as here, would jump to each partition's end and
/// skip every record left in between. The reader reports the removed offsets of each and reads
/// all that is left, once (an error librdkafka queued twice for one partition is not taken for
/// a truncated log).
#[tokio::test(flavor = "multi_thread")]
async fn records_removed_under_a_read_are_reported_and_the_rest_is_read() {
    use kafka_ops_core::kafka::{Range, RangeReader, RemovedOffsets, Step};

    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("reader_removed");
    kafka.create_topic(&topic, 2).await.unwrap();
    for partition in 0..2 {
        kafka
            .produce_in_small_sets(&topic, partition, 3_000)
            .await
            .unwrap();
    }
    let mut config = kafka.small_prefetch_config();
    config.set("auto.offset.reset", "latest");
    let before = [
        (0, Offset::new(2_000).unwrap()),
        (1, Offset::new(2_000).unwrap()),
    ];
    let deletion = DeleteOnce::new(&kafka, &topic, &before);
    let name = topic.clone();
    let (visited, removed) = tokio::task::spawn_blocking(move || {
        let reader = RangeReader::new(&config).unwrap();
        let ranges: Vec<Range> = (0..2)
            .map(|partition| Range {
                partition,
                start: 0,
                end: 3_000,
            })
            .collect();
        let (mut visited, mut removed): (Vec<(i32, i64)>, Vec<RemovedOffsets>) = (vec![], vec![]);
        reader
            .read(&name, &ranges, |step| {
                match step {
                    Step::Record(record) => {
                        visited.push((record.partition, record.offset.get()));
                        if record.partition == 0 && record.offset.get() == 500 {
                            deletion.delete().unwrap();
                        }
                    }
                    Step::Removed(offsets) => removed.push(offsets),
                    _ => {}
                }
                Ok::<(), kafka_ops_core::Error>(())
            })
            .unwrap();
        (visited, removed)
    })
    .await
    .unwrap();

    for partition in 0..2 {
        let offsets: Vec<i64> = visited
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        let cut = offsets
            .iter()
            .position(|o| *o >= 2_000)
            .expect("records after the cut were read");
        let (before, after) = offsets.split_at(cut);
        assert!(
            before.iter().copied().eq(0..before.len() as i64),
            "no gap before the cut on {partition}"
        );
        assert!(
            after.iter().copied().eq(2_000..3_000),
            "every record left on {partition} was read once"
        );
        let reported: Vec<&RemovedOffsets> = removed
            .iter()
            .filter(|r| r.partition == partition)
            .collect();
        if before.len() < 2_000 {
            assert_eq!(
                reported,
                [&RemovedOffsets {
                    topic: topic.clone(),
                    partition,
                    from: before.len() as i64,
                    to: 2_000,
                }]
            );
        } else {
            assert!(reported.is_empty(), "{reported:?}");
        }
    }
    // Partition 0 was read past its offset 500 (the deletion's moment; how far past depends on
    // what was fetched already), then had records removed under the read: its 1 000 records left
    // and fewer than 2 000 before them.
    let first = visited.iter().filter(|(p, _)| *p == 0).count();
    assert!(
        first > 1_500 && first < 3_000,
        "partition 0 had records removed under the read: {first} read"
    );
}
