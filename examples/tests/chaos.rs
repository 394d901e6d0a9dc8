//! The chaos suite: the reference consumer, as a process, over 100 000 orders (10% repeated
//! event ids, 1% poison, 5% of downstream calls failing) while the cluster misbehaves — brokers
//! going down and up, Produce and OffsetCommit requests failing, responses delayed — and the
//! consumer itself is killed with SIGKILL at least ten times at random points and restarted.
//! Its side effect is one row per event in PostgreSQL, written through the idempotency inbox.
//!
//! At the end every record is accounted for: a row (exactly one per event id) or, for poison, a
//! dead letter; none missing, none doubled. Then the fix is deployed (the consumer learns the
//! legacy format), the dead-letter topic is replayed twice, and every event id — poison ones
//! included — still has exactly one row.
//!
//! The mock cluster lives in this process, so killing the consumer does not take it down.
//! `KAFKA_OPS_CHAOS_RECORDS` and `KAFKA_OPS_CHAOS_KILLS` scale the run (defaults 100 000 and 12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::testkit::{MockKafka, unique_name};
use kafka_ops_core::{IsolationLevel, TopicPartition};
use kafka_ops_dlq::headers;
use kafka_ops_dlq::replay::Replay;
use kafka_ops_dlq::retry::RetryTiers;
use kafka_ops_examples::orders::{Workload, event_id};
use kafka_ops_idempotency::conformance::{postgres_client, postgres_config};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

mod support;
use support::example_binary;

const PARTITIONS: i32 = 12;
const TIERS: [&str; 2] = ["300ms", "600ms"];

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is a number"))
    })
}

/// The consumer processes of one run: same topic, group and table; each run's output goes to
/// its own log file, shown when something fails.
struct Consumers {
    bootstrap: String,
    topic: String,
    group: String,
    table: String,
    logs: PathBuf,
    started: u32,
}

