//! Side-by-side: a lag snapshot of 1 000, 10 000 and 100 000 partitions on a 3-broker mock
//! cluster, in the same run: kafka-ops' batched path (requests of at most
//! `DEFAULT_BATCH_SIZE` partitions, all sent at once), the limit of batching (one request per
//! broker and request type, however many partitions), and the naive loop of per-partition
//! `fetch_watermarks`.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench lag_snapshot
//! ```
//!
//! Prints, per size, the median of each (after one unmeasured pass of each), the ratios
//! naive/batched (target ≥ 20×) and batched/limit (target ≤ 2×), and how many ListOffsets and
//! OffsetFetch requests each made.
//! Knob (environment): `KAFKA_OPS_BENCH_PARTITIONS`, comma-separated sizes (default
//! `1000,10000,100000`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::time::{Duration, Instant};

use kafka_ops_benches::median;
use kafka_ops_core::cluster::{LagOptions, MetadataQuery, group_lag};
use kafka_ops_core::lag::{GroupLag, PartitionLag};
use kafka_ops_core::testkit::{MockKafka, TestRecord, api};
use kafka_ops_core::{ManualClock, Offset, TopicPartition, Watermarks};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, TopicPartitionList};

const PARTITIONS_PER_TOPIC: i32 = 200;
const ROUNDS: usize = 5;

/// The naive path: one committed-offsets request, then `fetch_watermarks` per partition.
fn naive_snapshot(consumer: &BaseConsumer, partitions: &[TopicPartition]) -> GroupLag {
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for tp in partitions {
        list.add_partition(&tp.topic, tp.partition);
    }
    // A map, not `find_partition` per partition: that searches the list linearly, and the
    // loop's cost would then grow with the square of the partitions instead of its requests.
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(30))
        .unwrap()
        .to_topic_map();
    let rows = partitions
        .iter()
        .map(|tp| {
            let (low, high) = consumer
                .fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(10))
                .unwrap();
            let offset = committed
                .get(&(tp.topic.to_string(), tp.partition))
                .and_then(|offset| offset.to_raw())
                .and_then(|raw| Offset::from_raw(raw).ok().flatten());
            let marks = Watermarks {
                low: Offset::new(low).unwrap(),
                high: Offset::new(high).unwrap(),
            };
            PartitionLag::compute(tp, offset, Some(marks))
        })
        .collect();
    GroupLag::new("bench", kafka_ops_core::Timestamp::from_millis(0), rows)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("KAFKA_OPS_BENCH_PARTITIONS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .replace('_', "")
                .parse()
                .expect("a partition count")
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "lag snapshot on 3 brokers, median of {ROUNDS} rounds after one unmeasured pass of each \
         (the limit and the naive loop: 1 cold round at 100 000)"
    );
    println!(
        "  {:>8}  {:>22}  {:>22}  {:>22}  {:>14}  {:>13}",
        "parts",
        "batched (requests)",
        "limit (requests)",
        "naive (requests)",
        "naive/batched",
        "batched/limit"
    );
    for size in sizes {
        measure(&runtime, size);
    }
}

/// One time and its request count (ListOffsets + OffsetFetch).
type Measured = (Duration, usize);

fn measure(runtime: &tokio::runtime::Runtime, size: usize) {
    let kafka = MockKafka::start(3).unwrap();
    let topics = i32::try_from(size.div_ceil(PARTITIONS_PER_TOPIC as usize)).unwrap();
    let mut partitions = Vec::new();
    for t in 0..topics {
        let topic = format!("bench-{t}");
        kafka.create_topic(&topic, PARTITIONS_PER_TOPIC).unwrap();
        for p in 0..PARTITIONS_PER_TOPIC {
            partitions.push(TopicPartition::new(topic.as_str(), p));
        }
    }
    // Some data on every topic, and a commit on every partition.
    runtime.block_on(async {
        for t in 0..topics {
            let records = (0..PARTITIONS_PER_TOPIC).map(|p| TestRecord::value("x").to_partition(p));
            kafka.produce(&format!("bench-{t}"), records).await.unwrap();
        }
        let commits: Vec<_> = partitions
            .iter()
            .map(|tp| (tp.clone(), Offset::ZERO))
            .collect();
        kafka.commit("bench", &commits).await.unwrap();
    });
    let cluster = kafka
        .cluster()
        .unwrap()
        .with_timeout(Duration::from_secs(120));
    // The limit: every partition of a leader in one request.
    let unbatched = kafka
        .cluster()
        .unwrap()
        .with_timeout(Duration::from_secs(120))
        .with_batch_size(usize::MAX);
    runtime.block_on(cluster.metadata(&[])).unwrap();
    runtime.block_on(unbatched.metadata(&[])).unwrap();
    let consumer: BaseConsumer = {
        let mut config: ClientConfig = kafka.consumer_config("bench");
        config.set("enable.auto.commit", "false");
        config.create().unwrap()
    };
    let requests =
        || kafka.count_requests(api::LIST_OFFSETS) + kafka.count_requests(api::OFFSET_FETCH);
    let snapshot = |cluster: &kafka_ops_core::kafka::KafkaCluster| -> Measured {
        kafka.track_requests();
        let started = Instant::now();
        let (lag, _) = runtime
            .block_on(group_lag(
                cluster,
                "bench",
                &ManualClock::new(),
                LagOptions::default(),
            ))
            .unwrap();
        let took = started.elapsed();
        assert_eq!(lag.partitions.len(), partitions.len());
        assert_eq!(lag.total_lag(), partitions.len() as u64);
        (took, requests())
    };
    // One unmeasured pass of each first: the first pass pays once for what a running exporter
    // or probe has already paid (the group's offsets reader and its coordinator, the naive
    // consumer's per-partition state). At 100 000 partitions the limit and the naive loop run
    // once, cold, as in the rounds below (their one-time costs are a fraction of a percent
    // there).
    snapshot(&cluster);
    if size < 100_000 {
        snapshot(&unbatched);
        naive_snapshot(&consumer, &partitions);
    }
    let (mut batched, mut limit, mut naive) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        batched.push(snapshot(&cluster));
        // The limit's cost grows with the square of partitions per request, the naive loop's
        // with partitions: one round of each is enough at 100 000.
        if round == 0 || size < 100_000 {
            limit.push(snapshot(&unbatched));
            kafka.track_requests();
            let started = Instant::now();
            let lag = naive_snapshot(&consumer, &partitions);
            naive.push((started.elapsed(), requests()));
            assert_eq!(lag.total_lag(), partitions.len() as u64);
        }
    }
    let (batched, limit, naive) = (median(batched), median(limit), median(naive));
    let cell = |(took, requests): Measured| format!("{took:>10.3?} ({requests:>6})");
    println!(
        "  {:>8}  {:>22}  {:>22}  {:>22}  {:>13.1}x  {:>12.2}x",
        partitions.len(),
        cell(batched),
        cell(limit),
        cell(naive),
        naive.0.as_secs_f64() / batched.0.as_secs_f64(),
        batched.0.as_secs_f64() / limit.0.as_secs_f64(),
    );
}
