//! Reading records' timestamps on a real Apache Kafka cluster while other partitions of the read
//! keep receiving records: a position whose only offset is a transaction marker ends the read,
//! records arriving on partitions already read do not keep it going, and the call keeps to its
//! bound.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::testkit::{RealKafka, TestRecord, TransactionalProducer, unique_name};
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
