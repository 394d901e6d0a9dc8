//! Side-by-side: a lag snapshot of 10 000 partitions on a 3-broker mock cluster, kafka-ops'
//! batched path against the naive loop of per-partition `fetch_watermarks`, in the same run.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench lag_snapshot
//! ```
//!
//! Prints the median of each, the ratio (target ≥ 20×) and how many broker requests each made.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{LagOptions, MetadataQuery, group_lag};
use kafka_ops_core::lag::{GroupLag, PartitionLag};
use kafka_ops_core::testkit::{MockKafka, TestRecord, api};
use kafka_ops_core::{ManualClock, Offset, SystemClock, TopicPartition, Watermarks};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, TopicPartitionList};

const TOPICS: i32 = 50;
const PARTITIONS_PER_TOPIC: i32 = 200;
const ROUNDS: usize = 3;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The naive path: one committed-offsets request, then `fetch_watermarks` per partition.
fn naive_snapshot(consumer: &BaseConsumer, partitions: &[TopicPartition]) -> GroupLag {
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for tp in partitions {
        list.add_partition(&tp.topic, tp.partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(30))
        .unwrap();
    let rows = partitions
        .iter()
        .map(|tp| {
            let (low, high) = consumer
                .fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(10))
                .unwrap();
            let offset = committed
                .find_partition(&tp.topic, tp.partition)
                .and_then(|e| e.offset().to_raw())
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kafka = MockKafka::start(3).unwrap();
    let mut partitions = Vec::new();
    for t in 0..TOPICS {
        let topic = format!("bench-{t}");
        kafka.create_topic(&topic, PARTITIONS_PER_TOPIC).unwrap();
        for p in 0..PARTITIONS_PER_TOPIC {
            partitions.push(TopicPartition::new(topic.as_str(), p));
        }
    }
    // Some data on every topic, and a commit on every partition.
    runtime.block_on(async {
        for t in 0..TOPICS {
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
        .with_timeout(Duration::from_secs(60));
    runtime.block_on(cluster.metadata(&[])).unwrap();
    let consumer: BaseConsumer = {
        let mut config: ClientConfig = kafka.consumer_config("bench");
        config.set("enable.auto.commit", "false");
        config.create().unwrap()
    };

    let mut batched = Vec::new();
    let mut naive = Vec::new();
    let mut batched_requests = 0;
    let mut naive_requests = 0;
    for _ in 0..ROUNDS {
        kafka.track_requests();
        let started = Instant::now();
        let (lag, _) = runtime
            .block_on(group_lag(
                &cluster,
                "bench",
                &ManualClock::new(),
                LagOptions::default(),
            ))
            .unwrap();
        batched.push(started.elapsed());
        assert_eq!(lag.partitions.len(), partitions.len());
        assert_eq!(lag.total_lag(), partitions.len() as u64);
        batched_requests =
            kafka.count_requests(api::LIST_OFFSETS) + kafka.count_requests(api::OFFSET_FETCH);

        kafka.track_requests();
        let started = Instant::now();
        let lag = naive_snapshot(&consumer, &partitions);
        naive.push(started.elapsed());
        assert_eq!(lag.total_lag(), partitions.len() as u64);
        naive_requests =
            kafka.count_requests(api::LIST_OFFSETS) + kafka.count_requests(api::OFFSET_FETCH);
    }
    let _ = SystemClock;
    stages(&runtime, &cluster, &partitions);
    let (batched, naive) = (median(batched), median(naive));
    let ratio = naive.as_secs_f64() / batched.as_secs_f64();
    println!(
        "lag snapshot, {} partitions on 3 brokers, median of {ROUNDS} rounds",
        partitions.len()
    );
    println!(
        "  batched (kafka-ops group_lag): {batched:>10.3?}  {batched_requests:>6} ListOffsets+OffsetFetch requests"
    );
    println!(
        "  naive fetch_watermarks loop  : {naive:>10.3?}  {naive_requests:>6} ListOffsets+OffsetFetch requests"
    );
    println!("  ratio naive/batched          : {ratio:.1}x (target >= 20x)");
}

#[allow(dead_code)]
fn stages(
    runtime: &tokio::runtime::Runtime,
    cluster: &kafka_ops_core::kafka::KafkaCluster,
    partitions: &[TopicPartition],
) {
    use kafka_ops_core::cluster::{GroupQuery, OffsetQuery};
    let t = Instant::now();
    runtime.block_on(cluster.group_offsets("bench")).unwrap();
    println!("group_offsets {:?}", t.elapsed());
    let t = Instant::now();
    runtime.block_on(cluster.metadata(&[])).unwrap();
    println!("metadata {:?}", t.elapsed());
    for n in [100usize, 1000, 3000, 10000] {
        let t = Instant::now();
        runtime
            .block_on(cluster.committed_offsets("bench", &partitions[..n]))
            .unwrap();
        println!("committed {n}: {:?}", t.elapsed());
        let t = Instant::now();
        runtime
            .block_on(cluster.watermarks(&partitions[..n], Default::default()))
            .unwrap();
        println!("watermarks {n}: {:?}", t.elapsed());
    }
    let t = Instant::now();
    runtime
        .block_on(cluster.watermarks(partitions, Default::default()))
        .unwrap();
    println!("watermarks {:?}", t.elapsed());
}
