//! The admin and lag paths on a real Apache Kafka cluster (3 KRaft nodes), each number checked
//! exactly and against Kafka's own `kafka-consumer-groups --describe`: group listing and
//! description, a group's committed offsets, lag for one group and for all groups, offsets by
//! time, the last stable offset under an open transaction (then committed, or aborted), the
//! transaction marker, and time lag from the record timestamp at the committed offset.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{
    Discovery, GroupQuery, GroupState, LagOptions, MetadataQuery, OffsetQuery, all_groups_lag,
    fill_time_lag_from_records, group_lag,
};
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::lag::GroupLag;
use kafka_ops_core::testkit::{
    RealKafka, Subscriber, TestRecord, ToolRow, TransactionalProducer, unique_name,
};
use kafka_ops_core::{
    IsolationLevel, ManualClock, Offset, OffsetSpec, Record, Timestamp, TopicPartition,
};

fn o(v: i64) -> Offset {
    Offset::new(v).unwrap()
}

fn now_millis() -> i64 {
    Timestamp::from_system_time(std::time::SystemTime::now()).as_millis()
}

/// `count` keyed records on `partition`, timestamps one second apart from `base_time`.
fn records(partition: i32, count: i64, base_time: i64) -> Vec<TestRecord> {
    (0..count)
        .map(|i| {
            TestRecord::keyed(format!("k{i}"), format!("v{partition}-{i}"))
                .to_partition(partition)
                .at(base_time + i * 1_000)
        })
        .collect()
}

/// A row as Kafka's tool prints it: partition, committed offset, end offset, lag.
type Row = (TopicPartition, Option<i64>, Option<i64>, Option<i64>);

/// Our lag rows as Kafka's tool prints them.
fn as_tool_rows(lag: &GroupLag) -> Vec<Row> {
    lag.partitions
        .iter()
        .map(|row| {
            (
                row.topic_partition(),
                row.committed.map(Offset::get),
                row.end_offset.map(Offset::get),
                row.lag.map(|l| i64::try_from(l).unwrap()),
            )
        })
        .collect()
}

