//! The hygiene review on a real Apache Kafka cluster (3 KRaft nodes), with exact expectations
//! for the groups and topics this test makes: an inactive caught-up group (safe to delete), an
//! inactive group with lag (not safe unless the lag is accepted), a recently active group, a
//! group with a member and no commit (never flagged; once the member leaves, inactive and safe
//! to delete), an idle topic, a busy one, a dead-letter
//! topic's depth, and the leadership of a topic placed on known replicas, one partition of it
//! reordered so its leader is off its preferred replica (checked against `kafka-topics`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_ops_core::cluster::GroupState;
use kafka_ops_core::testkit::{RealKafka, Subscriber, TestRecord, TopicSpec, unique_name};
use kafka_ops_core::{Offset, SystemClock, Timestamp, TopicPartition};
use kafka_ops_health::hygiene::{HygieneOptions, HygieneReport, MisplacedLeader, review};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn o(v: i64) -> Offset {
    Offset::new(v).unwrap()
}

fn now_millis() -> i64 {
    Timestamp::from_system_time(std::time::SystemTime::now()).as_millis()
}

/// `count` records on `partition`, timestamps one second apart from `base`.
fn records(partition: i32, count: i64, base: i64) -> Vec<TestRecord> {
    (0..count)
        .map(|i| {
            TestRecord::keyed(format!("k{i}"), format!("v{i}"))
                .to_partition(partition)
                .at(base + i * 1_000)
        })
        .collect()
}

/// (inactive, safe to delete, members, total lag, newest consumed) of `group`.
type GroupRow = (bool, bool, usize, u64, Option<Timestamp>);

fn group_row(report: &HygieneReport, group: &str) -> GroupRow {
    let g = report
        .groups
        .iter()
        .find(|g| g.group == group)
        .unwrap_or_else(|| panic!("{group} missing from the review"));
    (
        g.inactive,
        g.safe_to_delete,
        g.members,
        g.total_lag,
        g.newest_consumed,
    )
}

/// (idle, records, newest record, dead-letter depth) of `topic`.
type TopicRow = (bool, u64, Option<Timestamp>, Option<u64>);