/// A consumer process, killed if it is still running when dropped: a failing assertion must
/// not leave consumers running after the test.
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Consumers {
    fn spawn(&mut self, extra: &[&str]) -> (KillOnDrop, PathBuf) {
        self.started += 1;
        let log = self.logs.join(format!("consumer-{}.log", self.started));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(example_binary("reference-consumer"))
            .args(["--bootstrap", &self.bootstrap])
            .args(["--topic", &self.topic, "--group", &self.group])
            .args([
                "--store",
                &postgres_config(),
                "--charges-table",
                &self.table,
            ])
            // Short leases: a killed instance's events are taken over soon after the restart.
            .args([
                "--lease",
                "3s",
                "--retries",
                "1",
                "--retry-tiers",
                &TIERS.join(","),
            ])
            .args(["--failure-rate", "0.05", "--latency", "0ms"])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        (KillOnDrop(child), log)
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// SIGTERM, then wait for the graceful exit (bounded).
fn terminate(mut child: KillOnDrop, log: &Path) -> String {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit 60 s after SIGTERM:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(log).unwrap();
    assert!(
        status.success(),
        "exit {status} after SIGTERM:\n{}",
        tail(log)
    );
    output
}

/// Rows so far (0 until the first consumer has created the table).
async fn row_count(client: &tokio_postgres::Client, table: &str) -> u64 {
    match client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
    {
        Ok(row) => row.get::<_, i64>(0) as u64,
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(error) => panic!("counting rows: {error}"),
    }
}

async fn rows_per_event(client: &tokio_postgres::Client, table: &str) -> HashMap<String, i64> {
    client
        .query(
            &format!("SELECT event_id, count(*) FROM {table} GROUP BY event_id"),
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The events with more than one row (with their count), and the `expected` events with none.
fn doubled_and_missing<'a>(
    rows: &'a HashMap<String, i64>,
    expected: impl IntoIterator<Item = &'a String>,
) -> (Vec<(&'a String, &'a i64)>, Vec<&'a String>) {
    let doubled = rows.iter().filter(|(_, n)| **n > 1).collect();
    let missing = expected
        .into_iter()
        .filter(|e| !rows.contains_key(*e))
        .collect();
    (doubled, missing)
}

/// Whether `group` has committed the end of every partition of `topics`.
async fn caught_up(kafka: &MockKafka, group: &str, topics: &[String]) -> bool {
    let cluster = kafka.cluster().unwrap();
    let partitions: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|t| (0..PARTITIONS).map(move |p| TopicPartition::new(t.as_str(), p)))
        .collect();
    let Ok(ends) = cluster
        .watermarks(&partitions, IsolationLevel::ReadUncommitted)
        .await
    else {
        return false;
    };
    let Ok(committed) = cluster.committed_offsets(group, &partitions).await else {
        return false;
    };
    let committed: HashMap<TopicPartition, i64> = committed
        .into_iter()
        .filter_map(|(tp, c)| Some((tp, c.ok()??.get())))
        .collect();
    ends.into_iter().all(|(tp, marks)| match marks {
        Ok(marks) => marks.high.get() == committed.get(&tp).copied().unwrap_or(0),
        Err(_) => false,
    })
}

/// Waits until the consumer has committed everything, twice in a row a second apart (a
/// retry-tier record may still be on its way when the first check passes).
async fn wait_until_drained(
    kafka: &MockKafka,
    group: &str,
    topics: &[String],
    child: &mut Child,
    log: &Path,
) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut in_a_row = 0;
    while in_a_row < 2 {
        assert!(
            Instant::now() < deadline,
            "not drained after 10 min:\n{}",
            tail(log)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the consumer exited:\n{}",
            tail(log)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        in_a_row = if caught_up(kafka, group, topics).await {
            in_a_row + 1
        } else {
            0
        };
    }
}

/// What the fault injector did.
#[derive(Debug, Default)]
struct Faults {
    broker_outages: AtomicU64,
    produce_error_bursts: AtomicU64,
    commit_error_bursts: AtomicU64,
    slow_brokers: AtomicU64,
}

/// Two to five errors drawn from `errors`, for the next requests of one API.
fn burst(rng: &mut fastrand::Rng, errors: &[RDKafkaRespErr]) -> Vec<RDKafkaRespErr> {
    (0..rng.usize(2..6))
        .map(|_| errors[rng.usize(..errors.len())])
        .collect()
}

/// Injects a random fault every 0.3–1.5 s until `stop`, then leaves the cluster healthy.
async fn inject_faults(
    kafka: Arc<MockKafka>,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
    seed: u64,
) {
    use RDKafkaRespErr::*;
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1_500))).await;
        let broker = rng.i32(1..=kafka.brokers());
        match rng.u8(0..4) {
            0 => {
                kafka.broker_down(broker).unwrap();
                tokio::time::sleep(Duration::from_millis(rng.u64(300..1_500))).await;
                kafka.broker_up(broker).unwrap();
                faults.broker_outages.fetch_add(1, Ordering::SeqCst);
            }
            1 => {
                let errors = [
                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                ];
                kafka.request_errors(RDKafkaApiKey::Produce, &burst(&mut rng, &errors));
                faults.produce_error_bursts.fetch_add(1, Ordering::SeqCst);
            }
            2 => {
                let errors = [
                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                    RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                ];
                kafka.request_errors(RDKafkaApiKey::OffsetCommit, &burst(&mut rng, &errors));
                faults.commit_error_bursts.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                kafka
                    .broker_round_trip_time(broker, Duration::from_millis(rng.u64(20..200)))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(rng.u64(500..2_000))).await;
                kafka
                    .broker_round_trip_time(broker, Duration::ZERO)
                    .unwrap();
                faults.slow_brokers.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_exactly_once_under_chaos() {
    let records = setting("KAFKA_OPS_CHAOS_RECORDS", 100_000);
    let kills = setting("KAFKA_OPS_CHAOS_KILLS", 12).max(10);
    let seed = setting("KAFKA_OPS_CHAOS_SEED", fastrand::u64(..));
    println!("chaos: seed {seed} (KAFKA_OPS_CHAOS_SEED repeats the fault schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let kafka = Arc::new(MockKafka::start(3).unwrap());
    let topic = unique_name("orders");
    let dlq = format!("{topic}.dlq");
    let tiers = RetryTiers::new(TIERS.iter().map(|t| humantime::parse_duration(t).unwrap()))
        .unwrap()
        .topics(&topic);
    for name in std::iter::once(&topic).chain(&tiers).chain([&dlq]) {
        kafka.create_topic(name, PARTITIONS).unwrap();
    }
    let consumed: Vec<String> = std::iter::once(topic.clone())
        .chain(tiers.clone())
        .collect();

    // The workload: what each record is, and where it landed.
    let workload = Workload {
        duplicate_rate: 0.10,
        legacy_rate: 0.01,
    };
    let written = kafka
        .produce(&topic, (0..records).map(|i| workload.record(i)))
        .await
        .unwrap();
    let mut good_events = BTreeSet::new();
    let mut poison_events = BTreeSet::new();
    let mut poison_records = BTreeSet::new();
    for (i, &(partition, offset)) in written.iter().enumerate() {
        let event = workload.event(i as u64);
        if workload.is_legacy(event) {
            poison_events.insert(event_id(event));
            poison_records.insert((partition, offset.get()));
        } else {
            good_events.insert(event_id(event));
        }
    }
    let duplicates = records - (good_events.len() + poison_events.len()) as u64;
    println!(
        "chaos: {records} records, {} distinct events ({duplicates} repeated ids), {} poison records",
        good_events.len() + poison_events.len(),
        poison_records.len()
    );

    let client = postgres_client().await;
    // Kept when the test fails, for the consumers' own account of what happened.
    let logs = std::env::temp_dir().join(unique_name("chaos-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    println!("chaos: consumer logs in {}", logs.display());
    let mut consumers = Consumers {
        bootstrap: kafka.bootstrap().to_string(),
        topic: topic.clone(),
        group: unique_name("chaos"),
        table: unique_name("chaos_charges").replace('-', "_"),
        logs: logs.clone(),
        started: 0,
    };

    // Faults all along the killing phase.
    let stop = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(Faults::default());
    let injector = tokio::spawn(inject_faults(
        kafka.clone(),
        stop.clone(),
        faults.clone(),
        seed,
    ));

    // Kill k of K comes once the k/(K+1) share of the rows exists, plus a random moment: kills
    // spread over the whole stream, each in the middle of work.
    let expected_rows = good_events.len() as u64;
    let mut unexpected_exits = 0;
    for kill in 1..=kills {
        let (mut child, mut log) = consumers.spawn(&[]);
        let threshold = expected_rows * kill / (kills + 1);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if row_count(&client, &consumers.table).await >= threshold {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                // Not one of ours: a crash under faults. Count it, restart, go on.
                unexpected_exits += 1;
                println!("chaos: consumer exited on its own:\n{}", tail(&log));
                (child, log) = consumers.spawn(&[]);
            }
            assert!(
                Instant::now() < deadline,
                "no progress to {threshold} rows:\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..500))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    injector.await.unwrap();
    let rows_at_last_kill = row_count(&client, &consumers.table).await;

    // The last instance runs until everything is committed, then stops gracefully.
    let (mut last, log) = consumers.spawn(&[]);
    wait_until_drained(&kafka, &consumers.group, &consumed, &mut last, &log).await;
    let summary = terminate(last, &log);
    assert!(summary.contains("done in"), "{}", tail(&log));

    let mut tiered = 0;
    for tier in &tiers {
        tiered += kafka.read_all(tier).await.unwrap().len();
    }
    assert!(
        tiered > 0,
        "transient failures went through the retry tiers"
    );
    let rows = rows_per_event(&client, &consumers.table).await;
    let (doubled, missing) = doubled_and_missing(&rows, &good_events);
    let poison_with_rows: Vec<_> = poison_events
        .iter()
        .filter(|e| rows.contains_key(*e))
        .collect();
    let mut dead_letters: BTreeMap<(i32, i64), u32> = BTreeMap::new();
    let dlq_records = kafka.read_all(&dlq).await.unwrap();
    for record in &dlq_records {
        let info = headers::parse(&record.headers);
        assert_eq!(info.original_topic.as_deref(), Some(topic.as_str()));
        let origin = (
            info.original_partition.unwrap(),
            info.original_offset.unwrap(),
        );
        *dead_letters.entry(origin).or_default() += 1;
    }
    let dead_lettered: BTreeSet<(i32, i64)> = dead_letters.keys().copied().collect();
    let copies: u32 = dead_letters.values().map(|n| n - 1).sum();
    println!(
        "chaos: {} kills (SIGKILL) + {unexpected_exits} exits on their own; faults: {} broker outages, \
         {} Produce error bursts, {} OffsetCommit error bursts, {} slow brokers; {rows_at_last_kill} rows \
         at the last kill; {tiered} records through the retry tiers",
        kills,
        faults.broker_outages.load(Ordering::SeqCst),
        faults.produce_error_bursts.load(Ordering::SeqCst),
        faults.commit_error_bursts.load(Ordering::SeqCst),
        faults.slow_brokers.load(Ordering::SeqCst),
    );
    println!(
        "chaos: {} rows for {} good events ({} doubled, {} missing); {} dead letters for {} poison \
         records ({} written twice by a killed instance, {} not poison)",
        rows.values().sum::<i64>(),
        good_events.len(),
        doubled.len(),
        missing.len(),
        dlq_records.len(),
        poison_records.len(),
        copies,
        dead_lettered.difference(&poison_records).count(),
    );
    assert!(
        doubled.is_empty(),
        "events with more than one row: {doubled:?}"
    );
    assert!(missing.is_empty(), "good events without a row: {missing:?}");
    assert!(
        poison_with_rows.is_empty(),
        "poison charged: {poison_with_rows:?}"
    );
    assert_eq!(
        dead_lettered, poison_records,
        "the dead letters are exactly the poison records"
    );

    // The fix: a consumer that reads the legacy format. The dead letters go home twice (an
    // operator running the replay again); every event still ends up with exactly one row.
    let config = kafka.client_config();
    for round in 1..=2 {
        let report = Replay::new(dlq.as_str(), format!("{}-fix-{round}", consumers.group))
            .run(&config)
            .await
            .unwrap();
        assert_eq!(report.replayed, dlq_records.len() as u64, "{report:?}");
    }
    let (mut fixed, log) = consumers.spawn(&["--accept-legacy-orders"]);
    wait_until_drained(&kafka, &consumers.group, &consumed, &mut fixed, &log).await;
    terminate(fixed, &log);
    let rows = rows_per_event(&client, &consumers.table).await;
    let all_events: BTreeSet<&String> = good_events.iter().chain(&poison_events).collect();
    let (doubled, missing) = doubled_and_missing(&rows, all_events.iter().copied());
    println!(
        "chaos: after the fix and two replays of {} dead letters: {} rows for {} events ({} doubled, {} missing)",
        dlq_records.len(),
        rows.values().sum::<i64>(),
        all_events.len(),
        doubled.len(),
        missing.len()
    );
    assert!(
        doubled.is_empty(),
        "events with more than one row after the replays: {doubled:?}"
    );
    assert!(
        missing.is_empty(),
        "events without a row after the replays: {missing:?}"
    );
    assert_eq!(rows.len(), all_events.len());

    client
        .batch_execute(&format!("DROP TABLE {}", consumers.table))
        .await
        .unwrap();
    std::fs::remove_dir_all(&logs).unwrap();
}