fn tool_rows(rows: &[ToolRow]) -> Vec<Row> {
    rows.iter()
        .map(|r| (r.partition.clone(), r.committed, r.end, r.lag))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_offsets_and_lag_equal_kafkas_own_tool() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("audit_events");
    let idle_group = unique_name("audit_processor_group");
    let live_group = unique_name("outbox_publisher_group");
    kafka.create_topic(&topic, 3).await.unwrap();
    let base = now_millis() - 60_000;
    for (partition, count) in [(0, 10), (1, 5), (2, 3)] {
        kafka
            .produce(&topic, records(partition, count, base))
            .await
            .unwrap();
    }
    // Partition 1 never committed: Kafka's tool prints "-", we report none.
    kafka
        .commit(
            &idle_group,
            &[
                (TopicPartition::new(topic.as_str(), 0), o(4)),
                (TopicPartition::new(topic.as_str(), 2), o(3)),
            ],
        )
        .await
        .unwrap();
    let cluster = kafka.cluster();

    let offsets = kafka.group_offsets(&idle_group).await.unwrap();
    assert_eq!(
        offsets,
        BTreeMap::from([
            (TopicPartition::new(topic.as_str(), 0), 4),
            (TopicPartition::new(topic.as_str(), 2), 3),
        ])
    );

    let clock = ManualClock::at(Timestamp::from_millis(base + 100_000));
    let (lag, discovery) = group_lag(&cluster, &idle_group, &clock, LagOptions::default())
        .await
        .unwrap();
    assert_eq!(discovery, Discovery::GroupOffsets);
    let ours = as_tool_rows(&lag);
    let tp = |p| TopicPartition::new(topic.as_str(), p);
    assert_eq!(
        ours,
        [
            (tp(0), Some(4), Some(10), Some(6)),
            (tp(1), None, Some(5), None),
            (tp(2), Some(3), Some(3), Some(0)),
        ]
    );
    assert_eq!(lag.total_lag(), 6);
    // Without members, Kafka's tool lists only the committed partitions; we also list the
    // topic's partition without a commit (as unknown).
    let theirs = kafka
        .describe_group_with_kafka_tool(&idle_group)
        .await
        .unwrap();
    let committed_rows: Vec<_> = ours.iter().filter(|r| r.1.is_some()).cloned().collect();
    assert_eq!(
        committed_rows,
        tool_rows(&theirs),
        "kafka-consumer-groups disagrees"
    );

    // A group with a member: described as stable, with its assignment.
    let member = Subscriber::join(&kafka.consumer_config(&live_group), &topic).unwrap();
    let described = wait_for_description(&cluster, &live_group, |d| {
        d.state == GroupState::Stable && d.members.len() == 1 && d.members[0].assignment.len() == 3
    })
    .await;
    assert_eq!(described.members[0].assignment.len(), 3);
    assert!(described.coordinator.is_some_and(|c| (1..=3).contains(&c)));
    assert!(described.error.is_none());
    let idle = cluster
        .describe_groups(std::slice::from_ref(&idle_group))
        .await
        .unwrap();
    assert_eq!(idle[0].state, GroupState::Empty);
    assert!(idle[0].members.is_empty());

    let listed = cluster.list_groups().await.unwrap();
    let ours_listed: BTreeMap<&str, GroupState> = listed
        .iter()
        .filter(|g| g.group == idle_group || g.group == live_group)
        .map(|g| (g.group.as_str(), g.state))
        .collect();
    assert_eq!(
        ours_listed,
        BTreeMap::from([
            (idle_group.as_str(), GroupState::Empty),
            (live_group.as_str(), GroupState::Stable)
        ])
    );

    // A member that has not committed: the tool prints "-", we report no committed offset
    // and no lag for each partition it owns.
    let (live_lag, _) = group_lag(&cluster, &live_group, &clock, LagOptions::default())
        .await
        .unwrap();
    let live_tool = kafka
        .describe_group_with_kafka_tool(&live_group)
        .await
        .unwrap();
    assert_eq!(as_tool_rows(&live_lag), tool_rows(&live_tool));
    assert_eq!(
        as_tool_rows(&live_lag),
        [
            (tp(0), None, Some(10), None),
            (tp(1), None, Some(5), None),
            (tp(2), None, Some(3), None),
        ]
    );
    assert!(live_tool.iter().all(|r| r.consumer_id.is_some()));

    // Every group: ours among them with their exact totals.
    let all = all_groups_lag(&cluster, &clock, LagOptions::default())
        .await
        .unwrap();
    let totals: BTreeMap<&str, (u64, usize)> = all
        .groups
        .iter()
        .filter(|g| g.group == idle_group || g.group == live_group)
        .map(|g| (g.group.as_str(), (g.total_lag(), g.partitions.len())))
        .collect();
    assert_eq!(
        totals,
        BTreeMap::from([(idle_group.as_str(), (6, 3)), (live_group.as_str(), (0, 3))])
    );
    assert!(
        all.failed
            .iter()
            .all(|f| f.group != idle_group && f.group != live_group),
        "{:?}",
        all.failed
    );
    // The one-pass rows are the single-group rows, and what Kafka's tool prints.
    let in_pass = |name: &str| all.groups.iter().find(|g| g.group == name).unwrap();
    assert_eq!(as_tool_rows(in_pass(&idle_group)), ours);
    assert_eq!(as_tool_rows(in_pass(&live_group)), tool_rows(&live_tool));
    drop(member);
}

/// Twenty groups, each described by asking the broker that leads its partition of
/// `__consumer_offsets` directly: a wrong broker would answer NOT_COORDINATOR (with three
/// brokers, twenty right guesses by chance are one in 3^20). Their committed offsets are read
/// through a consumer of each group and equal what was committed.
#[tokio::test(flavor = "multi_thread")]
async fn groups_are_described_by_their_coordinators_and_their_offsets_read_exactly() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("ledger_entries");
    kafka.create_topic(&topic, 2).await.unwrap();
    kafka
        .produce(&topic, records(0, 5, now_millis()))
        .await
        .unwrap();
    let groups: Vec<String> = (0..20)
        .map(|i| unique_name(&format!("reconciler_{i}")))
        .collect();
    for (i, group) in groups.iter().enumerate() {
        kafka
            .commit(
                group,
                &[(TopicPartition::new(topic.as_str(), 0), o(i as i64 % 6))],
            )
            .await
            .unwrap();
    }
    let cluster = kafka.cluster();
    let described = cluster.describe_groups(&groups).await.unwrap();
    assert_eq!(described.len(), groups.len());
    for description in &described {
        assert!(description.error.is_none(), "{description:?}");
        assert_eq!(description.state, GroupState::Empty, "{description:?}");
        assert!(
            description
                .coordinator
                .is_some_and(|c| (1..=3).contains(&c))
        );
    }
    let partitions = [
        TopicPartition::new(topic.as_str(), 0),
        TopicPartition::new(topic.as_str(), 1),
    ];
    let committed = cluster
        .groups_committed_offsets(&groups, &partitions)
        .await
        .unwrap();
    for (i, (group, answer)) in committed.into_iter().enumerate() {
        assert_eq!(group, groups[i]);
        let answer = answer.unwrap();
        assert_eq!(
            answer[0],
            (partitions[0].clone(), Ok(Some(o(i as i64 % 6))))
        );
        assert_eq!(answer[1], (partitions[1].clone(), Ok(None)));
    }
    let listed = cluster.groups_offsets(&groups[..3]).await.unwrap();
    for (i, (group, answer)) in listed.into_iter().enumerate() {
        assert_eq!(group, groups[i]);
        assert_eq!(
            answer.unwrap().into_iter().collect::<Vec<_>>(),
            [(partitions[0].clone(), Ok(o(i as i64 % 6)))]
        );
    }
}