fn topic_row(report: &HygieneReport, topic: &str) -> TopicRow {
    let t = report.topics.iter().find(|t| t.topic == topic).unwrap();
    (t.idle, t.records, t.newest_record, t.dead_letter_depth)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_review_is_exact_for_groups_topics_and_leaders() {
    let kafka = RealKafka::shared().await.unwrap();
    let old = unique_name("ledger_events");
    let busy = unique_name("orders");
    let dlq = format!("{}.dlq", unique_name("payments"));
    let placed = unique_name("placed");
    kafka.create_topic(&old, 3).await.unwrap();
    kafka.create_topic(&busy, 1).await.unwrap();
    kafka.create_topic(&dlq, 2).await.unwrap();
    kafka
        .create_topic_with(
            &placed,
            &TopicSpec::placed(vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 3]]),
        )
        .await
        .unwrap();
    // Three days old: past a one-day threshold, well within the default retention.
    let base = now_millis() - 3 * DAY.as_millis() as i64;
    kafka.produce(&old, records(0, 4, base)).await.unwrap();
    kafka.produce(&old, records(1, 2, base)).await.unwrap();
    let fresh = now_millis() - 60_000;
    kafka.produce(&busy, records(0, 5, fresh)).await.unwrap();
    kafka.produce(&dlq, records(0, 2, fresh)).await.unwrap();
    kafka.produce(&dlq, records(1, 1, fresh)).await.unwrap();

    let tp = |topic: &str, p| TopicPartition::new(topic, p);
    let caught_up = unique_name("archiver_group");
    let lagging = unique_name("reporting_group");
    let recent = unique_name("billing_group");
    let live = unique_name("ledger_reader_group");
    kafka
        .commit(&caught_up, &[(tp(&old, 0), o(4)), (tp(&old, 1), o(2))])
        .await
        .unwrap();
    kafka
        .commit(&lagging, &[(tp(&old, 0), o(1))])
        .await
        .unwrap();
    kafka
        .commit(&recent, &[(tp(&busy, 0), o(3))])
        .await
        .unwrap();
    let member = Subscriber::join(&kafka.consumer_config(&live), &old).unwrap();
    member.wait_assigned(Duration::from_secs(30)).unwrap();

    let cluster = kafka.cluster();
    // Partition 3's preferred replica becomes node 3 while node 1 keeps leading it: a
    // reassignment that only reorders the replicas moves no leader.
    reorder_replicas(&kafka, &placed, 3, &[3, 1]).await;
    let options = HygieneOptions {
        inactive_after: DAY,
        idle_after: DAY,
        ..HygieneOptions::default()
    };
    let report = review(&cluster, &options, &SystemClock).await.unwrap();

    // Records at offsets 3 (partition 0) and 1 (partition 1) were consumed last: the newest is
    // partition 0's, three seconds after base.
    assert_eq!(
        group_row(&report, &caught_up),
        (true, true, 0, 0, Some(Timestamp::from_millis(base + 3_000)))
    );
    // Committed at 1 on partition 0 (3 behind); partitions 1 and 2 never committed.
    assert_eq!(
        group_row(&report, &lagging),
        (true, false, 0, 3, Some(Timestamp::from_millis(base)))
    );
    assert_eq!(
        group_row(&report, &recent),
        (
            false,
            false,
            0,
            2,
            Some(Timestamp::from_millis(fresh + 2_000))
        )
    );
    // A member and no commit: listed, never flagged, old records notwithstanding.
    assert_eq!(group_row(&report, &live), (false, false, 1, 0, None));
    let live_group = report.groups.iter().find(|g| g.group == live).unwrap();
    assert_eq!(live_group.state, GroupState::Stable);
    assert_eq!(live_group.partitions.len(), 3);
    assert!(live_group.partitions.iter().all(|p| p.committed.is_none()));
    assert_eq!(live_group.reason, "1 members");
    let lagging_group = report.groups.iter().find(|g| g.group == lagging).unwrap();
    assert!(
        lagging_group
            .reason
            .ends_with("; 3 records unconsumed (accepted: 0)"),
        "{}",
        lagging_group.reason
    );
    // What Kafka's own tool says of the same offsets.
    let theirs = kafka
        .describe_group_with_kafka_tool(&lagging)
        .await
        .unwrap();
    let tool: Vec<(i64, i64)> = theirs
        .iter()
        .map(|r| (r.committed.unwrap(), r.lag.unwrap()))
        .collect();
    assert_eq!(tool, [(1, 3)]);

    assert_eq!(
        topic_row(&report, &old),
        (true, 6, Some(Timestamp::from_millis(base + 3_000)), None)
    );
    assert_eq!(
        topic_row(&report, &busy),
        (false, 5, Some(Timestamp::from_millis(fresh + 4_000)), None)
    );
    assert_eq!(
        topic_row(&report, &dlq),
        (
            false,
            3,
            Some(Timestamp::from_millis(fresh + 1_000)),
            Some(3)
        )
    );
    // Never written: nothing stored, idle.
    assert_eq!(topic_row(&report, &placed), (true, 0, None, None));

    // Leadership: the placed topic is led by its first replicas but for partition 3, as Kafka's
    // own tool shows; the counts cover the cluster.
    let misplaced: Vec<&MisplacedLeader> = report
        .leadership
        .not_preferred
        .iter()
        .filter(|m| m.topic == placed)
        .collect();
    assert_eq!(
        misplaced,
        [&MisplacedLeader {
            topic: placed.clone(),
            partition: 3,
            leader: 1,
            preferred: 3,
        }]
    );
    assert_eq!(
        leaders_by_kafka_tool(&kafka, &placed).await,
        [(0, 1, 1), (1, 2, 2), (2, 3, 3), (3, 1, 3)]
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.contains("led off their preferred replica")),
        "{:?}",
        report.findings
    );
    let brokers: Vec<i32> = report.leadership.brokers.iter().map(|b| b.broker).collect();
    assert_eq!(brokers, [1, 2, 3]);
    let metadata =
        kafka_ops_core::cluster::MetadataQuery::metadata(&cluster, std::slice::from_ref(&placed))
            .await
            .unwrap();
    let leaders: BTreeMap<i32, Option<i32>> = metadata.topics[0]
        .partitions
        .iter()
        .map(|p| (p.id, p.leader))
        .collect();
    assert_eq!(
        leaders,
        BTreeMap::from([(0, Some(1)), (1, Some(2)), (2, Some(3)), (3, Some(1))])
    );
    let led: usize = report.leadership.brokers.iter().map(|b| b.leaders).sum();
    let preferred: usize = report.leadership.brokers.iter().map(|b| b.preferred).sum();
    assert_eq!(led + report.leadership.leaderless.len(), preferred);
    let most = report
        .leadership
        .brokers
        .iter()
        .map(|b| b.leaders)
        .max()
        .unwrap();
    let fewest = report
        .leadership
        .brokers
        .iter()
        .map(|b| b.leaders)
        .min()
        .unwrap();
    assert_eq!(report.leadership.skew, most - fewest);

    // The operator accepts losing three records: the lagging group may go too.
    let lenient = HygieneOptions {
        accepted_lag: 3,
        ..options.clone()
    };
    let report = review(&cluster, &lenient, &SystemClock).await.unwrap();
    assert!(group_row(&report, &lagging).1);
    assert!(!group_row(&report, &live).1);

    // The member leaves without having committed: the group stays listed, empty, with no commit
    // — inactive, and nothing is lost by deleting it.
    drop(member);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = review(&cluster, &options, &SystemClock).await.unwrap();
        if group_row(&report, &live).2 == 0 {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the member never left"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(group_row(&report, &live), (true, true, 0, 0, None));
    let left = report.groups.iter().find(|g| g.group == live).unwrap();
    assert_eq!(left.state, GroupState::Empty);
    assert_eq!(left.reason, "no members, no committed offset");
    assert!(left.partitions.iter().all(|p| p.committed.is_none()));
}

