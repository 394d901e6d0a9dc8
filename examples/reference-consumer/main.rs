//! The reference consumer: a Kafka consumer service built from kafka-ops, end to end.
//!
//! ```text
//! cargo run --example reference-consumer                       # embedded cluster, demo workload
//! cargo run --example reference-consumer -- --bootstrap localhost:9092 --topic orders --group billing
//! ```
//!
//! Without `--bootstrap` it starts librdkafka's in-process mock cluster (no Kafka needed) and
//! produces a demo workload of orders — some duplicated (same `event-id`), some poison (a
//! legacy pipe-delimited format the handler rejects until `--accept-legacy-orders`) — then
//! consumes it through every kafka-ops layer, outermost first:
//!
//! 1. dead-letter routing (`DeadLetterLayer`): what is given up on goes to `<topic>.dlq`, and
//!    only then is its offset committed;
//! 2. retry tiers (`RetryTopicLayer`): transient failures go to `<topic>.retry.N`, read again
//!    when due, then to the dead-letter topic;
//! 3. idempotency (`IdempotencyLayer`, keyed by the `event-id` header; memory by default,
//!    `--store redis://..`, `postgres://..` or a redb file path): duplicates are skipped;
//! 4. a circuit breaker around the downstream (`CircuitBreakerLayer`): while it is open the
//!    consumer pauses instead of failing every record;
//! 5. in-place retries with backoff (`RetryLayer`), exhausted ones handed to the tiers;
//! 6. the service's own handler, calling a simulated downstream (`--failure-rate`,
//!    `--latency`). With a PostgreSQL store and `--charges-table`, each charge is also a row
//!    written in the same transaction as its idempotency mark (the inbox): one row per event,
//!    even when the process is killed between the row and the offset commit.
//!
//! The driver commits only what finished. Health endpoints and Prometheus metrics are served on
//! loopback; SIGINT/SIGTERM stop polling, finish in-flight records, commit, and flush the
//! dead-letter producer. This file is the template a service team copies: the handler and the
//! downstream are the only parts that are theirs.

// An app talking to its operator prints to stdout by design.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use kafka_ops_core::cluster::{LagOptions, fill_time_lag_from_records, group_lag};
use kafka_ops_core::dead_letter::{Envelope, headers};
use kafka_ops_core::handler::HandlerBuilder;
use kafka_ops_core::handler::{Handler, HandlerError, Outcome};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::kafka::set_unless_set;
use kafka_ops_core::lag::verdict::{LagThresholds, judge};
use kafka_ops_core::testkit::MockKafka;
use kafka_ops_core::{ErrorClass, Offset, Record, SystemClock, TopicPartition};
use kafka_ops_dlq::DeadLetterLayer;
use kafka_ops_dlq::{RetryTiers, RetryTopicLayer};
use kafka_ops_examples::orders::{EVENT_ID_HEADER, Workload};
use kafka_ops_examples::table::lag_total_cell;
use kafka_ops_health::HealthChecker;
use kafka_ops_health::http::{HealthSource, install_prometheus_recorder, router, serve_on};
use kafka_ops_health::probes::{BrokerConnectivityProbe, ConsumerLagProbe, ConsumerLivenessProbe};
use kafka_ops_idempotency::IdempotencyLayer;
use kafka_ops_idempotency::current_claim;
use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
use kafka_ops_idempotency::store::memory::MemoryStore;
use kafka_ops_idempotency::store::postgres::PostgresStore;
use kafka_ops_idempotency::store::redb::RedbStore;
use kafka_ops_idempotency::store::redis::RedisStore;
use kafka_ops_idempotency::store::{IdempotencyStore, StoredOutcome};
use kafka_ops_recovery::{BackoffPolicy, CircuitBreakerLayer, RetryLayer, RetryPolicy};
use kafka_ops_recovery::{BreakerConfig, CircuitBreaker};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "The kafka-ops reference consumer")]
struct Args {
    /// Bootstrap servers of a real cluster; without it an embedded mock cluster is used.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Topic to consume.
    #[arg(long, default_value = "orders")]
    topic: String,
    /// Consumer group.
    #[arg(long, default_value = "reference-consumer")]
    group: String,
    /// Orders in the demo workload (embedded mode).
    #[arg(long, default_value_t = 2_000)]
    records: u64,
    /// Demo workload: share of records repeating an earlier event id.
    #[arg(long, default_value_t = 0.10)]
    duplicate_rate: f64,
    /// Demo workload: share of orders in the legacy pipe-delimited format, poison to this
    /// consumer unless `--accept-legacy-orders` (they end in the DLQ).
    #[arg(long, default_value_t = 0.01)]
    poison_rate: f64,
    /// Also read the legacy `id|customer|amount` format: the fix deployed before the dead
    /// letters are replayed.
    #[arg(long)]
    accept_legacy_orders: bool,
    /// The simulated downstream: share of calls failing transiently.
    #[arg(long, default_value_t = 0.05)]
    failure_rate: f64,
    /// The simulated downstream: time per call.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The simulated downstream: seed of its failures (each is drawn from the seed, the order
    /// and how many calls that order had), so a run's failures can be repeated. A random one
    /// by default, printed at start.
    #[arg(long, env = "REFERENCE_CONSUMER_SEED")]
    seed: Option<u64>,
    /// Idempotency store: `memory`, `redis://..`, `postgres://..` (or `host=..`), or a file
    /// path for redb.
    #[arg(long, default_value = "memory")]
    store: String,
    /// With a PostgreSQL store: record each charge as a row of this table (created if missing),
    /// committed together with the event's idempotency mark.
    #[arg(long, value_name = "TABLE")]
    charges_table: Option<String>,
    /// How long an event is held by the instance handling it; a crashed instance's events are
    /// taken over after it. Keep it above the slowest handling.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// In-place retries of a transient failure before the record goes to the retry tiers.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Retry-tier delays, comma-separated.
    #[arg(long, default_value = "1s,3s", value_delimiter = ',', value_parser = humantime::parse_duration)]
    retry_tiers: Vec<Duration>,
    /// Records buffered or running at once.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Extra librdkafka settings for a real cluster (`-X security.protocol=SASL_SSL`).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Where to serve /livez, /readyz, /health and /metrics (loopback by default; port 0 picks
    /// a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    health_addr: std::net::SocketAddr,
}

