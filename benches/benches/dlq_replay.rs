//! Side-by-side: replaying a dead-letter topic of 1M records (100 B values, 5 headers) to
//! another topic with kafka-ops' [`Replay`] and with a `kcat -C -e | kcat -P` pipe, on the
//! same 3-broker mock cluster in the same run; then the routing overhead per dead-lettered
//! record (the driver with the dead-letter layer, every record failing, against every record
//! succeeding).
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench dlq_replay
//! ```
//!
//! The pipe copies keys and values only (kcat's producer reads no headers from a stream); the
//! replay also copies the 5 headers, adds 3 lineage headers and commits its progress so it can
//! resume: it does more per record. Knobs (environment): `KAFKA_OPS_BENCH_RECORDS` (default
//! 1 000 000), `KAFKA_OPS_BENCH_ROUTED` (records for the routing overhead, default 20 000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::Record;
use kafka_ops_core::handler::{HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_dlq::{DeadLetterLayer, Destination, Envelope, KafkaDeadLetterSink, Replay};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The mock cluster keeps at most 5 MB per partition (older records are dropped, like
/// retention): 64 partitions hold a million records with room to spare.
const PARTITIONS: i32 = 64;

fn count(kafka: &MockKafka, topic: &str) -> i64 {
    let consumer: BaseConsumer = kafka.consumer_config("count").create().unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// 100-byte values with 5 headers.
fn fill(runtime: &tokio::runtime::Runtime, kafka: &MockKafka, topic: &str, records: u64) {
    let payload = vec![b'x'; 100];
    kafka_ops_benches::fill(runtime, kafka, topic, records, |i| {
        (0..5).fold(
            TestRecord::keyed(format!("k{i}"), payload.clone()),
            |record, h| record.header(format!("h{h}"), format!("value-{h}")),
        )
    });
}

fn kcat_copy(kafka: &MockKafka, from: &str, to: &str) -> Duration {
    let b = kafka.bootstrap();
    let pipe = format!(
        "kcat -C -b {b} -t {from} -o beginning -e -q -K '\t' | kcat -P -b {b} -t {to} -K '\t'"
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(&pipe)
        .status()
        .expect("sh runs");
    let took = started.elapsed();
    assert!(
        status.success(),
        "kcat pipe failed ({status}); is kcat installed?"
    );
    took
}

fn replay_copy(
    runtime: &tokio::runtime::Runtime,
    kafka: &MockKafka,
    from: &str,
    to: &str,
) -> Duration {
    let replay = Replay::new(from, unique_name("bench"))
        .to(Destination::Topic(to.into()))
        .allow(to)
        .batch_size(5_000);
    let started = Instant::now();
    let report = runtime
        .block_on(replay.run(&kafka.client_config()))
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.replayed, report.scanned);
    took
}

/// Seconds to run `records` through the driver with the dead-letter layer, every record
/// failing permanently (`fail`) or none.
fn route(
    runtime: &tokio::runtime::Runtime,
    kafka: &MockKafka,
    topic: &str,
    records: u64,
    fail: bool,
) -> Duration {
    let group = unique_name("route");
    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let handler = HandlerBuilder::new()
        .layer(DeadLetterLayer::new(sink, Envelope::new(&group, "bench")))
        .handler(handler_fn(move |_r: &Record<'_>| async move {
            if fail {
                Err(HandlerError::permanent(std::io::Error::other(
                    "cannot parse",
                )))
            } else {
                Ok(Outcome::Processed)
            }
        }));
    let mut config = DriverConfig::new([topic]);
    config.max_in_flight = 4_096;
    config.ordering = kafka_ops_core::kafka::driver::Ordering::Unordered;
    let driver = Driver::new(kafka.consumer_config(&group), config, handler);
    let handle = driver.handle();
    let started = Instant::now();
    runtime.block_on(async {
        let run = tokio::spawn(driver.run());
        loop {
            let stats = handle.stats();
            if stats.processed + stats.dead_lettered >= records {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        handle.shutdown();
        run.await.unwrap().unwrap();
        took
    })
}

fn main() {
    let records = kafka_ops_benches::knob("KAFKA_OPS_BENCH_RECORDS", 1_000_000);
    let routed = kafka_ops_benches::knob("KAFKA_OPS_BENCH_ROUTED", 20_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kafka = MockKafka::start(3).unwrap();
    for topic in [
        "orders.dlq",
        "copy.kcat.1",
        "copy.kcat.2",
        "copy.replay.1",
        "copy.replay.2",
        "routed",
    ] {
        kafka.create_topic(topic, PARTITIONS).unwrap();
    }
    kafka.create_topic("routed.dlq", PARTITIONS).unwrap();
    fill(&runtime, &kafka, "orders.dlq", records);
    fill(&runtime, &kafka, "routed", routed);

    // A B B A, each copy to its own topic; the better of each pair counts.
    let mut kcat_runs = Vec::new();
    let mut our_runs = Vec::new();
    kcat_runs.push(kcat_copy(&kafka, "orders.dlq", "copy.kcat.1"));
    our_runs.push(replay_copy(&runtime, &kafka, "orders.dlq", "copy.replay.1"));
    our_runs.push(replay_copy(&runtime, &kafka, "orders.dlq", "copy.replay.2"));
    kcat_runs.push(kcat_copy(&kafka, "orders.dlq", "copy.kcat.2"));
    for topic in [
        "copy.kcat.1",
        "copy.kcat.2",
        "copy.replay.1",
        "copy.replay.2",
    ] {
        assert_eq!(
            count(&kafka, topic),
            records as i64,
            "{topic} holds every record"
        );
    }
    let kcat = *kcat_runs.iter().min().unwrap();
    let ours = *our_runs.iter().min().unwrap();
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!(
        "P3 replay of {records} records (100 B, 5 headers), 3-broker mock cluster, best of 2 (A B B A):"
    );
    println!(
        "  kcat -C -e | kcat -P : {:>10.0} records/s ({:.2} s)",
        rate(kcat),
        kcat.as_secs_f64()
    );
    println!(
        "  kafka-ops Replay     : {:>10.0} records/s ({:.2} s)",
        rate(ours),
        ours.as_secs_f64()
    );
    println!(
        "  ratio (replay / kcat pipe): {:.2}x (target >= 1.0x)",
        kcat.as_secs_f64() / ours.as_secs_f64()
    );

    let ok = route(&runtime, &kafka, "routed", routed, false);
    let failing = route(&runtime, &kafka, "routed", routed, true);
    assert_eq!(count(&kafka, "routed.dlq"), routed as i64);
    let per = failing.saturating_sub(ok).as_secs_f64() / routed as f64;
    println!("routing {routed} records through the driver with the dead-letter layer:");
    println!(
        "  all processed: {:.2} s; all dead-lettered: {:.2} s; ratio {:.2}x; overhead {:.1} us per dead letter",
        ok.as_secs_f64(),
        failing.as_secs_f64(),
        failing.as_secs_f64() / ok.as_secs_f64(),
        per * 1e6
    );
}
