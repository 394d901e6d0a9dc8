//! Side-by-side: consuming 1M records of 100 bytes with a raw rdkafka poll loop (no work per
//! record), through kafka-ops' driver with a handler that does nothing, and through the driver
//! with the full composition — dead-letter routing, idempotency over the memory store (keyed by
//! the `event-id` header), in-place retries — where 0.1% of the records fail once (transiently)
//! and pass on the retry. All three in the same run, on the 3-broker mock cluster and, when
//! `KAFKA_OPS_KAFKA_BOOTSTRAP` names it, on the real 3-node cluster.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench pipeline
//! ```
//!
//! Knobs (environment): `KAFKA_OPS_BENCH_CLUSTERS` (`mock`, `real` or both),
//! `KAFKA_OPS_BENCH_RECORDS` (default 1 000 000),
//! `KAFKA_OPS_BENCH_INFLIGHT` (the driver's `max_in_flight`, default 4 096),
//! `KAFKA_OPS_BENCH_UNORDERED` (set: unordered processing instead of per-partition order) and
//! `KAFKA_OPS_BENCH_ONLY` (`raw`, `driver` or `composition`: run only that contender, twice,
//! so a profiler sees nothing else; no ratios are printed then).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use kafka_ops_benches::{BenchCluster, cpu_time};
use kafka_ops_core::Record;
use kafka_ops_core::dead_letter::Envelope;
use kafka_ops_core::handler::{Handler, HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{TestRecord, unique_name};
use kafka_ops_dlq::DeadLetterLayer;
use kafka_ops_idempotency::IdempotencyLayer;
use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
use kafka_ops_idempotency::store::memory::MemoryStore;
use kafka_ops_recovery::{BackoffPolicy, RetryLayer, RetryPolicy};
use rdkafka::consumer::{BaseConsumer, Consumer};

const RECORDS: u64 = 1_000_000;
/// The mock cluster keeps at most 5 MB per partition (older records are dropped, like
/// retention): 64 partitions hold a million records.
const PARTITIONS: i32 = 64;

fn main() {
    let records = kafka_ops_benches::knob("KAFKA_OPS_BENCH_RECORDS", RECORDS);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for cluster in BenchCluster::chosen(&runtime) {
        measure(&runtime, &cluster, records);
        cluster.clean_up(&runtime);
    }
}

fn measure(runtime: &tokio::runtime::Runtime, cluster: &BenchCluster, records: u64) {
    let topic = cluster.topic(runtime, "pipeline", PARTITIONS);
    let payload = vec![b'x'; 100];
    kafka_ops_benches::fill(runtime, cluster, &topic, records, |i| {
        TestRecord::keyed(format!("k{i}"), payload.clone()).header("event-id", format!("e{i}"))
    });

    // Each contender runs twice, in the order A B C C B A, and its better run counts: the mock
    // cluster's own speed drifts during a run (it scans its logs to serve a fetch), and the
    // mirrored order gives every contender the same share of early and late.
    // Beside the wall time, the process's CPU time over each run (the mock brokers' included
    // there, the same work in every run; the real brokers run in their own processes).
    let mut raw = (Duration::MAX, Duration::MAX);
    let mut bare = raw;
    let mut composed = raw;
    let best = |a: (Duration, Duration), b: (Duration, Duration)| (a.0.min(b.0), a.1.min(b.1));
    let only = std::env::var("KAFKA_OPS_BENCH_ONLY").ok();
    let contender_of = |round: usize| match round {
        0 | 5 => "raw",
        1 | 4 => "driver",
        _ => "composition",
    };
    for round in 0..6 {
        if only
            .as_deref()
            .is_some_and(|only| only != contender_of(round))
        {
            continue;
        }
        let cpu_before = cpu_time();
        let (kept, wall) = match contender_of(round) {
            "raw" => (&mut raw, raw_loop(cluster, &topic, records)),
            "driver" => (
                &mut bare,
                runtime.block_on(bare_driver(cluster, &topic, records)),
            ),
            _ => (
                &mut composed,
                runtime.block_on(composition(cluster, &topic, records)),
            ),
        };
        *kept = best(*kept, (wall, cpu_time().saturating_sub(cpu_before)));
    }

    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!(
        "pipeline, {records} records x 100 B, {PARTITIONS} partitions, {} (best of 2, A B C C B A)",
        cluster.name()
    );
    for (name, (wall, cpu)) in [
        ("raw rdkafka poll loop          ", raw),
        ("kafka-ops driver, no-op handler", bare),
        ("kafka-ops full composition     ", composed),
    ] {
        if wall == Duration::MAX {
            continue;
        }
        println!(
            "  {name}: {wall:>9.3?} {:>8.0} rec/s   CPU {cpu:>8.3?}",
            rate(wall)
        );
    }
    if only.is_some() {
        return;
    }
    println!(
        "  throughput ratio driver/raw: {:.2}x; composition/raw: {:.2}x (target >= 0.95x)",
        rate(bare.0) / rate(raw.0),
        rate(composed.0) / rate(raw.0)
    );
    println!(
        "  records per CPU-second ratio driver/raw: {:.2}x; composition/raw: {:.2}x",
        raw.1.as_secs_f64() / bare.1.as_secs_f64(),
        raw.1.as_secs_f64() / composed.1.as_secs_f64()
    );
}

type Counted = (
    Arc<dyn Handler>,
    Arc<AtomicU64>,
    Arc<std::sync::OnceLock<Instant>>,
);

/// `work` wrapped to count finished records and note when the first one started.
fn counting(
    work: impl Fn(&Record<'_>) -> Result<Outcome, HandlerError> + Send + Sync + 'static,
) -> Counted {
    let done = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let handler = {
        let (done, first) = (done.clone(), first.clone());
        handler_fn(move |record: &Record<'_>| {
            first.get_or_init(Instant::now);
            let result = work(record);
            if result.is_ok() {
                done.fetch_add(1, AtomicOrdering::Relaxed);
            }
            async move { result }
        })
    };
    (Arc::new(handler), done, first)
}

/// Runs a driver with `handler` until `records` records are done; the time from the first
/// record to the last.
async fn timed_run(
    cluster: &BenchCluster,
    config: DriverConfig,
    handler: impl Handler + 'static,
    done: &AtomicU64,
    first: &std::sync::OnceLock<Instant>,
    records: u64,
) -> Duration {
    let driver = Driver::new(
        cluster.consumer_config(&unique_name("ours")),
        config,
        handler,
    );
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    while done.load(AtomicOrdering::Relaxed) < records {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = first.get().unwrap().elapsed();
    handle.shutdown();
    run.await.unwrap().unwrap();
    elapsed
}

/// A raw rdkafka `BaseConsumer` in a loop, counting messages.
fn raw_loop(cluster: &BenchCluster, topic: &str, records: u64) -> Duration {
    let consumer: BaseConsumer = cluster
        .consumer_config(&unique_name("raw"))
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = 0u64;
    let mut started = None;
    while seen < records {
        if let Some(Ok(_message)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    started.unwrap().elapsed()
}

fn driver_config(topic: &str) -> DriverConfig {
    let mut config = DriverConfig::new([topic]);
    config.max_in_flight = kafka_ops_benches::knob("KAFKA_OPS_BENCH_INFLIGHT", 4_096) as usize;
    if std::env::var("KAFKA_OPS_BENCH_UNORDERED").is_ok() {
        config.ordering = kafka_ops_core::scheduler::Ordering::Unordered;
    }
    config
}

/// The driver with a handler that does nothing.
async fn bare_driver(cluster: &BenchCluster, topic: &str, records: u64) -> Duration {
    let (counted, done, first) = counting(|_| Ok(Outcome::Processed));
    timed_run(
        cluster,
        driver_config(topic),
        counted,
        &done,
        &first,
        records,
    )
    .await
}

/// The full composition; 1 record in 1 000 fails once, transiently.
async fn composition(cluster: &BenchCluster, topic: &str, records: u64) -> Duration {
    let failed_once = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let (counted, done, first) = counting(move |record| {
        if record.offset.get() % 1_000 == 999
            && failed_once
                .lock()
                .unwrap()
                .insert((record.partition, record.offset.get()))
        {
            return Err(HandlerError::transient(std::io::Error::other("flaky")));
        }
        Ok(Outcome::Processed)
    });
    let sink = Arc::new(KafkaDeadLetterSink::new(&cluster.client_config()).unwrap());
    let group = unique_name("composed");
    let handler = HandlerBuilder::new()
        .layer(DeadLetterLayer::new(sink, Envelope::new(&group, "bench")))
        .layer(IdempotencyLayer::new(
            Arc::new(MemoryStore::new(2_000_000)),
            KeyPolicy::new(&group, HeaderKey("event-id".into())),
        ))
        .layer(RetryLayer::new(RetryPolicy::new(BackoffPolicy::constant(
            Duration::ZERO,
            3,
        ))))
        .handler(counted);
    timed_run(
        cluster,
        driver_config(topic),
        handler,
        &done,
        &first,
        records,
    )
    .await
}