async fn wait_for_description(
    cluster: &kafka_ops_core::kafka::KafkaCluster,
    group: &str,
    done: impl Fn(&kafka_ops_core::cluster::GroupDescription) -> bool,
) -> kafka_ops_core::cluster::GroupDescription {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = cluster.describe_groups(&[group.to_string()]).await.unwrap();
        if done(&described[0]) {
            return described.into_iter().next().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "group never got there: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_by_time_earliest_and_latest_are_exact() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("somabrain_events");
    kafka.create_topic(&topic, 1).await.unwrap();
    let base = now_millis() - 100_000;
    kafka.produce(&topic, records(0, 5, base)).await.unwrap();
    let cluster = kafka.cluster();
    let tp = TopicPartition::new(topic.as_str(), 0);
    let ask = |spec| {
        let cluster = cluster.clone();
        let tp = tp.clone();
        async move {
            cluster
                .list_offsets(&[(tp, spec)], IsolationLevel::ReadUncommitted)
                .await
                .unwrap()[0]
                .1
                .clone()
                .unwrap()
                .offset
        }
    };
    assert_eq!(ask(OffsetSpec::Earliest).await, Some(o(0)));
    assert_eq!(ask(OffsetSpec::Latest).await, Some(o(5)));
    // The first record at or after a time: exactly on a record, between two, before all.
    assert_eq!(
        ask(OffsetSpec::AtTime(Timestamp::from_millis(base + 2_000))).await,
        Some(o(2))
    );
    assert_eq!(
        ask(OffsetSpec::AtTime(Timestamp::from_millis(base + 2_500))).await,
        Some(o(3))
    );
    assert_eq!(
        ask(OffsetSpec::AtTime(Timestamp::from_millis(base - 1))).await,
        Some(o(0))
    );
    // After the last record there is none (Kafka answers -1).
    assert_eq!(
        ask(OffsetSpec::AtTime(Timestamp::from_millis(base + 60_000))).await,
        None
    );
    // Several specs for one partition in one call: each answered by its own (ListOffsets
    // takes one per partition, so they go in rounds).
    let specs = [
        OffsetSpec::Latest,
        OffsetSpec::Earliest,
        OffsetSpec::AtTime(Timestamp::from_millis(base + 2_500)),
        OffsetSpec::Earliest,
    ];
    let several: Vec<Option<Offset>> = cluster
        .list_offsets(
            &specs.map(|spec| (tp.clone(), spec)),
            IsolationLevel::ReadUncommitted,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(_, answer)| answer.unwrap().offset)
        .collect();
    assert_eq!(several, [Some(o(5)), Some(o(0)), Some(o(3))]);
    let metadata = cluster
        .metadata(std::slice::from_ref(&topic))
        .await
        .unwrap();
    assert_eq!(metadata.brokers.len(), 3);
    // The answer names a controller (KRaft: some live broker), read within the call's bound.
    assert!(
        metadata
            .controller
            .is_some_and(|id| metadata.brokers.iter().any(|b| b.id == id)),
        "{metadata:?}"
    );
    let partition = &metadata.topic(&topic).unwrap().partitions[0];
    assert_eq!(partition.replicas.len(), 3);
    assert_eq!(partition.isr.len(), 3);
}

/// Large calls send half their ListOffsets requests through a second admin handle: each
/// partition still gets its own low and high watermark, the same as through one handle.
#[tokio::test(flavor = "multi_thread")]
async fn watermarks_through_one_handle_or_two_are_exact() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("split_watermarks");
    kafka.create_topic(&topic, 6).await.unwrap();
    let base = now_millis();
    for p in 0..6 {
        kafka
            .produce(&topic, records(p, 4 + i64::from(p), base))
            .await
            .unwrap();
    }
    // A client of its own: the shared one may have made its second handle in another test.
    let cluster = kafka_ops_core::kafka::KafkaCluster::from_config(kafka.cluster().config())
        .unwrap()
        .with_timeout(kafka.cluster().timeout());
    // Partition p starts at offset p/2 after the deletion: lows differ, so a low and a high
    // answered for the wrong partition or the wrong spec cannot pass.
    let before: Vec<(i32, Offset)> = (1..6).map(|p| (p, o(i64::from(p / 2)))).collect();
    cluster.delete_records(&topic, &before).await.unwrap();
    let partitions: Vec<TopicPartition> = (0..6)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    // One batch per spec (one handle), then one per partition and spec: 12 batches, split
    // over two handles.
    for (batch_size, handles) in [(128, 1), (1, 2)] {
        let marks = cluster
            .clone()
            .with_batch_size(batch_size)
            .watermarks(&partitions, IsolationLevel::ReadUncommitted)
            .await
            .unwrap();
        let got: Vec<(i32, i64, i64)> = marks
            .iter()
            .map(|(tp, answer)| {
                let marks = answer.as_ref().unwrap();
                (tp.partition, marks.low.get(), marks.high.get())
            })
            .collect();
        let expected: Vec<(i32, i64, i64)> = (0..6)
            .map(|p| (p, i64::from(p / 2), 4 + i64::from(p)))
            .collect();
        assert_eq!(got, expected, "batch size {batch_size}");
        assert_eq!(cluster.admin_clients(), handles, "batch size {batch_size}");
    }
}

