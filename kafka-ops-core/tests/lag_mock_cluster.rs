//! Lag collection against librdkafka's mock cluster: exact numbers, request counts, faults.
//! `read_committed` lag is proven in `admin_real_kafka.rs` instead: the mock answers ListOffsets
//! with the high watermark whatever the isolation level, so it cannot show a last stable offset.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use kafka_ops_core::cluster::{
    Discovery, LagOptions, MetadataQuery, fill_time_lag_from_records, group_lag, groups_lag,
};
use kafka_ops_core::kafka::DEFAULT_BATCH_SIZE;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::lag::LagAnomaly;
use kafka_ops_core::testkit::{MockKafka, TestRecord, api};
use kafka_ops_core::{ManualClock, Offset, Timestamp, TopicPartition};

fn o(v: i64) -> Offset {
    Offset::new(v).unwrap()
}

/// Produces `counts[p]` records to each partition `p` of `topic`, one batch per partition.
async fn fill(kafka: &MockKafka, topic: &str, counts: &[i64]) {
    for (partition, count) in counts.iter().enumerate() {
        let records = (0..*count).map(|i| {
            TestRecord::keyed(format!("k{i}"), format!("v{i}"))
                .header("event-id", format!("{topic}-{partition}-{i}"))
                .to_partition(partition as i32)
        });
        kafka.produce(topic, records).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn group_lag_is_exact_across_topics_with_partial_commits() {
    let kafka = MockKafka::start(3).unwrap();
    kafka.create_topic("orders", 4).unwrap();
    kafka.create_topic("payments", 2).unwrap();
    kafka.create_topic("audit", 1).unwrap();
    fill(&kafka, "orders", &[10, 20, 30, 40]).await;
    fill(&kafka, "payments", &[5, 5]).await;
    fill(&kafka, "audit", &[7]).await;
    kafka
        .commit(
            "billing",
            &[
                (TopicPartition::new("orders", 0), o(10)),
                (TopicPartition::new("orders", 1), o(5)),
                (TopicPartition::new("orders", 2), o(0)),
                (TopicPartition::new("audit", 0), o(3)),
            ],
        )
        .await
        .unwrap();

    let cluster = kafka.cluster().unwrap();
    let clock = ManualClock::at(Timestamp::from_millis(1_000_000));
    let (lag, discovery) = group_lag(&cluster, "billing", &clock, LagOptions::default())
        .await
        .unwrap();

    // The cluster client lists a group's offsets by asking a consumer of the group for every
    // partition in the metadata (never through librdkafka's admin API, which can crash).
    assert_eq!(discovery, Discovery::GroupOffsets);
    type Row = (String, Option<i64>, Option<i64>, Option<u64>);
    let rows: Vec<Row> = lag
        .partitions
        .iter()
        .map(|r| {
            (
                r.topic_partition().to_string(),
                r.committed.map(Offset::get),
                r.end_offset.map(Offset::get),
                r.lag,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("audit/0".into(), Some(3), Some(7), Some(4)),
            ("orders/0".into(), Some(10), Some(10), Some(0)),
            ("orders/1".into(), Some(5), Some(20), Some(15)),
            ("orders/2".into(), Some(0), Some(30), Some(30)),
            // Never committed: reported as unknown, not as 40.
            ("orders/3".into(), None, Some(40), None),
        ]
    );
    assert_eq!(lag.total_lag(), 49);
    assert!(lag.is_complete());
    assert_eq!(lag.taken_at, Timestamp::from_millis(1_000_000));
    let topics = lag.topics();
    assert_eq!((topics[1].total_lag, topics[1].unknown_partitions), (45, 1));

    // A group that never committed has nothing to report.
    let (idle, _) = group_lag(&cluster, "idle", &clock, LagOptions::default())
        .await
        .unwrap();
    assert!(idle.partitions.is_empty());
    assert_eq!(idle.total_lag(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_requests_scale_with_brokers_not_partitions() {
    let kafka = MockKafka::start(3).unwrap();
    for t in 0..5 {
        kafka.create_topic(&format!("wide-{t}"), 40).unwrap();
    }
    let mut commits = Vec::new();
    for t in 0..5 {
        let topic = format!("wide-{t}");
        kafka
            .produce(
                &topic,
                (0..200).map(|i| TestRecord::keyed(format!("k{i}"), "v")),
            )
            .await
            .unwrap();
        for p in 0..40 {
            commits.push((TopicPartition::new(topic.as_str(), p), o(0)));
        }
    }
    kafka.commit("wide-group", &commits).await.unwrap();
    let cluster = kafka.cluster().unwrap();
    // Warm the client's metadata so the count below is the snapshot's own.
    cluster.metadata(&[]).await.unwrap();

    kafka.track_requests();
    let (lag, _) = group_lag(
        &cluster,
        "wide-group",
        &ManualClock::new(),
        LagOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(lag.partitions.len(), 200);
    assert_eq!(lag.total_lag(), 1_000);

    let list_offsets = kafka.count_requests(api::LIST_OFFSETS);
    let offset_fetch = kafka.count_requests(api::OFFSET_FETCH);
    // Earliest + latest, one request per leader each (≤ 128 partitions per leader here).
    assert!(list_offsets <= 2 * 3, "{list_offsets} ListOffsets requests");
    assert!(list_offsets >= 2, "{list_offsets} ListOffsets requests");
    // The group's offsets of every partition, in batches of 128.
    assert!(
        offset_fetch <= 200usize.div_ceil(DEFAULT_BATCH_SIZE),
        "{offset_fetch} OffsetFetch requests"
    );

    // Smaller batches: requests follow the per-leader partition counts, not the partition total.
    let metadata = cluster.metadata(&[]).await.unwrap();
    let mut per_leader = std::collections::HashMap::<i32, usize>::new();
    for topic in metadata
        .topics
        .iter()
        .filter(|t| t.name.starts_with("wide-"))
    {
        for p in &topic.partitions {
            *per_leader.entry(p.leader.unwrap()).or_default() += 1;
        }
    }
    let expected: usize = per_leader.values().map(|n| 2 * n.div_ceil(50)).sum();
    let small = cluster.clone().with_batch_size(50);
    kafka.track_requests();
    let (lag, _) = group_lag(
        &small,
        "wide-group",
        &ManualClock::new(),
        LagOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(lag.total_lag(), 1_000);
    assert_eq!(kafka.count_requests(api::LIST_OFFSETS), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_beyond_end_is_clamped_and_flagged() {
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("short", 1).unwrap();
    fill(&kafka, "short", &[3]).await;
    kafka
        .commit("ahead", &[(TopicPartition::new("short", 0), o(9))])
        .await
        .unwrap();
    let cluster = kafka.cluster().unwrap();
    let (lag, _) = group_lag(
        &cluster,
        "ahead",
        &ManualClock::new(),
        LagOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(lag.partitions[0].lag, Some(0));
    assert_eq!(
        lag.partitions[0].anomaly,
        Some(LagAnomaly::CommittedBeyondEnd { by: 6 })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn time_lag_comes_from_the_record_at_the_committed_offset() {
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("timed", 2).unwrap();
    let base = 1_700_000_000_000i64;
    let records = (0..10).map(|i| {
        TestRecord::value(format!("v{i}"))
            .to_partition(0)
            .at(base + i * 1_000)
    });
    kafka.produce("timed", records).await.unwrap();
    kafka
        .produce("timed", [TestRecord::value("x").to_partition(1).at(base)])
        .await
        .unwrap();
    kafka
        .commit(
            "slow",
            &[
                (TopicPartition::new("timed", 0), o(4)),
                (TopicPartition::new("timed", 1), o(1)),
            ],
        )
        .await
        .unwrap();
    let cluster = kafka.cluster().unwrap();
    let clock = ManualClock::at(Timestamp::from_millis(base + 60_000));
    let (mut lag, _) = group_lag(&cluster, "slow", &clock, LagOptions::default())
        .await
        .unwrap();
    fill_time_lag_from_records(&cluster, &mut lag)
        .await
        .unwrap();
    // The oldest unread record (offset 4) was written at base + 4 s; now is base + 60 s.
    assert_eq!(lag.partitions[0].time_lag, Some(Duration::from_secs(56)));
    // Caught up: zero, not NaN, not unknown.
    assert_eq!(lag.partitions[1].time_lag, Some(Duration::ZERO));
    assert_eq!(lag.max_time_lag(), Some(Duration::from_secs(56)));
}

/// A cluster whose group coordinator is broker 1, with 6 partitions of 10 records committed at 4,
/// and the id of another broker that leads some of them.
async fn spread_cluster(group: &str) -> (MockKafka, KafkaCluster, i32, Vec<i32>) {
    let kafka = MockKafka::start(3).unwrap();
    kafka
        .mock()
        .coordinator(rdkafka::mocking::MockCoordinator::Group(group.into()), 1)
        .unwrap();
    kafka.create_topic("spread", 6).unwrap();
    fill(&kafka, "spread", &[10, 10, 10, 10, 10, 10]).await;
    let commits: Vec<_> = (0..6)
        .map(|p| (TopicPartition::new("spread", p), o(4)))
        .collect();
    kafka.commit(group, &commits).await.unwrap();
    let cluster = kafka
        .cluster()
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    let metadata = cluster.metadata(&[]).await.unwrap();
    let leaders: Vec<Option<i32>> = metadata
        .topic("spread")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.leader)
        .collect();
    let victim = leaders
        .iter()
        .flatten()
        .copied()
        .find(|l| *l != 1)
        .expect("a partition led by broker 2 or 3");
    let led: Vec<i32> = (0..6)
        .filter(|p| leaders[*p as usize] == Some(victim))
        .collect();
    (kafka, cluster, victim, led)
}

fn assert_exact_or_unknown(lag: &kafka_ops_core::lag::GroupLag, unknown: &[i32]) {
    for row in &lag.partitions {
        if unknown.contains(&row.partition) {
            assert_eq!(row.lag, None, "{row:?}");
            assert!(row.unknown_reason.is_some(), "{row:?}");
        } else {
            assert_eq!(row.lag, Some(6), "{row:?}");
        }
    }
    assert_eq!(lag.total_lag(), 6 * (6 - unknown.len() as u64));
    assert!(!lag.is_complete());
}

/// A snapshot with `partitions_per_request` by a client that has learned nothing yet, taken while
/// the leader of some partitions is down: it marks only that leader's partitions unknown and is
/// exact for the others. Returns the client, whose admin handles the callers count.
async fn a_broker_down_marks_only_its_partitions(partitions_per_request: usize) -> KafkaCluster {
    let (kafka, cluster, victim, led) = spread_cluster("g").await;
    let cluster = cluster.with_batch_size(partitions_per_request);
    kafka.broker_down(victim).unwrap();
    let (lag, _) = group_lag(&cluster, "g", &ManualClock::new(), LagOptions::default())
        .await
        .expect("a partial report, not an error");
    assert_exact_or_unknown(&lag, &led);
    kafka.broker_up(victim).unwrap();
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_down_yields_unknown_partitions_not_wrong_numbers() {
    let cluster = a_broker_down_marks_only_its_partitions(DEFAULT_BATCH_SIZE).await;
    assert_eq!(cluster.admin_clients(), 1);
}

/// A snapshot of many requests sends half of them through a second admin handle: a leader down
/// still marks only its own partitions, whichever handle asked them.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_down_under_a_split_snapshot_marks_only_its_partitions() {
    // One partition per request: 12 ListOffsets batches, over both handles.
    let cluster = a_broker_down_marks_only_its_partitions(1).await;
    assert_eq!(cluster.admin_clients(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_taken_down_mid_snapshot_is_reported() {
    let (kafka, cluster, victim, led) = spread_cluster("g").await;
    // Slow every broker down so the snapshot is in flight when the broker goes away.
    for broker in 1..=3 {
        kafka
            .broker_round_trip_time(broker, Duration::from_millis(300))
            .unwrap();
    }
    let snapshot = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            group_lag(&cluster, "g", &ManualClock::new(), LagOptions::default()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    kafka.broker_down(victim).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), snapshot)
        .await
        .expect("the snapshot must not hang")
        .expect("the snapshot must not panic");
    let (lag, _) = result.expect("a partial report, not an error");
    assert_exact_or_unknown(&lag, &led);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_fails_fast_with_a_typed_error() {
    let port = kafka_ops_core::testkit::free_port().unwrap();
    let cluster = kafka_ops_core::kafka::KafkaCluster::connect(&format!("127.0.0.1:{port}"))
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let error = cluster.metadata(&[]).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        error.class(),
        kafka_ops_core::ErrorClass::Transient,
        "{error}"
    );
}

/// Requests per API key since tracking started.
fn requests_by_api(kafka: &MockKafka) -> std::collections::BTreeMap<i16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for request in kafka.requests() {
        *counts.entry(request.api_key).or_default() += 1;
    }
    counts
}

/// `groups` groups over 4 topics of 10 partitions (10 records each) on 3 brokers; group `i`
/// commits offset `i % 5` on every partition.
async fn many_groups(groups: usize) -> (MockKafka, KafkaCluster, Vec<String>) {
    let kafka = MockKafka::start(3).unwrap();
    let mut partitions = Vec::new();
    for t in 0..4 {
        let topic = format!("fleet-{t}");
        kafka.create_topic(&topic, 10).unwrap();
        fill(&kafka, &topic, &[10; 10]).await;
        partitions.extend((0..10).map(|p| TopicPartition::new(topic.as_str(), p)));
    }
    let names: Vec<String> = (0..groups).map(|i| format!("fleet-group-{i:02}")).collect();
    for (i, group) in names.iter().enumerate() {
        let at = o(i as i64 % 5);
        let commits: Vec<_> = partitions.iter().map(|tp| (tp.clone(), at)).collect();
        kafka.commit(group, &commits).await.unwrap();
    }
    let cluster = kafka.cluster().unwrap();
    (kafka, cluster, names)
}

#[tokio::test(flavor = "multi_thread")]
async fn all_groups_share_one_snapshot_requests_do_not_grow_with_groups() {
    let (kafka, cluster, names) = many_groups(50).await;
    let clock = ManualClock::at(Timestamp::from_millis(9));
    let mut figures = Vec::new();
    for asked in [&names[..1], &names[..10], &names[..]] {
        // Warm the client's metadata and coordinators so each count is the pass's own, and
        // let the consumers created for new groups finish connecting (they look their
        // coordinators up and connect to more brokers in the background).
        groups_lag(&cluster, asked, &clock, LagOptions::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        kafka.track_requests();
        let all = groups_lag(&cluster, asked, &clock, LagOptions::default())
            .await
            .unwrap();
        let counts = requests_by_api(&kafka);
        assert!(all.failed.is_empty(), "{:?}", all.failed);
        assert_eq!(all.groups.len(), asked.len());
        for (i, lag) in all.groups.iter().enumerate() {
            assert_eq!(lag.group, names[i]);
            assert_eq!(lag.partitions.len(), 40);
            assert_eq!(lag.total_lag(), 40 * (10 - i as u64 % 5), "{}", lag.group);
            assert_eq!(lag.taken_at, Timestamp::from_millis(9));
        }
        println!(
            "one pass, {} groups: requests by API key {counts:?}",
            asked.len()
        );
        figures.push(counts);
    }
    let count = |counts: &std::collections::BTreeMap<i16, usize>, key| {
        counts.get(&key).copied().unwrap_or(0)
    };
    let (one, ten, fifty) = (&figures[0], &figures[1], &figures[2]);
    // One metadata answer and one end-offset snapshot (earliest + latest, one request per
    // leader) serve every group: the same for 1 group as for 50.
    for counts in [ten, fifty] {
        assert_eq!(count(counts, api::METADATA), count(one, api::METADATA));
        assert_eq!(
            count(counts, api::LIST_OFFSETS),
            count(one, api::LIST_OFFSETS)
        );
    }
    // The pass's metadata and the topic list the groups' offsets are asked for. The mock
    // cannot describe groups; once it said so (in the warm-up pass), describing asks nothing,
    // not even the metadata for `__consumer_offsets` (the groups' coordinators).
    assert_eq!(count(one, api::METADATA), 2);
    assert!((2..=6).contains(&count(one, api::LIST_OFFSETS)));
    // OffsetFetch names one group per request, each from the group's own consumer: one request
    // per group (40 partitions fit one batch).
    assert_eq!(count(one, api::OFFSET_FETCH), 1);
    assert_eq!(count(ten, api::OFFSET_FETCH), 10);
    assert_eq!(count(fifty, api::OFFSET_FETCH), 50);
    // Nor any coordinator lookup (the groups' own readers found theirs in the warm-up pass).
    for counts in [one, ten, fifty] {
        assert_eq!(count(counts, api::FIND_COORDINATOR), 0);
    }

    // The loop the pass replaces: every group re-reads metadata and end offsets.
    kafka.track_requests();
    for group in &names {
        group_lag(&cluster, group, &clock, LagOptions::default())
            .await
            .unwrap();
    }
    let looped = requests_by_api(&kafka);
    println!("group by group, 50 groups: requests by API key {looped:?}");
    assert_eq!(
        count(&looped, api::METADATA),
        50 * count(one, api::METADATA)
    );
    assert_eq!(
        count(&looped, api::LIST_OFFSETS),
        50 * count(one, api::LIST_OFFSETS)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_whose_offsets_fail_is_reported_and_the_others_come_back() {
    let (kafka, cluster, names) = many_groups(5).await;
    // Warm the coordinators so the injected error meets an OffsetFetch, not a lookup.
    groups_lag(&cluster, &names, &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    kafka.request_errors(
        rdkafka::types::RDKafkaApiKey::OffsetFetch,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
    );
    let all = groups_lag(&cluster, &names, &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    assert_eq!(all.failed.len(), 1, "{:?}", all.failed);
    let failed = &all.failed[0];
    assert_eq!(
        failed.code,
        Some(kafka_ops_core::KafkaCode::GROUP_AUTHORIZATION_FAILED),
        "{failed:?}"
    );
    assert_eq!(all.groups.len(), 4);
    for lag in &all.groups {
        let i: u64 = lag
            .group
            .trim_start_matches("fleet-group-")
            .parse()
            .unwrap();
        assert_ne!(lag.group, failed.group);
        assert_eq!(lag.total_lag(), 40 * (10 - i % 5), "{}", lag.group);
        assert!(lag.is_complete());
    }
}

/// Every partition's own watermarks, whether the requests went through one handle or two.
#[tokio::test(flavor = "multi_thread")]
async fn watermarks_split_over_two_handles_are_exact() {
    use kafka_ops_core::cluster::OffsetQuery;
    let kafka = MockKafka::start(3).unwrap();
    let counts: Vec<i64> = (0..24).map(|p| p % 7 + 1).collect();
    for topic in ["split-a", "split-b"] {
        kafka.create_topic(topic, 24).unwrap();
        fill(&kafka, topic, &counts).await;
    }
    let partitions: Vec<TopicPartition> = ["split-a", "split-b"]
        .iter()
        .flat_map(|topic| (0..24).map(|p| TopicPartition::new(*topic, p)))
        .collect();
    let cluster = kafka.cluster().unwrap();
    // 2 batches (one handle), then 2 × 48 and 26 (two handles).
    for (batch_size, handles) in [(DEFAULT_BATCH_SIZE, 1), (1, 2), (4, 2)] {
        let marks = cluster
            .clone()
            .with_batch_size(batch_size)
            .watermarks(&partitions, kafka_ops_core::IsolationLevel::ReadUncommitted)
            .await
            .unwrap();
        assert_eq!(marks.len(), partitions.len());
        for ((tp, answer), expected) in marks.iter().zip(&partitions) {
            assert_eq!(tp, expected);
            let marks = answer.as_ref().unwrap();
            assert_eq!(marks.low, o(0), "{tp}");
            assert_eq!(marks.high, o(counts[tp.partition as usize]), "{tp}");
        }
        assert_eq!(cluster.admin_clients(), handles, "batch size {batch_size}");
    }
}

/// A partition asked with several specs is asked once per spec; the requests go together, so
/// the call takes its slowest, within one bound (one after another, two round trips of a second
/// would not fit in 1.5 s). A leader that does not answer within the bound leaves its
/// partitions with an error, never with an offset that is not there (librdkafka fills the
/// answers in as "no offset" before it asks, and leaves them so when a request times out).
#[tokio::test(flavor = "multi_thread")]
async fn several_specs_for_one_partition_share_one_bound() {
    use kafka_ops_core::cluster::OffsetQuery;
    use kafka_ops_core::{IsolationLevel, OffsetSpec};
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("slow", 1).unwrap();
    fill(&kafka, "slow", &[10]).await;
    let cluster = kafka
        .cluster()
        .unwrap()
        .with_timeout(Duration::from_millis(1_500));
    let tp = TopicPartition::new("slow", 0);
    let queries = [
        (tp.clone(), OffsetSpec::Earliest),
        (tp.clone(), OffsetSpec::Latest),
    ];
    let offsets = |answers: &kafka_ops_core::cluster::PartitionResults<_>| {
        answers
            .iter()
            .map(
                |(_, answer): &(_, Result<kafka_ops_core::ListedOffset, _>)| {
                    answer.as_ref().ok().and_then(|a| a.offset).map(Offset::get)
                },
            )
            .collect::<Vec<_>>()
    };
    // Unhurried (a fresh mock may need a moment for its leader).
    let mut answered = Vec::new();
    for _ in 0..10 {
        let answers = cluster
            .list_offsets(&queries, IsolationLevel::ReadUncommitted)
            .await
            .unwrap();
        answered = offsets(&answers);
        if answered == [Some(0), Some(10)] {
            break;
        }
    }
    assert_eq!(answered, [Some(0), Some(10)]);

    kafka
        .broker_round_trip_time(1, Duration::from_millis(1_000))
        .unwrap();
    let answers = cluster
        .list_offsets(&queries, IsolationLevel::ReadUncommitted)
        .await
        .unwrap();
    assert_eq!(offsets(&answers), [Some(0), Some(10)], "{answers:?}");

    kafka
        .broker_round_trip_time(1, Duration::from_millis(2_500))
        .unwrap();
    let started = std::time::Instant::now();
    let answers = cluster
        .list_offsets(&queries, IsolationLevel::ReadUncommitted)
        .await
        .unwrap();
    let took = started.elapsed();
    for (_, answer) in &answers {
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.reason.contains("partition's leader")),
            "{answers:?}"
        );
    }
    assert!(took < Duration::from_millis(2_400), "took {took:?}");
}
