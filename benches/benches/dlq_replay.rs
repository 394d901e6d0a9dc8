//! Side-by-side: replaying a dead-letter topic of 1M records (100 B values, 5 headers) to
//! another topic with kafka-ops' [`Replay`] and with a `kcat -C -e | kcat -P` pipe, on the
//! same cluster in the same run — the 3-broker mock cluster and, when `KAFKA_OPS_KAFKA_BOOTSTRAP`
//! names it, the real 3-node cluster; then the routing overhead per dead-lettered record (the
//! driver with the dead-letter layer, every record failing, against every record succeeding).
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench dlq_replay
//! ```
//!
//! The pipe copies keys and values only (kcat's producer reads no headers from a stream); the
//! replay also copies the 5 headers, adds 3 lineage headers and commits its progress so it can
//! resume: it does more per record. Knobs (environment): `KAFKA_OPS_BENCH_CLUSTERS` (`mock`,
//! `real` or both), `KAFKA_OPS_BENCH_RECORDS` (default 1 000 000), `KAFKA_OPS_BENCH_ROUTED`
//! (records for the routing overhead, default 20 000), `KAFKA_OPS_BENCH_REPLAY_SET`
//! (`key=value,...`: client settings for the replay only, to try producer settings).
//!
//! Each copy also reports its CPU per record, and where the brokers run on this machine (the
//! real cluster of the tests), the brokers' CPU per record during it: a copy that writes more
//! bytes costs the brokers more, and on a small machine they share its cores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_benches::BenchCluster;
use kafka_ops_core::Record;
use kafka_ops_core::dead_letter::Envelope;
use kafka_ops_core::handler::{HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{TestRecord, unique_name};
use kafka_ops_dlq::{DeadLetterLayer, Destination, Replay};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The mock cluster keeps at most 5 MB per partition (older records are dropped, like
/// retention): 64 partitions hold a million records with room to spare.
const PARTITIONS: i32 = 64;

fn count(cluster: &BenchCluster, topic: &str) -> i64 {
    let consumer: BaseConsumer = cluster.consumer_config("count").create().unwrap();
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
fn fill(runtime: &tokio::runtime::Runtime, cluster: &BenchCluster, topic: &str, records: u64) {
    let payload = vec![b'x'; 100];
    kafka_ops_benches::fill(runtime, cluster, topic, records, |i| {
        (0..5).fold(
            TestRecord::keyed(format!("k{i}"), payload.clone()),
            |record, h| record.header(format!("h{h}"), format!("value-{h}")),
        )
    });
}

/// One copy: how long it took, the copier's CPU time and, where the brokers run on this
/// machine, theirs.
#[derive(Clone, Copy)]
struct CopyRun {
    took: Duration,
    cpu: Duration,
    brokers_cpu: Option<Duration>,
}

/// Runs `copy` on `cluster` and accounts for it: `cpu` reads the copier's CPU time so far; the
/// brokers' only for the real cluster (the mock brokers are threads of this process).
fn accounted(
    cluster: &BenchCluster,
    cpu: impl Fn() -> Duration,
    copy: impl FnOnce() -> Duration,
) -> CopyRun {
    let brokers = || match cluster {
        BenchCluster::Real(..) => kafka_ops_benches::local_brokers_cpu_time(),
        BenchCluster::Mock(_) => None,
    };
    let (cpu_before, brokers_before) = (cpu(), brokers());
    let took = copy();
    let brokers_after = brokers();
    CopyRun {
        took,
        cpu: cpu().saturating_sub(cpu_before),
        brokers_cpu: brokers_before
            .zip(brokers_after)
            .map(|(before, after)| after.saturating_sub(before)),
    }
}

/// Microseconds of CPU per record over `runs`, as `copier; brokers` (brokers only where they run
/// on this machine).
fn cpu_per_record(runs: &[CopyRun], records: u64) -> String {
    let per = |total: Duration| total.as_secs_f64() * 1e6 / (records as f64 * runs.len() as f64);
    let own = per(runs.iter().map(|r| r.cpu).sum());
    match runs.iter().map(|r| r.brokers_cpu).sum::<Option<Duration>>() {
        Some(brokers) => format!("{own:.1} us; brokers {:.1} us", per(brokers)),
        None => format!("{own:.1} us"),
    }
}

fn kcat_copy(cluster: &BenchCluster, from: &str, to: &str) -> CopyRun {
    accounted(cluster, kafka_ops_benches::children_cpu_time, || {
        kcat_pipe(cluster, from, to)
    })
}

fn kcat_pipe(cluster: &BenchCluster, from: &str, to: &str) -> Duration {
    let b = cluster.bootstrap();
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
    cluster: &BenchCluster,
    from: &str,
    to: &str,
) -> CopyRun {
    let replay = Replay::new(from, unique_name("bench"))
        .to(Destination::Topic(to.into()))
        .allow(to)
        .batch_size(5_000);
    let mut config = cluster.client_config();
    // `KAFKA_OPS_BENCH_REPLAY_SET=key=value,key=value`: client settings for the replay only.
    if let Ok(settings) = std::env::var("KAFKA_OPS_BENCH_REPLAY_SET") {
        for setting in settings.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = setting.split_once('=').expect("key=value");
            config.set(key, value);
        }
    }
    accounted(cluster, kafka_ops_benches::cpu_time, || {
        let started = Instant::now();
        let report = runtime.block_on(replay.run(&config)).unwrap();
        let took = started.elapsed();
        assert_eq!(report.replayed, report.scanned);
        took
    })
}

/// Seconds to run `records` through the driver with the dead-letter layer, every record
/// failing permanently (`fail`) or none.
fn route(
    runtime: &tokio::runtime::Runtime,
    cluster: &BenchCluster,
    topic: &str,
    records: u64,
    fail: bool,
) -> Duration {
    let group = unique_name("route");
    let sink = Arc::new(KafkaDeadLetterSink::new(&cluster.client_config()).unwrap());
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
    config.ordering = kafka_ops_core::scheduler::Ordering::Unordered;
    let driver = Driver::new(cluster.consumer_config(&group), config, handler);
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
    for cluster in BenchCluster::chosen(&runtime) {
        measure(&runtime, &cluster, records, routed);
        cluster.clean_up(&runtime);
    }
}

fn measure(runtime: &tokio::runtime::Runtime, cluster: &BenchCluster, records: u64, routed: u64) {
    let topic = |name: &str| cluster.topic(runtime, name, PARTITIONS);
    let dlq = topic("orders.dlq");
    let copies = [
        topic("copy.kcat.1"),
        topic("copy.kcat.2"),
        topic("copy.replay.1"),
        topic("copy.replay.2"),
    ];
    let routed_topic = topic("routed");
    // The dead-letter layer's default topic for it.
    let routed_dlq = format!("{routed_topic}.dlq");
    cluster.exact_topic(runtime, &routed_dlq, PARTITIONS);
    fill(runtime, cluster, &dlq, records);
    fill(runtime, cluster, &routed_topic, routed);

    // A B B A, each copy to its own topic; the better of each pair counts.
    let kcat_first = kcat_copy(cluster, &dlq, &copies[0]);
    let our_runs = [
        replay_copy(runtime, cluster, &dlq, &copies[2]),
        replay_copy(runtime, cluster, &dlq, &copies[3]),
    ];
    let kcat_runs = [kcat_first, kcat_copy(cluster, &dlq, &copies[1])];
    for copy in &copies {
        assert_eq!(
            count(cluster, copy),
            records as i64,
            "{copy} holds every record"
        );
    }
    let kcat = kcat_runs.iter().map(|r| r.took).min().unwrap();
    let ours = our_runs.iter().map(|r| r.took).min().unwrap();
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!(
        "P3 replay of {records} records (100 B, 5 headers), {}, best of 2 (A B B A):",
        cluster.name()
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
    // The pipe's CPU is its two kcat processes'; on a machine that also runs the brokers, both
    // copies compete with them for the same cores.
    println!(
        "  CPU per record, mean of both runs: kcat pipe {}; replay {}",
        cpu_per_record(&kcat_runs, records),
        cpu_per_record(&our_runs, records)
    );

    // A B B A, the better of each pair: the first run also pays for warming the cluster up.
    let ok_first = route(runtime, cluster, &routed_topic, routed, false);
    let failing = route(runtime, cluster, &routed_topic, routed, true).min(route(
        runtime,
        cluster,
        &routed_topic,
        routed,
        true,
    ));
    let ok = ok_first.min(route(runtime, cluster, &routed_topic, routed, false));
    assert_eq!(count(cluster, &routed_dlq), 2 * routed as i64);
    let per = failing.saturating_sub(ok).as_secs_f64() / routed as f64;
    println!(
        "routing {routed} records through the driver with the dead-letter layer (best of 2, A B B A):"
    );
    println!(
        "  all processed: {:.2} s; all dead-lettered: {:.2} s; ratio {:.2}x; overhead {:.1} us per dead letter",
        ok.as_secs_f64(),
        failing.as_secs_f64(),
        failing.as_secs_f64() / ok.as_secs_f64(),
        per * 1e6
    );
}