/// Record `i` of the transaction tests, on partition 0.
fn numbered(i: i64) -> TestRecord {
    TestRecord::keyed(format!("k{i}"), format!("v{i}")).to_partition(0)
}

/// A producer with a transactional id of its own, its transactions initialized (which blocks,
/// so off the runtime's threads).
async fn transactional_producer(kafka: &RealKafka, prefix: &str) -> Arc<TransactionalProducer> {
    let (bootstrap, txn_id) = (kafka.bootstrap().to_string(), unique_name(prefix));
    tokio::task::spawn_blocking(move || TransactionalProducer::new(&bootstrap, &txn_id).unwrap())
        .await
        .map(Arc::new)
        .unwrap()
}

/// Runs `work` with `producer` off the runtime's threads (its calls block until the brokers
/// answer).
async fn with_producer(
    producer: &Arc<TransactionalProducer>,
    work: impl FnOnce(&TransactionalProducer) + Send + 'static,
) {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || work(&producer))
        .await
        .unwrap();
}

/// `group`'s lag read uncommitted (to the high watermark) and committed (to the last stable
/// offset).
async fn lag_both_ways(kafka: &RealKafka, group: &str) -> (GroupLag, GroupLag) {
    let (cluster, clock) = (kafka.cluster(), ManualClock::new());
    let lag_with = |isolation| {
        let (cluster, clock) = (&cluster, &clock);
        async move {
            group_lag(cluster, group, clock, LagOptions { isolation })
                .await
                .unwrap()
                .0
        }
    };
    (
        lag_with(IsolationLevel::ReadUncommitted).await,
        lag_with(IsolationLevel::ReadCommitted).await,
    )
}