/// The service's business event.
#[derive(Debug, Deserialize)]
struct Order {
    order_id: u64,
    customer: String,
    amount_cents: u64,
}

impl Order {
    /// An order in JSON, or — once the fix is deployed — in the legacy `id|customer|amount`
    /// format an old producer still writes.
    fn parse(value: &[u8], accept_legacy: bool) -> Result<Order, HandlerError> {
        let json = serde_json::from_slice(value);
        if accept_legacy && json.is_err() {
            let legacy = std::str::from_utf8(value).ok().and_then(|text| {
                match text.split('|').collect::<Vec<_>>()[..] {
                    [id, customer, amount] => Some(Order {
                        order_id: id.parse().ok()?,
                        customer: customer.to_string(),
                        amount_cents: amount.parse().ok()?,
                    }),
                    _ => None,
                }
            });
            if let Some(order) = legacy {
                return Ok(order);
            }
        }
        json.map_err(HandlerError::permanent)
    }
}

/// The downstream the service calls (a payment API, a database): here simulated, failing
/// transiently at a given rate.
#[derive(Debug)]
struct Downstream {
    failure_rate: f64,
    latency: Duration,
    seed: u64,
    /// Calls so far per order still failing: the n-th call of an order draws the same in every
    /// run with the seed, however the records interleave. An order leaves it once charged.
    calls: Mutex<HashMap<u64, u64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("downstream timed out")]
struct DownstreamTimeout;

