//! Side-by-side: consuming 1M records of 100 bytes from a 3-broker mock cluster with a raw
//! rdkafka poll loop (no work per record) and through kafka-ops' driver, in the same run.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench pipeline
//! ```
//!
//! Knobs (environment): `KAFKA_OPS_BENCH_RECORDS` (default 1 000 000),
//! `KAFKA_OPS_BENCH_INFLIGHT` (the driver's `max_in_flight`, default 4 096) and
//! `KAFKA_OPS_BENCH_UNORDERED` (set: unordered processing instead of per-partition order).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use kafka_ops_core::Record;
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use rdkafka::consumer::{BaseConsumer, Consumer};

const RECORDS: u64 = 1_000_000;
/// The mock cluster keeps at most 5 MB per partition (older records are dropped, like
/// retention): 64 partitions hold a million records.
const PARTITIONS: i32 = 64;

fn main() {
    let records: u64 = std::env::var("KAFKA_OPS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RECORDS);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kafka = MockKafka::start(3).unwrap();
    kafka.create_topic("pipeline", PARTITIONS).unwrap();
    let payload = vec![b'x'; 100];
    kafka_ops_benches::fill(&runtime, &kafka, "pipeline", records, |i| {
        TestRecord::keyed(format!("k{i}"), payload.clone())
    });

    // Raw: a BaseConsumer in a loop, counting messages.
    let raw = {
        let consumer: BaseConsumer = kafka.consumer_config(&unique_name("raw")).create().unwrap();
        consumer.subscribe(&["pipeline"]).unwrap();
        let mut seen = 0u64;
        let mut started = None;
        while seen < records {
            if let Some(Ok(_message)) = consumer.poll(Duration::from_millis(100)) {
                started.get_or_insert_with(Instant::now);
                seen += 1;
            }
        }
        started.unwrap().elapsed()
    };

    // kafka-ops: the driver with a handler that does nothing.
    let ours = runtime.block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        let first = Arc::new(std::sync::OnceLock::<Instant>::new());
        let handler = {
            let (done, first) = (done.clone(), first.clone());
            handler_fn(move |_record: &Record<'_>| {
                first.get_or_init(Instant::now);
                done.fetch_add(1, AtomicOrdering::Relaxed);
                async { Ok(Outcome::Processed) }
            })
        };
        let mut config = DriverConfig::new(["pipeline"]);
        config.max_in_flight = std::env::var("KAFKA_OPS_BENCH_INFLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4_096);
        if std::env::var("KAFKA_OPS_BENCH_UNORDERED").is_ok() {
            config.ordering = kafka_ops_core::kafka::driver::Ordering::Unordered;
        }
        let driver = Driver::new(kafka.consumer_config(&unique_name("ours")), config, handler);
        let handle = driver.handle();
        let run = tokio::spawn(driver.run());
        while done.load(AtomicOrdering::Relaxed) < records {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = first.get().unwrap().elapsed();
        handle.shutdown();
        run.await.unwrap().unwrap();
        elapsed
    });
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!("pipeline, {records} records x 100 B, {PARTITIONS} partitions on 3 brokers");
    println!(
        "  raw rdkafka poll loop : {raw:>10.3?}  {:>10.0} rec/s",
        rate(raw)
    );
    println!(
        "  kafka-ops driver      : {ours:>10.3?}  {:>10.0} rec/s",
        rate(ours)
    );
    println!(
        "  throughput ratio ours/raw: {:.2}x (target >= 0.95x)",
        rate(ours) / rate(raw)
    );
}