/// [`lag_both_ways`] once both ends reached `end`: a transaction's coordinator answers the
/// commit or abort before every partition has its marker, so the ends move a moment later.
async fn lag_both_ways_at(kafka: &RealKafka, group: &str, end: Offset) -> (GroupLag, GroupLag) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (uncommitted, committed) = lag_both_ways(kafka, group).await;
        let ends = (
            uncommitted.partitions[0].end_offset,
            committed.partitions[0].end_offset,
        );
        if ends == (Some(end), Some(end)) {
            return (uncommitted, committed);
        }
        assert!(
            Instant::now() < deadline,
            "the ends {ends:?} never reached {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_committed_lag_leaves_out_exactly_the_open_transaction() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("ledger");
    let group = unique_name("ledger_reader");
    kafka.create_topic(&topic, 1).await.unwrap();
    let producer = transactional_producer(&kafka, "ledger-writer").await;
    let topic_name = topic.clone();
    with_producer(&producer, move |writer| {
        // Offsets 0..=2 committed (marker at 3), then 4..=7 left open.
        writer.begin().unwrap();
        writer.send(&topic_name, (0..3).map(numbered)).unwrap();
        writer.commit().unwrap();
        writer.begin().unwrap();
        writer.send(&topic_name, (3..7).map(numbered)).unwrap();
    })
    .await;
    kafka
        .commit(&group, &[(TopicPartition::new(topic.as_str(), 0), o(1))])
        .await
        .unwrap();
    let (uncommitted, committed) = lag_both_ways(&kafka, &group).await;
    // High watermark 8 (three records, a marker, four open records); last stable offset 4.
    assert_eq!(uncommitted.partitions[0].end_offset, Some(o(8)));
    assert_eq!(committed.partitions[0].end_offset, Some(o(4)));
    assert_eq!(uncommitted.total_lag() - committed.total_lag(), 4);
    assert_eq!((uncommitted.total_lag(), committed.total_lag()), (7, 3));
    // Kafka's tool measures against the high watermark.
    let theirs = kafka.describe_group_with_kafka_tool(&group).await.unwrap();
    assert_eq!(as_tool_rows(&uncommitted), tool_rows(&theirs));

    // Once the transaction commits, both ends meet after its marker.
    with_producer(&producer, |closer| closer.commit().unwrap()).await;
    let (uncommitted, committed) = lag_both_ways_at(&kafka, &group, o(9)).await;
    assert_eq!(uncommitted.total_lag(), committed.total_lag());
}