impl Downstream {
    fn new(failure_rate: f64, latency: Duration, seed: u64) -> Self {
        Downstream {
            failure_rate,
            latency,
            seed,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Whether call `call` (from 1) of order `order` fails.
    fn fails(&self, order: u64, call: u64) -> bool {
        // Odd multipliers keep (order, call) pairs apart before the generator mixes them.
        let stream = order
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(call.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        fastrand::Rng::with_seed(self.seed ^ stream).f64() < self.failure_rate
    }

    async fn charge(&self, order: &Order) -> Result<(), DownstreamTimeout> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let call = calls.entry(order.order_id).or_default();
        *call += 1;
        if self.fails(order.order_id, *call) {
            return Err(DownstreamTimeout);
        }
        calls.remove(&order.order_id);
        Ok(())
    }
}

/// The charges table: one row per charged event, written in the same PostgreSQL transaction
/// that completes the event's idempotency key. Either both commit or neither does, so a crash
/// anywhere leaves no row without its mark and no mark without its row.
struct Ledger {
    store: PostgresStore,
    /// Transactions need a connection each; the handler runs one per partition at a time.
    connections: Vec<tokio::sync::Mutex<tokio_postgres::Client>>,
    next: AtomicUsize,
    insert: String,
}

impl Ledger {
    async fn open(
        config: &str,
        store: PostgresStore,
        table: &str,
        connections: usize,
    ) -> Result<Ledger, Box<dyn std::error::Error>> {
        let valid = table
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("--charges-table {table:?} is not a plain SQL identifier").into());
        }
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (client, connection) =
                tokio_postgres::connect(config, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::error!(%error, "charges connection failed");
                }
            });
            clients.push(tokio::sync::Mutex::new(client));
        }
        // No unique index on event_id on purpose: the inbox alone keeps it to one row, and a
        // double would show. A service would add one as a second guard.
        clients[0]
            .get_mut()
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     id bigserial PRIMARY KEY,
                     event_id text NOT NULL,
                     order_id bigint NOT NULL,
                     amount_cents bigint NOT NULL,
                     charged_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await?;
        Ok(Ledger {
            store,
            connections: clients,
            next: AtomicUsize::new(0),
            insert: format!(
                "INSERT INTO {table} (event_id, order_id, amount_cents) VALUES ($1, $2, $3)"
            ),
        })
    }

    /// Writes the charge and completes the key held by this handling, in one transaction.
    async fn record(&self, event_id: &str, order: &Order) -> Result<(), HandlerError> {
        let claim = current_claim().ok_or_else(|| {
            HandlerError::fatal("the charges ledger runs inside the idempotency layer")
        })?;
        let slot = self.next.fetch_add(1, AtomicOrdering::Relaxed) % self.connections.len();
        let mut client = self.connections[slot].lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(HandlerError::transient)?;
        tx.execute(
            &self.insert,
            &[
                &event_id,
                &(order.order_id as i64),
                &(order.amount_cents as i64),
            ],
        )
        .await
        .map_err(HandlerError::transient)?;
        let done = StoredOutcome {
            outcome: Outcome::Processed,
            result: None,
        };
        // Fenced: if this instance's lease ran out and another took the event over, this fails
        // and the transaction rolls back with the row.
        self.store
            .complete_in(&tx, &claim, &done)
            .await
            .map_err(HandlerError::transient)?;
        tx.commit().await.map_err(HandlerError::transient)
    }
}

/// The service's own logic: the only part a team writes. Everything else is kafka-ops.
struct OrderHandler {
    downstream: Downstream,
    accept_legacy: bool,
    ledger: Option<Ledger>,
    orders: AtomicU64,
    revenue_cents: AtomicU64,
}

#[async_trait]
impl Handler for OrderHandler {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        // Bad input is a permanent error: retrying will not fix it, the DLQ layer routes it.
        let value = record
            .value()
            .ok_or_else(|| HandlerError::permanent("tombstone on the orders topic"))?;
        let order = Order::parse(value, self.accept_legacy)?;
        // A flaky downstream is a transient error: retried in place, then in the tiers.
        self.downstream
            .charge(&order)
            .await
            .map_err(HandlerError::transient)?;
        if let Some(ledger) = &self.ledger {
            let event_id = record
                .headers
                .get_str(EVENT_ID_HEADER)
                .map_err(HandlerError::permanent)?
                .ok_or_else(|| HandlerError::permanent("no event-id header"))?;
            ledger.record(event_id, &order).await?;
        }
        tracing::debug!(order = order.order_id, customer = %order.customer, "charged");
        self.orders.fetch_add(1, AtomicOrdering::Relaxed);
        self.revenue_cents
            .fetch_add(order.amount_cents, AtomicOrdering::Relaxed);
        Ok(Outcome::Processed)
    }
}

/// The idempotency store named by `--store`, and the PostgreSQL one again when it is that (the
/// charges ledger completes keys inside its own transactions).
async fn idempotency_store(
    spec: &str,
) -> Result<(Arc<dyn IdempotencyStore>, Option<PostgresStore>), Box<dyn std::error::Error>> {
    Ok(if spec == "memory" {
        (Arc::new(MemoryStore::new(1_000_000)), None)
    } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        (Arc::new(RedisStore::connect(spec).await?), None)
    } else if spec.starts_with("postgres://")
        || spec.starts_with("postgresql://")
        || spec.contains("host=")
    {
        let store = PostgresStore::connect(spec).await?;
        store.migrate().await?;
        (Arc::new(store.clone()), Some(store))
    } else {
        (Arc::new(RedbStore::open(spec)?), None)
    })
}

/// The group's total lag for the status line: `>=` before it when some partitions did not
/// answer (their lag is unknown, so the sum of the others is only a lower bound), `?` when no
/// partition's lag could be read.
async fn lag_total(cluster: &KafkaCluster, group: &str) -> String {
    match group_lag(cluster, group, &SystemClock, LagOptions::default()).await {
        Ok((lag, _)) => lag_total_cell(&lag),
        Err(_) => "?".into(),
    }
}

