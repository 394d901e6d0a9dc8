//! Side-by-side: the lag of many consumer groups in one pass (`groups_lag`, what an exporter
//! runs every few seconds) against the same groups asked one after the other (`group_lag` in a
//! loop), for 50, 150 and 300 groups, on the 3-broker mock cluster and, when
//! `KAFKA_OPS_KAFKA_BOOTSTRAP` names it, on the real 3-node cluster.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench lag_groups
//! ```
//!
//! Prints, per size, the first pass, the median of the passes after it, the median of the loop,
//! loop/pass, and the process's threads after them. A pass's cost should follow its requests,
//! all in flight together, not the number of groups times a client's start-up: on the real
//! cluster committed offsets are asked of each coordinator for all its groups at once; on the
//! mock cluster (no `__consumer_offsets`) by a consumer of each group, made on first need and
//! kept, six threads or so each.
//! Knobs (environment): `KAFKA_OPS_BENCH_GROUPS`, comma-separated sizes (default
//! `50,150,300`); `KAFKA_OPS_BENCH_CLUSTERS` (`mock`, `real` or both).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::time::{Duration, Instant};

use kafka_ops_benches::{BenchCluster, median};
use kafka_ops_core::cluster::{LagOptions, group_lag, groups_lag};
use kafka_ops_core::testkit::{TestRecord, process_threads, unique_name};
use kafka_ops_core::{ManualClock, Offset, TopicPartition};

const PARTITIONS: i32 = 6;
const ROUNDS: usize = 5;

fn main() {
    let sizes: Vec<usize> = std::env::var("KAFKA_OPS_BENCH_GROUPS")
        .unwrap_or_else(|_| "50,150,300".into())
        .split(',')
        .map(|n| n.trim().parse().expect("a group count"))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for cluster in BenchCluster::chosen(&runtime) {
        println!(
            "lag of many groups, one pass vs group by group, {} partitions, {} (median of {ROUNDS} after a first pass)",
            PARTITIONS,
            cluster.name()
        );
        println!(
            "  {:>6}  {:>12}  {:>12}  {:>12}  {:>10}  {:>8}",
            "groups", "first pass", "pass", "loop", "loop/pass", "threads"
        );
        for size in &sizes {
            measure(&runtime, &cluster, *size);
        }
        cluster.clean_up(&runtime);
    }
}

fn measure(runtime: &tokio::runtime::Runtime, bench: &BenchCluster, size: usize) {
    let topic = bench.topic(runtime, &format!("bench-lag-groups-{size}"), PARTITIONS);
    kafka_ops_benches::fill(runtime, bench, &topic, 600, |i| {
        TestRecord::value("x").to_partition(i32::try_from(i).unwrap() % PARTITIONS)
    });
    let run = unique_name("bench-group");
    let groups: Vec<String> = (0..size).map(|i| format!("{run}-{i}")).collect();
    let commits: Vec<(TopicPartition, Offset)> = (0..PARTITIONS)
        .map(|p| {
            (
                TopicPartition::new(topic.as_str(), p),
                Offset::new(50).unwrap(),
            )
        })
        .collect();
    for group in &groups {
        bench.commit(runtime, group, &commits);
    }
    let cluster = bench.cluster().with_timeout(Duration::from_secs(60));
    let clock = ManualClock::new();
    let options = LagOptions::default();
    let pass = || {
        let started = Instant::now();
        let lag = runtime
            .block_on(groups_lag(&cluster, &groups, &clock, options))
            .unwrap();
        assert!(lag.failed.is_empty(), "{:?}", lag.failed);
        assert_eq!(lag.groups.len(), size);
        started.elapsed()
    };
    let group_by_group = || {
        let started = Instant::now();
        for group in &groups {
            runtime
                .block_on(group_lag(&cluster, group, &clock, options))
                .unwrap();
        }
        started.elapsed()
    };
    let first = pass();
    let mut passes = Vec::new();
    let mut loops = Vec::new();
    for _ in 0..ROUNDS {
        passes.push(pass());
        loops.push(group_by_group());
    }
    let (passed, looped) = (median(passes), median(loops));
    println!(
        "  {size:>6}  {:>9.1} ms  {:>9.1} ms  {:>9.1} ms  {:>9.1}x  {:>8}",
        first.as_secs_f64() * 1e3,
        passed.as_secs_f64() * 1e3,
        looped.as_secs_f64() * 1e3,
        looped.as_secs_f64() / passed.as_secs_f64(),
        process_threads().map_or_else(|| "-".to_string(), |n| n.to_string())
    );
}