#[tokio::test(flavor = "multi_thread")]
async fn read_committed_uses_the_last_stable_offset() {
    // The mock cluster answers ListOffsets with the high watermark whatever the isolation
    // level, so only a real broker with a transaction left open can tell the two ends apart.
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("lso");
    let group = unique_name("lso_reader");
    kafka.create_topic(&topic, 1).await.unwrap();
    // Offsets 0..=2 plain records, then 3..=7 in a transaction left open.
    kafka.produce(&topic, (0..3).map(numbered)).await.unwrap();
    let producer = transactional_producer(&kafka, "lso-writer").await;
    let topic_name = topic.clone();
    with_producer(&producer, move |writer| {
        writer.begin().unwrap();
        writer.send(&topic_name, (3..8).map(numbered)).unwrap();
    })
    .await;
    kafka
        .commit(&group, &[(TopicPartition::new(topic.as_str(), 0), o(1))])
        .await
        .unwrap();
    let (uncommitted, committed) = lag_both_ways(&kafka, &group).await;
    assert_eq!(uncommitted.partitions[0].end_offset, Some(o(8)));
    assert_eq!(committed.partitions[0].end_offset, Some(o(3)), "the LSO");
    assert_eq!(
        uncommitted.total_lag() - committed.total_lag(),
        5,
        "exactly the open records"
    );
    assert_eq!((uncommitted.total_lag(), committed.total_lag()), (7, 2));

    // Aborted, the transaction is closed by its marker at 8: both ends meet after it, and the
    // five aborted records count as lag on both (offsets a consumer still has to pass).
    with_producer(&producer, |writer| writer.abort().unwrap()).await;
    let (uncommitted, committed) = lag_both_ways_at(&kafka, &group, o(9)).await;
    assert_eq!((uncommitted.total_lag(), committed.total_lag()), (8, 8));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_driver_commits_past_a_transaction_marker_so_no_lag_of_one_remains() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("payments");
    let group = unique_name("payments_reader");
    kafka.create_topic(&topic, 2).await.unwrap();
    let bootstrap = kafka.bootstrap().to_string();
    let txn_id = unique_name("payments-writer");
    let topic_name = topic.clone();
    tokio::task::spawn_blocking(move || {
        let producer = TransactionalProducer::new(&bootstrap, &txn_id).unwrap();
        for batch in 0..2 {
            producer.begin().unwrap();
            producer
                .send(
                    &topic_name,
                    (0..5).map(|i| {
                        TestRecord::keyed(format!("k{batch}-{i}"), "paid").to_partition(i % 2)
                    }),
                )
                .unwrap();
            producer.commit().unwrap();
        }
    })
    .await
    .unwrap();
    // Partition 0: 3 + 3 records and two markers (end 8); partition 1: 2 + 2 and two markers.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let handler = handler_fn(move |_record: &Record<'_>| {
        counter.fetch_add(1, AtomicOrdering::SeqCst);
        async { Ok(Outcome::Processed) }
    });
    let mut consumer = kafka.consumer_config(&group);
    consumer.set("isolation.level", "read_committed");
    let mut config = DriverConfig::new([topic.as_str()]);
    config.commit_interval = Duration::from_millis(200);
    let driver = Driver::new(consumer, config, handler);
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = kafka.committed(&group, &topic, 2).await.unwrap();
        if committed == [Some(8), Some(6)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed {committed:?} after {} records",
            seen.load(AtomicOrdering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.stats.processed, 10);
    assert_eq!(seen.load(AtomicOrdering::SeqCst), 10);
    let cluster = kafka.cluster();
    for isolation in [
        IsolationLevel::ReadUncommitted,
        IsolationLevel::ReadCommitted,
    ] {
        let (lag, _) = group_lag(
            &cluster,
            &group,
            &ManualClock::new(),
            LagOptions { isolation },
        )
        .await
        .unwrap();
        assert_eq!(lag.total_lag(), 0, "{isolation:?}: {lag:?}");
    }
    let theirs = kafka.describe_group_with_kafka_tool(&group).await.unwrap();
    assert!(theirs.iter().all(|r| r.lag == Some(0)), "{theirs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_lag_comes_from_the_record_timestamp_at_the_committed_offset() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("clicks");
    let group = unique_name("clicks_reader");
    kafka.create_topic(&topic, 2).await.unwrap();
    let base = now_millis() - 600_000;
    kafka.produce(&topic, records(0, 6, base)).await.unwrap();
    kafka.produce(&topic, records(1, 2, base)).await.unwrap();
    kafka
        .commit(
            &group,
            &[
                (TopicPartition::new(topic.as_str(), 0), o(2)),
                (TopicPartition::new(topic.as_str(), 1), o(2)),
            ],
        )
        .await
        .unwrap();
    let cluster = kafka.cluster();
    let taken_at = base + 300_000;
    let clock = ManualClock::at(Timestamp::from_millis(taken_at));
    let (mut lag, _) = group_lag(&cluster, &group, &clock, LagOptions::default())
        .await
        .unwrap();
    fill_time_lag_from_records(&cluster, &mut lag)
        .await
        .unwrap();
    // Partition 0 waits on the record written at base + 2 s; partition 1 is caught up.
    assert_eq!(
        lag.partitions[0].time_lag,
        Some(Duration::from_millis(300_000 - 2_000))
    );
    assert_eq!(lag.partitions[1].time_lag, Some(Duration::ZERO));
}

/// A topic the broker will not describe (here: one that does not exist) is an error of its own,
/// with the broker's code, never an empty configuration (the Rust binding's DescribeConfigs
/// drops a resource's error, and an empty map read as "all defaults" let the restart gate
/// guess). A topic that exists lists every setting, defaults included.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_the_broker_will_not_describe_is_an_error_not_an_empty_configuration() {
    use kafka_ops_core::cluster::ConfigQuery;
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("configs");
    kafka.create_topic(&topic, 1).await.unwrap();
    let missing = unique_name("configs_missing");
    let cluster = kafka.cluster();
    let answers = cluster
        .topic_configs(&[topic.clone(), missing.clone()])
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    let (named, existing) = &answers[0];
    assert_eq!(named, &topic);
    let existing = existing.as_ref().unwrap();
    assert!(
        existing
            .get("min.insync.replicas")
            .is_some_and(Option::is_some),
        "{existing:?}"
    );
    let (named, refused) = &answers[1];
    assert_eq!(named, &missing);
    let refused = refused.as_ref().unwrap_err();
    assert_eq!(
        refused.code,
        Some(kafka_ops_core::KafkaCode::UNKNOWN_TOPIC_OR_PARTITION),
        "{refused:?}"
    );

    let broker = cluster.broker_config(1).await.unwrap();
    assert!(
        broker.get("process.roles").is_some_and(Option::is_some),
        "{broker:?}"
    );
}