/// Reassigns `partition` of `topic` to `replicas` with Kafka's own tool and waits until the
/// metadata shows them.
async fn reorder_replicas(kafka: &RealKafka, topic: &str, partition: i32, replicas: &[i32]) {
    let plan = serde_json::json!({
        "version": 1,
        "partitions": [{"topic": topic, "partition": partition, "replicas": replicas}],
    });
    let file = std::env::temp_dir().join(format!("{topic}-reassignment.json"));
    std::fs::write(&file, plan.to_string()).unwrap();
    // A topic created a moment ago may not be known to every broker yet: retry for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let started = kafka
            .kafka_tool(
                "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
                &[
                    "--bootstrap-server",
                    kafka.bootstrap(),
                    "--reassignment-json-file",
                    file.to_str().unwrap(),
                    "--execute",
                ],
            )
            .await;
        match started {
            Ok(_) => break,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "reassignment refused: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    std::fs::remove_file(&file).unwrap();
    let cluster = kafka.cluster();
    loop {
        let metadata =
            kafka_ops_core::cluster::MetadataQuery::metadata(&cluster, &[topic.to_string()])
                .await
                .unwrap();
        let now = &metadata.topics[0].partitions[partition as usize];
        if now.replicas == replicas && now.isr.len() == replicas.len() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reassignment never showed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (partition, leader, first replica) of each partition of `topic`, as Kafka's
/// `kafka-topics --describe` prints them.
async fn leaders_by_kafka_tool(kafka: &RealKafka, topic: &str) -> Vec<(i32, i32, i32)> {
    let out = kafka
        .kafka_tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                kafka.bootstrap(),
                "--describe",
                "--topic",
                topic,
            ],
        )
        .await
        .unwrap();
    let field = |words: &[&str], name: &str| -> String {
        let at = words.iter().position(|w| *w == name).unwrap();
        words[at + 1].to_string()
    };
    out.lines()
        .filter(|line| line.contains("Leader:"))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let first = field(&words, "Replicas:")
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (
                field(&words, "Partition:").parse().unwrap(),
                field(&words, "Leader:").parse().unwrap(),
                first,
            )
        })
        .collect()
}
