//! Replay on a real Apache Kafka cluster, where records can be deleted under a running replay
//! (retention, a purge): the dead letters removed before the replay read them are counted, and
//! every one left is replayed — none skipped, none counted replayed without being written.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_ops_core::Offset;
use kafka_ops_core::testkit::{DeleteOnce, RealKafka, unique_name};
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
    kafka
        .produce_in_small_sets(&source, 0, 3_000)
        .await
        .unwrap();
    let config = kafka.small_prefetch_config();
    let deletion = DeleteOnce::new(&kafka, &source, &[(0, Offset::new(2_000).unwrap())]);
    let last = Arc::new(std::sync::Mutex::new(None));
    let progress = {
        let (deletion, last) = (deletion.clone(), last.clone());
        // Called on the replay's blocking thread.
        move |progress: &ReplayProgress| {
            *last.lock().unwrap() = Some((progress.scanned, progress.total));
            if progress.scanned >= 500 {
                deletion.delete().unwrap();
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
    assert!(deletion.happened(), "the log start moved during the replay");

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
