//! Replay on a real Apache Kafka cluster, where records can be deleted under a running replay
//! (retention, a purge): the dead letters removed before the replay read them are counted, and
//! every one left is replayed — none skipped, none counted replayed without being written.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kafka_ops_core::Offset;
use kafka_ops_core::testkit::{RealKafka, TestRecord, unique_name};
use kafka_ops_dlq::{Destination, Replay, ReplayProgress};

/// Once 500 of 3 000 dead letters are read, those before offset 2 000 are deleted. librdkafka's
/// default answer to the out-of-range fetch jumps to the partition's end: the replay then waited
/// there until it gave up, or, with dead letters still arriving, took the first new one as its
/// end and saved the 1 000 left unread as replayed.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_removed_under_a_replay_are_counted_and_the_rest_replayed() {
    let kafka = RealKafka::shared().await.unwrap();
    let (source, destination) = (unique_name("orders.dlq"), unique_name("orders.repair"));
    kafka.create_topic(&source, 1).await.unwrap();
    kafka.create_topic(&destination, 1).await.unwrap();
    // Message sets of 20 records of 1 kB: a fetch returns at least one whole set, so small sets
    // keep the reader's prefetch (below) to a few dozen records ahead of the replay.
    for set in 0..150 {
        kafka
            .produce(
                &source,
                (0..20).map(|i| TestRecord::keyed(format!("k{}", set * 20 + i), vec![b'x'; 1_000])),
            )
            .await
            .unwrap();
    }
    let mut config = kafka.client_config();
    config
        .set("queued.min.messages", "1")
        .set("max.partition.fetch.bytes", "1024");
    let moved = Arc::new(AtomicBool::new(false));
    let last = Arc::new(std::sync::Mutex::new(None));
    let progress = {
        let (moved, cluster, topic) = (moved.clone(), kafka.cluster(), source.clone());
        let last = last.clone();
        let runtime = tokio::runtime::Handle::current();
        // Called on the replay's blocking thread, which may wait on the runtime.
        move |progress: &ReplayProgress| {
            *last.lock().unwrap() = Some((progress.scanned, progress.total));
            if progress.scanned >= 500 && !moved.swap(true, Ordering::SeqCst) {
                let before = [(0, Offset::new(2_000).unwrap())];
                runtime
                    .block_on(cluster.delete_records(&topic, &before))
                    .unwrap();
            }
        }
    };
    let report = Replay::new(&source, unique_name("removed"))
        .to(Destination::Topic(destination.clone()))
        .allow(&destination)
        .batch_size(50)
        .on_progress(progress)
        .run(&config)
        .await
        .unwrap();
    assert!(
        moved.load(Ordering::SeqCst),
        "the log start moved during the replay"
    );

    let written: BTreeSet<String> = kafka
        .read_all(&destination)
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap().into_owned()).unwrap())
        .collect();
    assert_eq!(written.len() as u64, report.replayed, "{report:?}");
    assert!(report.removed_unread > 0, "{report:?}");
    assert_eq!(report.replayed + report.removed_unread, 3_000, "{report:?}");
    let left: BTreeSet<String> = (2_000..3_000).map(|i| format!("k{i}")).collect();
    assert!(
        written.is_superset(&left),
        "every dead letter left was replayed"
    );
    // Progress ends at its total: the removed dead letters no longer count as still to read.
    let (scanned, total) = last.lock().unwrap().unwrap();
    assert_eq!(scanned, total);
}
