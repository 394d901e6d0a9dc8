//! KIP-848 (`group.protocol=consumer`) on a real Apache Kafka 4.x cluster: the driver through
//! a member joining and one leaving (incremental assignment, commits on revoke), groups of both
//! protocols described with their type, the new protocol's states reported as what they are,
//! and lag of a consumer-protocol group.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{GroupQuery, GroupState, GroupType, LagOptions, group_lag};
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::testkit::{RealKafka, Subscriber, TestRecord, unique_name};
use kafka_ops_core::{ManualClock, Record};

const PARTITIONS: i32 = 6;
const PER_PARTITION: i64 = 200;

type Seen = Arc<Mutex<BTreeMap<(i32, i64), u32>>>;

fn counting_driver(
    kafka: &RealKafka,
    group: &str,
    topic: &str,
    seen: &Seen,
) -> Driver<impl kafka_ops_core::handler::Handler> {
    let seen = seen.clone();
    let handler = handler_fn(move |record: &Record<'_>| {
        let key = (record.partition, record.offset.get());
        let seen = seen.clone();
        async move {
            // Slow enough that members overlap in time.
            tokio::time::sleep(Duration::from_millis(2)).await;
            *seen.lock().unwrap().entry(key).or_default() += 1;
            Ok(Outcome::Processed)
        }
    });
    let mut config = DriverConfig::new([topic]);
    config.commit_interval = Duration::from_millis(200);
    config.max_in_flight = 16;
    Driver::new(kafka.kip848_consumer_config(group), config, handler)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Describes `group` and checks it is a consumer-protocol group in a state the protocol has.
async fn consumer_group_state(cluster: &KafkaCluster, group: &str) -> GroupState {
    let described = cluster.describe_groups(&[group.to_string()]).await.unwrap();
    let description = &described[0];
    assert!(description.error.is_none(), "{description:?}");
    assert_eq!(description.group_type, GroupType::Consumer);
    assert_ne!(description.state, GroupState::Unknown, "{description:?}");
    description.state
}

