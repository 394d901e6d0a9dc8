//! The pure lag engine over one million partitions: offset lag, group totals and verdict, and a
//! monitor round (Burrow windows and time-lag tables).
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench lag_engine
//! ```
//!
//! Criterion reports throughput in elements (partitions) per second; ns per partition is its
//! inverse.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kafka_ops_core::lag::monitor::{LagMonitor, LagMonitorConfig};
use kafka_ops_core::lag::verdict::{LagThresholds, judge};
use kafka_ops_core::lag::{GroupLag, PartitionLag};
use kafka_ops_core::{Offset, Timestamp, TopicPartition, Watermarks};
use std::hint::black_box;

const PARTITIONS: usize = 1_000_000;

struct Input {
    partitions: Vec<TopicPartition>,
    committed: Vec<Option<Offset>>,
    marks: Vec<Option<Watermarks>>,
}

fn input(round: i64) -> Input {
    let topics: Vec<std::sync::Arc<str>> =
        (0..1_000).map(|t| format!("topic-{t}").into()).collect();
    let mut partitions = Vec::with_capacity(PARTITIONS);
    let mut committed = Vec::with_capacity(PARTITIONS);
    let mut marks = Vec::with_capacity(PARTITIONS);
    for i in 0..PARTITIONS {
        partitions.push(TopicPartition {
            topic: topics[i % 1_000].clone(),
            partition: (i / 1_000) as i32,
        });
        let end = 10_000 + (i as i64 % 977) + round * 100;
        // Every 50th partition never committed; every 97th lost records to retention.
        committed
            .push((i % 50 != 0).then(|| Offset::new(end - (i as i64 % 313) - round * 10).unwrap()));
        let low = if i % 97 == 0 { end - 5 } else { 0 };
        marks.push(Some(Watermarks {
            low: Offset::new(low).unwrap(),
            high: Offset::new(end).unwrap(),
        }));
    }
    Input {
        partitions,
        committed,
        marks,
    }
}

fn rows(input: &Input) -> Vec<PartitionLag> {
    input
        .partitions
        .iter()
        .zip(&input.committed)
        .zip(&input.marks)
        .map(|((tp, c), m)| PartitionLag::compute(tp, *c, *m))
        .collect()
}

fn engine(c: &mut Criterion) {
    let first = input(0);
    let mut group = c.benchmark_group("lag_engine_1M_partitions");
    group.sample_size(10);
    group.throughput(Throughput::Elements(PARTITIONS as u64));
    group.bench_function("offset_lag", |b| b.iter(|| black_box(rows(&first))));
    let report = GroupLag::new("g", Timestamp::from_millis(0), rows(&first));
    group.bench_function("totals_and_verdict", |b| {
        b.iter(|| {
            let topics = report.topics();
            let verdict = judge(&report, &[], None, &LagThresholds::default());
            black_box((topics, verdict))
        })
    });
    let second = input(1);
    group.bench_function("monitor_round", |b| {
        b.iter_batched(
            || {
                let mut monitor = LagMonitor::new(LagMonitorConfig::default());
                let mut warm = GroupLag::new("g", Timestamp::from_millis(0), rows(&first));
                monitor.observe(&mut warm).unwrap();
                (
                    monitor,
                    GroupLag::new("g", Timestamp::from_millis(60_000), rows(&second)),
                )
            },
            |(mut monitor, mut snapshot)| {
                monitor.observe(&mut snapshot).unwrap();
                let verdict = monitor.verdict(&snapshot, snapshot.taken_at);
                black_box(verdict)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
