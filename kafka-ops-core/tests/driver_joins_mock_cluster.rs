//! Members joining and leaving a busy group on librdkafka's mock cluster: each member takes
//! every partition's records from that partition's own queue, in order, so none ever arrives
//! behind its partition's position (which would make the driver read the partition again), and
//! nothing is lost across the handovers; and a partition that leaves a paused member and comes
//! back after the member resumed is fetched again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle, DriverReport};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Error, Record, TopicPartition};

const PARTITIONS: i32 = 12;
const PER_PARTITION: i64 = 3_000;

type Seen = Arc<Mutex<Vec<(i32, i64)>>>;

fn member(
    kafka: &MockKafka,
    group: &str,
    topic: &str,
    seen: Seen,
) -> (
    DriverHandle,
    tokio::task::JoinHandle<Result<DriverReport, Error>>,
) {
    member_with(kafka.consumer_config(group), topic, seen)
}

fn member_with(
    config: rdkafka::ClientConfig,
    topic: &str,
    seen: Seen,
) -> (
    DriverHandle,
    tokio::task::JoinHandle<Result<DriverReport, Error>>,
) {
    let handler = handler_fn(move |record: &Record<'_>| {
        let seen = seen.clone();
        let key = (record.partition, record.offset.get());
        async move {
            seen.lock().unwrap().push(key);
            Ok(Outcome::Processed)
        }
    });
    let driver = Driver::new(config, DriverConfig::new([topic]), handler);
    let handle = driver.handle();
    (handle, tokio::spawn(driver.run()))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_joining_a_busy_group_take_each_partition_in_order_and_lose_nothing() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("payments");
    let group = unique_name("settlement");
    kafka.create_topic(&topic, PARTITIONS).unwrap();
    for p in 0..PARTITIONS {
        let records = (0..PER_PARTITION)
            .map(|i| TestRecord::keyed(format!("k{i}"), format!("{p}:{i}")).to_partition(p));
        kafka.produce(&topic, records).await.unwrap();
    }
    let seen: Seen = Arc::default();
    let count = |seen: &Seen| seen.lock().unwrap().len();
    let total = (i64::from(PARTITIONS) * PER_PARTITION) as usize;

    // Members join while the backlog is being consumed; each join moves partitions, with
    // librdkafka prefetching for the newcomer from the moment of its assignment.
    let mut members = Vec::new();
    for joined in 1..=3usize {
        members.push(member(&kafka, &group, &topic, seen.clone()));
        let before = count(&seen);
        wait_for("progress after a join", || count(&seen) > before + 500).await;
        let newest = &members[joined - 1].0;
        wait_for("the newest member's assignment", || {
            !newest.stats().assigned.is_empty()
        })
        .await;
    }
    // Two leave; the last one drains the rest.
    let mut reports = Vec::new();
    for (handle, run) in members.drain(..2) {
        handle.shutdown();
        reports.push(run.await.unwrap().unwrap());
    }
    let (last, last_run) = members.pop().unwrap();
    wait_for("every record", || {
        seen.lock().unwrap().iter().collect::<HashSet<_>>().len() == total
    })
    .await;
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    let cluster = kafka.cluster().unwrap();
    let end: BTreeMap<i32, Option<i64>> =
        (0..PARTITIONS).map(|p| (p, Some(PER_PARTITION))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed: BTreeMap<i32, Option<i64>> = cluster
            .committed_offsets(&group, &partitions)
            .await
            .unwrap()
            .into_iter()
            .map(|(tp, offset)| (tp.partition, offset.unwrap().map(|o| o.get())))
            .collect();
        if committed == end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never committed the end: {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last.shutdown();
    reports.push(last_run.await.unwrap().unwrap());

    for report in &reports {
        assert_eq!(
            report.stats.rereads, 0,
            "a record arrived behind its partition: {:?}",
            report.stats
        );
        assert!(report.stats.rebalances >= 1, "{:?}", report.stats);
    }
    // Within one member's run of a partition, offsets only go up (per-partition order).
    let seen = seen.lock().unwrap();
    let mut last_by_partition: BTreeMap<i32, i64> = BTreeMap::new();
    let mut backwards = 0;
    for &(partition, offset) in seen.iter() {
        if let Some(previous) = last_by_partition.insert(partition, offset)
            && offset <= previous
        {
            backwards += 1;
        }
    }
    // A handover redelivers what the old owner had not committed; those are the only repeats.
    assert!(
        backwards <= 2 * PARTITIONS as usize * 3,
        "{backwards} records went back within a partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_revoked_while_paused_is_fetched_when_it_comes_back_after_the_resume() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("invoices");
    let group = unique_name("billing");
    kafka.create_topic(&topic, 2).unwrap();
    let cooperative = || {
        let mut config = kafka.consumer_config(&group);
        config.set("partition.assignment.strategy", "cooperative-sticky");
        config
    };
    let seen: Seen = Arc::default();
    let (first, first_run) = member_with(cooperative(), &topic, seen.clone());
    wait_for("both partitions", || first.stats().assigned.len() == 2).await;
    first.pause();
    wait_for("the pause", || first.is_paused()).await;

    // A second member takes one partition away from the paused one; the first resumes (the
    // partition it still has), then the second leaves and its partition comes back.
    let (second, second_run) = member_with(cooperative(), &topic, seen.clone());
    wait_for("the handover", || {
        first.stats().assigned.len() == 1 && second.stats().assigned.len() == 1
    })
    .await;
    first.resume();
    wait_for("the resume", || !first.is_paused()).await;
    second.shutdown();
    second_run.await.unwrap().unwrap();
    wait_for("the partition's return", || {
        first.stats().assigned.len() == 2
    })
    .await;

    let records = (0..2).flat_map(|p| {
        (0..5).map(move |i| TestRecord::keyed(format!("k{i}"), format!("{p}:{i}")).to_partition(p))
    });
    kafka.produce(&topic, records).await.unwrap();
    wait_for("records of both partitions", || {
        let seen = seen.lock().unwrap();
        (0..2).all(|p| seen.iter().filter(|(partition, _)| *partition == p).count() == 5)
    })
    .await;
    first.shutdown();
    first_run.await.unwrap().unwrap();
}
