//! The chaos suite's run, whatever the cluster: the reference consumer as a process over a
//! workload of orders (10% repeated event ids, 1% poison, 5% of downstream calls failing),
//! SIGKILLed again and again while a fault injector works on the cluster; its side effect is
//! one row per event in PostgreSQL through the idempotency inbox. At the end every record is
//! accounted for — a row, exactly one per event id, or for poison a dead letter — then the fix
//! is deployed, the dead-letter topic is replayed twice, and every event still has one row.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    dead_code
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::dead_letter::headers;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::testkit::{MockKafka, RealKafka, TestRecord, unique_name};
use kafka_ops_core::{IsolationLevel, Offset, OwnedRecord, TopicPartition};
use kafka_ops_dlq::Replay;
use kafka_ops_dlq::RetryTiers;
use kafka_ops_examples::orders::{Workload, event_id};
use kafka_ops_idempotency::conformance::{postgres_client, postgres_config};
use rdkafka::ClientConfig;

#[path = "../support/mod.rs"]
mod support;
use support::example_binary;

pub(crate) const PARTITIONS: i32 = 12;
const TIERS: [&str; 2] = ["300ms", "600ms"];

/// A number from the environment, or `default`.
pub(crate) fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is a number"))
    })
}

/// The cluster a run uses.
pub(crate) enum Target {
    /// librdkafka's mock cluster, in this process (killing the consumer leaves it up).
    Mock(Arc<MockKafka>),
    /// The real cluster, held exclusively (its nodes are killed).
    Real(Arc<RealKafka>),
}

impl Target {
    fn bootstrap(&self) -> String {
        match self {
            Target::Mock(kafka) => kafka.bootstrap().to_string(),
            Target::Real(kafka) => kafka.bootstrap().to_string(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        match self {
            Target::Mock(kafka) => kafka.client_config(),
            Target::Real(kafka) => kafka.client_config(),
        }
    }

    fn cluster(&self) -> KafkaCluster {
        match self {
            Target::Mock(kafka) => kafka.cluster().unwrap(),
            Target::Real(kafka) => kafka.cluster(),
        }
    }

    async fn create_topic(&self, name: &str) {
        match self {
            Target::Mock(kafka) => kafka.create_topic(name, PARTITIONS).unwrap(),
            Target::Real(kafka) => kafka.create_topic(name, PARTITIONS).await.unwrap(),
        }
    }

    async fn produce(&self, topic: &str, records: Vec<TestRecord>) -> Vec<(i32, Offset)> {
        match self {
            Target::Mock(kafka) => kafka.produce(topic, records).await.unwrap(),
            Target::Real(kafka) => kafka.produce(topic, records).await.unwrap(),
        }
    }

    async fn read_all(&self, topic: &str) -> Vec<OwnedRecord> {
        match self {
            Target::Mock(kafka) => kafka.read_all(topic).await.unwrap(),
            Target::Real(kafka) => kafka.read_all(topic).await.unwrap(),
        }
    }
}

/// Which rebalance protocol the consumers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The classic protocol, with a short session.
    Classic,
    /// KIP-848 (`group.protocol=consumer`): the broker owns the session.
    Consumer,
}

/// A fault injector: runs until told to stop, leaves the cluster healthy, and says what it did.
pub(crate) type Injector =
    Box<dyn FnOnce(Arc<AtomicBool>) -> Pin<Box<dyn Future<Output = String> + Send>>>;

/// How big a run is.
pub(crate) struct Plan {
    pub records: u64,
    pub kills: u64,
    pub seed: u64,
    pub protocol: Protocol,
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
    protocol: Protocol,
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
        let protocol: &[&str] = match self.protocol {
            Protocol::Classic => &[
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ],
            // The new protocol refuses the session settings: the broker's apply.
            Protocol::Consumer => &["-X", "group.protocol=consumer"],
        };
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
            .args(protocol)
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
async fn caught_up(cluster: &KafkaCluster, group: &str, topics: &[String]) -> bool {
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
    cluster: &KafkaCluster,
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
        in_a_row = if caught_up(cluster, group, topics).await {
            in_a_row + 1
        } else {
            0
        };
    }
}

/// One chaos run on `target` with faults from `injector`; panics on any record not accounted
/// for exactly once.
pub(crate) async fn run(target: Target, plan: Plan, injector: Injector) {
    let Plan {
        records,
        kills,
        seed,
        protocol,
    } = plan;
    let mut rng = fastrand::Rng::with_seed(seed);
    let topic = unique_name("orders");
    let dlq = format!("{topic}.dlq");
    let tiers = RetryTiers::new(TIERS.iter().map(|t| humantime::parse_duration(t).unwrap()))
        .unwrap()
        .topics(&topic);
    for name in std::iter::once(&topic).chain(&tiers).chain([&dlq]) {
        target.create_topic(name).await;
    }
    let consumed: Vec<String> = std::iter::once(topic.clone())
        .chain(tiers.clone())
        .collect();
    let cluster = target.cluster();

    // The workload: what each record is, and where it landed.
    let workload = Workload {
        duplicate_rate: 0.10,
        legacy_rate: 0.01,
    };
    let written = target
        .produce(&topic, (0..records).map(|i| workload.record(i)).collect())
        .await;
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
        "chaos: {records} records, {} distinct events ({duplicates} repeated ids), {} poison records, {protocol:?} protocol",
        good_events.len() + poison_events.len(),
        poison_records.len()
    );

    let client = postgres_client().await;
    // Kept when the test fails, for the consumers' own account of what happened.
    let logs = std::env::temp_dir().join(unique_name("chaos-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    println!("chaos: consumer logs in {}", logs.display());
    let mut consumers = Consumers {
        bootstrap: target.bootstrap(),
        topic: topic.clone(),
        group: unique_name("chaos"),
        table: unique_name("chaos_charges").replace('-', "_"),
        logs: logs.clone(),
        started: 0,
        protocol,
    };

    // Faults all along the killing phase.
    let stop = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(injector(stop.clone()));

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
    let faults = injector.await.unwrap();
    let rows_at_last_kill = row_count(&client, &consumers.table).await;

    // The last instance runs until everything is committed, then stops gracefully.
    let (mut last, log) = consumers.spawn(&[]);
    wait_until_drained(&cluster, &consumers.group, &consumed, &mut last, &log).await;
    let summary = terminate(last, &log);
    assert!(summary.contains("done in"), "{}", tail(&log));

    let mut tiered = 0;
    for tier in &tiers {
        tiered += target.read_all(tier).await.len();
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
    let dlq_records = target.read_all(&dlq).await;
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
        "chaos: {kills} kills (SIGKILL) + {unexpected_exits} exits on their own; faults: {faults}; \
         {rows_at_last_kill} rows at the last kill; {tiered} records through the retry tiers"
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
    let config = target.client_config();
    for round in 1..=2 {
        let report = Replay::new(dlq.as_str(), format!("{}-fix-{round}", consumers.group))
            .run(&config)
            .await
            .unwrap();
        assert_eq!(report.replayed, dlq_records.len() as u64, "{report:?}");
    }
    let (mut fixed, log) = consumers.spawn(&["--accept-legacy-orders"]);
    wait_until_drained(&cluster, &consumers.group, &consumed, &mut fixed, &log).await;
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