fn owned(handle: &DriverHandle) -> BTreeSet<i32> {
    handle
        .stats()
        .assigned
        .iter()
        .map(|tp| tp.partition)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_driver_consumes_while_a_member_joins_and_another_leaves() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("orders");
    let group = unique_name("billing");
    kafka.create_topic(&topic, PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        let records =
            (0..PER_PARTITION).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(p));
        kafka.produce(&topic, records).await.unwrap();
    }
    let cluster = kafka.cluster();
    let seen: Seen = Arc::default();

    let first = counting_driver(&kafka, &group, &topic, &seen);
    let first_handle = first.handle();
    let first_run = tokio::spawn(first.run());
    wait_until(
        "the first member to own every partition",
        Duration::from_secs(60),
        || owned(&first_handle).len() == PARTITIONS as usize,
    )
    .await;

    // A second member joins: the coordinator moves some partitions to it, incrementally.
    let second = counting_driver(&kafka, &group, &topic, &seen);
    let second_handle = second.handle();
    let second_run = tokio::spawn(second.run());
    let mut states = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        states.insert(consumer_group_state(&cluster, &group).await);
        let (a, b) = (owned(&first_handle), owned(&second_handle));
        if !a.is_empty() && !b.is_empty() && a.len() + b.len() == PARTITIONS as usize {
            assert!(a.is_disjoint(&b), "{a:?} {b:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no split: {a:?} {b:?}, states {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first member may have read everything before the split: records written now land on
    // the second member's partitions too, so it consumes some before it leaves.
    for p in 0..PARTITIONS {
        let records = (PER_PARTITION..2 * PER_PARTITION)
            .map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(p));
        kafka.produce(&topic, records).await.unwrap();
    }
    wait_until(
        "the second member to process records",
        Duration::from_secs(60),
        || second_handle.stats().processed > 0,
    )
    .await;

    // The second member leaves: its partitions go back to the first, which finishes.
    second_handle.shutdown();
    let second_report = second_run.await.unwrap().unwrap();
    wait_until("every record", Duration::from_secs(120), || {
        seen.lock().unwrap().len() == (PARTITIONS as i64 * 2 * PER_PARTITION) as usize
    })
    .await;
    wait_until(
        "the first member to own every partition again",
        Duration::from_secs(60),
        || owned(&first_handle).len() == PARTITIONS as usize,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = kafka.committed(&group, &topic, PARTITIONS).await.unwrap();
        if committed.iter().all(|c| *c == Some(2 * PER_PARTITION)) {
            break;
        }
        assert!(Instant::now() < deadline, "committed {committed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    states.insert(consumer_group_state(&cluster, &group).await);
    first_handle.shutdown();
    let first_report = first_run.await.unwrap().unwrap();

    assert!(
        first_report.stats.rebalances >= 2,
        "{:?}",
        first_report.stats
    );
    assert!(
        second_report.stats.processed > 0,
        "{:?}",
        second_report.stats
    );
    assert_eq!(
        first_report.stats.processed + second_report.stats.processed,
        seen.lock()
            .unwrap()
            .values()
            .map(|n| u64::from(*n))
            .sum::<u64>()
    );
    // Revoked partitions were committed by the member giving them up: redone records are
    // at most the few in flight at each hand-over.
    let again = seen.lock().unwrap().values().filter(|n| **n > 1).count();
    assert!(again <= 64, "{again} records processed twice");
    assert!(states.contains(&GroupState::Stable), "{states:?}");

    let (lag, _) = group_lag(&cluster, &group, &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    assert_eq!(lag.total_lag(), 0);
    assert_eq!(lag.partitions.len(), PARTITIONS as usize);
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_of_both_protocols_are_described_with_their_type_and_true_state() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("events");
    kafka.create_topic(&topic, 4).await.unwrap();
    let classic_group = unique_name("classic");
    let consumer_group = unique_name("kip848");
    let classic = Subscriber::join(&kafka.consumer_config(&classic_group), &topic).unwrap();
    let first = Subscriber::join(&kafka.kip848_consumer_config(&consumer_group), &topic).unwrap();
    classic.wait_assigned(Duration::from_secs(30)).unwrap();
    first.wait_assigned(Duration::from_secs(30)).unwrap();
    let cluster = kafka.cluster();

    let deadline = Instant::now() + Duration::from_secs(30);
    let (classic_description, consumer_description) = loop {
        let described = cluster
            .describe_groups(&[classic_group.clone(), consumer_group.clone()])
            .await
            .unwrap();
        if described.iter().all(|d| d.state == GroupState::Stable) || Instant::now() > deadline {
            break (described[0].clone(), described[1].clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (classic_description.group_type, classic_description.state),
        (GroupType::Classic, GroupState::Stable)
    );
    assert_eq!(classic_description.members.len(), 1);
    assert_eq!(classic_description.members[0].target_assignment, None);
    assert_eq!(
        (consumer_description.group_type, consumer_description.state),
        (GroupType::Consumer, GroupState::Stable)
    );
    let member = &consumer_description.members[0];
    assert_eq!(member.assignment.len(), 4);
    assert_eq!(member.target_assignment.as_ref().map(Vec::len), Some(4));

    // The first member stops polling, so it cannot give partitions up; a second joins. The
    // group now waits on the first to revoke: Reconciling, which librdkafka alone would
    // report as unknown.
    first.freeze(true);
    let second = Subscriber::join(&kafka.kip848_consumer_config(&consumer_group), &topic).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let state = consumer_group_state(&cluster, &consumer_group).await;
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if state == GroupState::Reconciling {
            break;
        }
        assert!(Instant::now() < deadline, "states seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = cluster.list_groups().await.unwrap();
    let ours: BTreeMap<&str, (GroupType, GroupState)> = listed
        .iter()
        .filter(|l| l.group == classic_group || l.group == consumer_group)
        .map(|l| (l.group.as_str(), (l.group_type, l.state)))
        .collect();
    assert_eq!(
        ours[classic_group.as_str()],
        (GroupType::Classic, GroupState::Stable)
    );
    assert_eq!(
        ours[consumer_group.as_str()],
        (GroupType::Consumer, GroupState::Reconciling)
    );
    assert!(GroupState::Reconciling.has_members() && GroupState::Reconciling.is_rebalancing());

    // Thawed, the first member revokes and the second takes its share: stable again.
    first.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer_group_state(&cluster, &consumer_group).await != GroupState::Stable {
        assert!(Instant::now() < deadline, "never stable again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stable is the coordinator's view; each member applies its assignment when its next
    // heartbeat answer arrives, so the members' own counts may follow a moment later.
    let deadline = Instant::now() + Duration::from_secs(15);
    while first.assigned() + second.assigned() != 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first.assigned() + second.assigned(), 4);
    drop((classic, first, second));
}