/// Prints `group`'s lag table under `title`. The table is for the operator: a cluster that
/// cannot answer yet is said so and does not stop the consumer (it waits for the brokers
/// itself).
async fn print_lag(cluster: &KafkaCluster, group: &str, title: &str) {
    match lag_table(cluster, group).await {
        Ok(text) => println!("== {title}\n{text}"),
        Err(error) => println!("{title}: unavailable ({error})"),
    }
}

async fn lag_table(cluster: &KafkaCluster, group: &str) -> Result<String, kafka_ops_core::Error> {
    let (mut lag, _) = group_lag(cluster, group, &SystemClock, LagOptions::default()).await?;
    fill_time_lag_from_records(cluster, &mut lag).await?;
    let verdict = judge(&lag, &[], None, &LagThresholds::default());
    let taken_at = lag.taken_at;
    kafka_ops_examples::cli::lag::render(&[(lag, Vec::new(), verdict)], &[], taken_at, false)
        .map_err(|e| kafka_ops_core::Error::InvalidInput(e.to_string()))
}

/// Stops the driver on Ctrl-C or SIGTERM: in-flight records finish and are committed.
fn shutdown_on_signal(handle: DriverHandle) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown();
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    println!("downstream failures drawn from seed {seed} (--seed {seed} repeats them)");
    let tiers = RetryTiers::new(args.retry_tiers.iter().copied())?;
    let dlq = format!("{}.dlq", args.topic);

    // The embedded cluster must outlive the consumer, so it is held here.
    let (embedded, mut client_config) = match &args.bootstrap {
        Some(bootstrap) => (None, kafka_ops_core::kafka::client_config(bootstrap)),
        None => {
            let kafka = MockKafka::start(3)?;
            for topic in [args.topic.clone(), dlq.clone()]
                .into_iter()
                .chain(tiers.topics(&args.topic))
            {
                kafka.create_topic(&topic, 6)?;
            }
            println!("embedded mock cluster at {} (3 brokers)", kafka.bootstrap());
            let config = kafka.client_config();
            (Some(kafka), config)
        }
    };
    for setting in &args.config {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE, got {setting:?}"))?;
        client_config.set(key, value);
    }
    let cluster = KafkaCluster::from_config(&client_config)?;

    let expected = match &embedded {
        Some(kafka) => {
            let workload = Workload {
                duplicate_rate: args.duplicate_rate,
                legacy_rate: args.poison_rate,
            };
            let written = kafka
                .produce(&args.topic, (0..args.records).map(|i| workload.record(i)))
                .await?;
            println!("produced {} orders to {}", written.len(), args.topic);
            // Start the group at the beginning, as `kafka-consumer-groups --reset-offsets
            // --to-earliest` would, so the "before" table shows the backlog.
            let partitions: Vec<(TopicPartition, Offset)> = (0..6)
                .map(|p| (TopicPartition::new(args.topic.as_str(), p), Offset::ZERO))
                .collect();
            kafka.commit(&args.group, &partitions).await?;
            Some(args.records)
        }
        None => None,
    };
    print_lag(&cluster, &args.group, "lag before").await;

    let mut consumer_config: ClientConfig = client_config.clone();
    consumer_config
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest");
    // librdkafka's statistics every 5 s feed the driver's prefetch figures (the
    // kafka_ops_prefetched_bytes and _messages gauges on /metrics) unless `-X` sets another
    // interval.
    set_unless_set(&mut consumer_config, &[("statistics.interval.ms", "5000")]);
    let mut driver_config =
        DriverConfig::new(std::iter::once(args.topic.clone()).chain(tiers.topics(&args.topic)));
    driver_config.max_in_flight = args.max_in_flight;

    // The composition, outermost first (see the file's documentation).
    let handle = DriverHandle::new();
    let sink = Arc::new(KafkaDeadLetterSink::new(&client_config)?);
    let breaker = Arc::new(CircuitBreaker::new("downstream", BreakerConfig::default())?);
    let (store, postgres) = idempotency_store(&args.store).await?;
    let ledger = match (&args.charges_table, postgres) {
        (None, _) => None,
        (Some(table), Some(postgres)) => Some(Ledger::open(&args.store, postgres, table, 8).await?),
        (Some(_), None) => return Err("--charges-table needs a PostgreSQL --store".into()),
    };
    let handler = Arc::new(OrderHandler {
        downstream: Downstream::new(args.failure_rate, args.latency, seed),
        accept_legacy: args.accept_legacy_orders,
        ledger,
        orders: AtomicU64::new(0),
        revenue_cents: AtomicU64::new(0),
    });
    let instance = format!("{}-{}", args.group, std::process::id());
    let composed = HandlerBuilder::new()
        .layer(DeadLetterLayer::new(
            sink.clone(),
            Envelope::new(&args.group, instance),
        ))
        .layer(RetryTopicLayer::new(tiers.clone(), sink.clone()))
        .layer(
            IdempotencyLayer::new(
                store,
                KeyPolicy::new(&args.group, HeaderKey(EVENT_ID_HEADER.into())),
            )
            .with_lease(args.lease),
        )
        .layer(CircuitBreakerLayer::new(
            breaker.clone(),
            Arc::new(handle.clone()),
        ))
        .layer(RetryLayer::new(
            RetryPolicy::new(BackoffPolicy::constant(
                Duration::from_millis(20),
                args.retries,
            ))
            .with_retry_tiers(),
        ))
        .handler(handler.clone());
    let driver = Driver::with_handle(
        consumer_config.clone(),
        driver_config,
        composed,
        handle.clone(),
    );
    shutdown_on_signal(handle.clone());

    // Health for Kubernetes: liveness from the poll loop itself, readiness from the cluster,
    // and the group's lag judged on every check; served from a report refreshed every 5 s.
    let cluster = Arc::new(cluster);
    let checker = HealthChecker::new()
        .probe(ConsumerLivenessProbe::for_consumer(
            Arc::new(handle.clone()),
            &consumer_config,
        )?)
        .probe(BrokerConnectivityProbe::new(cluster.clone()))
        .probe(ConsumerLagProbe::new(cluster.clone(), [args.group.clone()]));
    let metrics = install_prometheus_recorder()?;
    let listener = tokio::net::TcpListener::bind(args.health_addr).await?;
    println!(
        "health endpoints on http://{}/{{livez,readyz,health,metrics}}",
        listener.local_addr()?
    );
    let endpoints = router(
        HealthSource::Cached(checker.spawn(Duration::from_secs(5))),
        Some(metrics),
    );
    tokio::spawn(serve_on(listener, endpoints));

    let started = Instant::now();
    let run = tokio::spawn(driver.run());

    // A live one-line status; in embedded mode, stop once every demo record has ended
    // (processed, skipped as a duplicate, or dead-lettered — retried ones come back).
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = handle.stats();
        let ended = stats.processed + stats.duplicates + stats.dead_lettered + stats.skipped;
        let lag = lag_total(&cluster, &args.group).await;
        println!(
            "processed {:>6}  duplicates {:>5}  retried {:>4}  dead-lettered {:>4}  breaker {:<9}  lag {:>6}  {:>7.0} rec/s",
            stats.processed,
            stats.duplicates,
            stats.retried,
            stats.dead_lettered,
            format!("{:?}", breaker.state()).to_lowercase(),
            lag,
            ended as f64 / started.elapsed().as_secs_f64()
        );
        if expected.is_some_and(|n| ended >= n) {
            handle.shutdown();
        }
        if run.is_finished() || !handle.is_running() && ended > 0 {
            break;
        }
    }
    let report = run.await??;
    // Dead letters in flight are written before the process exits.
    sink.flush(Duration::from_secs(10))?;
    let stats = &report.stats;
    println!(
        "done in {}: {} processed ({} orders charged, revenue {:.2}), {} duplicates skipped, \
         {} sent to retry tiers, {} dead-lettered, {} commits",
        humantime::format_duration(Duration::from_millis(report.elapsed.as_millis() as u64)),
        stats.processed,
        handler.orders.load(AtomicOrdering::Relaxed),
        handler.revenue_cents.load(AtomicOrdering::Relaxed) as f64 / 100.0,
        stats.duplicates,
        stats.retried,
        stats.dead_lettered,
        stats.commits,
    );
    if let Some(kafka) = &embedded {
        // What the dead-letter topic holds, by cause: poison (permanent) and records whose
        // transient failures outlasted every retry.
        let letters = kafka.read_all(&dlq).await?;
        let permanent = letters
            .iter()
            .filter(|letter| {
                headers::parse(&letter.headers).error_class == Some(ErrorClass::Permanent)
            })
            .count();
        println!(
            "{dlq} holds {} dead letters: {permanent} permanent, {} after retries",
            letters.len(),
            letters.len() - permanent
        );
    }
    print_lag(&cluster, &args.group, "lag after").await;
    // Clients first, then the embedded cluster they talk to.
    drop(cluster);
    drop(sink);
    drop(embedded);
    Ok(())
}
