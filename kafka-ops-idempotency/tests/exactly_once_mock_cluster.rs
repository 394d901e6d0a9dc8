//! End to end: a topic where a fifth of the events are duplicates, consumed through the
//! idempotent layer over PostgreSQL, whose handler writes one row per event through the inbox.
//! The consumer is a separate process, killed mid-batch twice (once right after a row
//! committed, once by SIGKILL at an arbitrary moment) and restarted; at the end every event id
//! has exactly one row.
//!
//! The mock cluster lives in this (the parent) process; the consumer is this test binary run
//! again with `consumer_process` selected, told what to do through the environment.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use kafka_ops_core::Record;
use kafka_ops_core::handler::{HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{MockKafka, TestRecord, test_process, unique_name};
use kafka_ops_idempotency::IdempotencyLayer;
use kafka_ops_idempotency::conformance::{postgres_client, postgres_config, postgres_store};
use kafka_ops_idempotency::current_claim;
use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
use kafka_ops_idempotency::store::StoredOutcome;
use kafka_ops_idempotency::store::postgres::PostgresStore;

const PARTITIONS: i32 = 3;
const UNIQUE_EVENTS: usize = 2_400;
const DUPLICATES: usize = 600;

/// What the parent tells a consumer process.
struct Assignment {
    bootstrap: String,
    topic: String,
    group: String,
    table: String,
    /// Abort right after this many rows were committed by this process (none: run on).
    abort_after_rows: Option<u64>,
}

impl Assignment {
    fn spawn(&self) -> Child {
        let mut command = test_process("consumer_process").unwrap();
        command
            .env("E2E_BOOTSTRAP", &self.bootstrap)
            .env("E2E_TOPIC", &self.topic)
            .env("E2E_GROUP", &self.group)
            .env("E2E_TABLE", &self.table)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(rows) = self.abort_after_rows {
            command.env("E2E_ABORT_AFTER_ROWS", rows.to_string());
        }
        command.spawn().unwrap()
    }

    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
        Assignment {
            bootstrap: var("E2E_BOOTSTRAP"),
            topic: var("E2E_TOPIC"),
            group: var("E2E_GROUP"),
            table: var("E2E_TABLE"),
            abort_after_rows: std::env::var("E2E_ABORT_AFTER_ROWS")
                .ok()
                .map(|rows| rows.parse().unwrap()),
        }
    }
}

/// The consumer: the driver, the idempotent layer over PostgreSQL, and a handler that writes
/// its row and completes its key in one transaction. Run only by the test below.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the consumer process of exactly_once_across_crashes; it runs it"]
async fn consumer_process() {
    let job = Assignment::from_env();
    let store = PostgresStore::connect(&postgres_config()).await.unwrap();
    let writer = Arc::new(tokio::sync::Mutex::new(postgres_client().await));
    let rows_written = Arc::new(AtomicU64::new(0));
    let insert = format!(
        "INSERT INTO {} (event_id, payload) VALUES ($1, $2)",
        job.table
    );

    let handler = {
        let store = store.clone();
        handler_fn(move |record: &Record<'_>| {
            let (store, writer, rows_written) =
                (store.clone(), writer.clone(), rows_written.clone());
            let insert = insert.clone();
            let event_id = record
                .headers
                .get_str("event-id")
                .unwrap()
                .unwrap()
                .to_string();
            let payload = record.value_str().unwrap().unwrap_or_default().to_string();
            let abort_after = job.abort_after_rows;
            async move {
                let claim = current_claim().expect("inside the idempotent layer");
                let mut client = writer.lock().await;
                let tx = client
                    .transaction()
                    .await
                    .map_err(HandlerError::transient)?;
                tx.execute(&insert, &[&event_id, &payload])
                    .await
                    .map_err(HandlerError::transient)?;
                let done = StoredOutcome {
                    outcome: Outcome::Processed,
                    result: None,
                };
                store
                    .complete_in(&tx, &claim, &done)
                    .await
                    .map_err(HandlerError::transient)?;
                tx.commit().await.map_err(HandlerError::transient)?;
                let rows = rows_written.fetch_add(1, AtomicOrdering::SeqCst) + 1;
                if abort_after == Some(rows) {
                    // The worst moment: the row and its mark are committed, the offset is not.
                    std::process::abort();
                }
                Ok(Outcome::Processed)
            }
        })
    };
    let layer = IdempotencyLayer::new(
        Arc::new(store),
        KeyPolicy::new(job.group.clone(), HeaderKey("event-id".into())),
    )
    // Short, so a key held by a killed process is taken over quickly after the restart.
    .with_lease(Duration::from_secs(2));
    let mut config = kafka_ops_core::kafka::client_config(&job.bootstrap);
    config
        .set("group.id", &job.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let mut driver_config = DriverConfig::new([job.topic.as_str()]);
    driver_config.max_in_flight = 64;
    driver_config.commit_interval = Duration::from_millis(200);
    let driver = Driver::new(
        config,
        driver_config,
        HandlerBuilder::new().layer(layer).handler(handler),
    );
    // Runs until the parent kills it.
    driver.run().await.unwrap();
}

async fn rows(client: &tokio_postgres::Client, table: &str) -> (i64, i64, i64) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT event_id),
                        (SELECT count(*) FROM (SELECT event_id FROM {table}
                          GROUP BY event_id HAVING count(*) > 1) doubled)
                 FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn wait_for_rows(client: &tokio_postgres::Client, table: &str, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while rows(client, table).await.0 < at_least {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {at_least} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_across_crashes() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("events");
    let group = unique_name("exactly-once");
    let table = unique_name("e2e_rows").replace('-', "_");
    kafka.create_topic(&topic, PARTITIONS).unwrap();

    let client = postgres_client().await;
    postgres_store().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, event_id text NOT NULL, payload text NOT NULL)"
        ))
        .await
        .unwrap();

    // 2 400 events, then 600 of them again (a producer retrying, an upstream replay), some on
    // another partition than the first copy.
    let mut rng = fastrand::Rng::with_seed(7);
    let event = |id: usize, partition: i32| {
        TestRecord::value(format!("{{\"order\":{id}}}"))
            .header("event-id", format!("evt-{id}"))
            .to_partition(partition)
    };
    let mut records: Vec<TestRecord> = (0..UNIQUE_EVENTS)
        .map(|id| event(id, (id % PARTITIONS as usize) as i32))
        .collect();
    for _ in 0..DUPLICATES {
        let id = rng.usize(..UNIQUE_EVENTS);
        let insert_at = rng.usize(id + 1..=records.len());
        records.insert(insert_at, event(id, rng.i32(0..PARTITIONS)));
    }
    let total = records.len();
    let mut ends = vec![0_i64; PARTITIONS as usize];
    for record in &records {
        ends[record.partition.unwrap() as usize] += 1;
    }
    kafka.produce(&topic, records).await.unwrap();

    let job = |abort_after_rows| Assignment {
        bootstrap: kafka.bootstrap().to_string(),
        topic: topic.clone(),
        group: group.clone(),
        table: table.clone(),
        abort_after_rows,
    };

    // 1: aborts right after its 700th row committed, before the driver commits that offset.
    let status = job(Some(700)).spawn().wait().unwrap();
    assert!(!status.success(), "the first consumer was to abort");
    let after_abort = rows(&client, &table).await;
    assert_eq!(after_abort.0, 700);

    // 2: killed (SIGKILL) at an arbitrary moment mid-stream.
    let mut second = job(None).spawn();
    wait_for_rows(&client, &table, 700 + 600).await;
    tokio::time::sleep(Duration::from_millis(rng.u64(0..50))).await;
    second.kill().unwrap();
    second.wait().unwrap();

    // 3: runs to the end of every partition.
    let mut third = job(None).spawn();
    let ends: Vec<Option<i64>> = ends.into_iter().map(Some).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at_end = kafka.committed(&group, &topic, PARTITIONS).await.unwrap() == ends;
        if at_end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never committed the end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    third.kill().unwrap();
    third.wait().unwrap();

    let (rows, distinct, doubled) = rows(&client, &table).await;
    println!(
        "{total} records ({UNIQUE_EVENTS} events, {DUPLICATES} duplicates), 2 crashes: \
         {rows} rows, {distinct} distinct event ids, {doubled} doubled"
    );
    assert_eq!(doubled, 0, "some event ran twice");
    assert_eq!(distinct, UNIQUE_EVENTS as i64, "some event never ran");
    assert_eq!(rows, UNIQUE_EVENTS as i64);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
