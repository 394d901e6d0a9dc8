//! The reference consumer: a Kafka consumer service built from kafka-ops, end to end.
//!
//! ```text
//! cargo run --example reference-consumer                       # embedded cluster, demo workload
//! cargo run --example reference-consumer -- --bootstrap localhost:9092 --topic orders --group billing
//! ```
//!
//! Without `--bootstrap` it starts librdkafka's in-process mock cluster (no Kafka needed) and
//! produces a demo workload of orders — some duplicated (same `event-id`), some poison (not
//! JSON) — then consumes it through every kafka-ops layer, outermost first:
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
//!    `--latency`).
//!
//! The driver commits only what finished. Health endpoints and Prometheus metrics are served on
//! loopback; SIGINT/SIGTERM stop polling, finish in-flight records, commit, and flush the
//! dead-letter producer. This file is the template a service team copies: the handler and the
//! downstream are the only parts that are theirs.

// An app talking to its operator prints to stdout by design.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use kafka_ops_core::cluster::{LagOptions, fill_time_lag_from_records, group_lag};
use kafka_ops_core::handler::HandlerBuilder;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::lag::verdict::{LagThresholds, judge};
use kafka_ops_core::testkit::{MockKafka, TestRecord};
use kafka_ops_core::{Handler, HandlerError, Offset, Outcome, Record, SystemClock, TopicPartition};
use kafka_ops_dlq::retry::{RetryTiers, RetryTopicLayer};
use kafka_ops_dlq::{DeadLetterLayer, Envelope, KafkaDeadLetterSink};
use kafka_ops_health::HealthChecker;
use kafka_ops_health::http::{HealthSource, install_prometheus_recorder, router, serve_on};
use kafka_ops_health::probes::{BrokerConnectivityProbe, ConsumerLagProbe, ConsumerLivenessProbe};
use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
use kafka_ops_idempotency::store::postgres::PostgresStore;
use kafka_ops_idempotency::store::redb::RedbStore;
use kafka_ops_idempotency::store::redis::RedisStore;
use kafka_ops_idempotency::{IdempotencyLayer, IdempotencyStore, MemoryStore};
use kafka_ops_recovery::breaker::{BreakerConfig, CircuitBreaker};
use kafka_ops_recovery::{BackoffPolicy, CircuitBreakerLayer, RetryLayer, RetryPolicy};
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
    /// Demo workload: share of records that are not valid orders (they end in the DLQ).
    #[arg(long, default_value_t = 0.01)]
    poison_rate: f64,
    /// The simulated downstream: share of calls failing transiently.
    #[arg(long, default_value_t = 0.05)]
    failure_rate: f64,
    /// The simulated downstream: time per call.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Idempotency store: `memory`, `redis://..`, `postgres://..` (or `host=..`), or a file
    /// path for redb.
    #[arg(long, default_value = "memory")]
    store: String,
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

/// The downstream the service calls (a payment API, a database): here simulated, failing
/// transiently at a given rate.
#[derive(Debug)]
struct Downstream {
    failure_rate: f64,
    latency: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("downstream timed out")]
struct DownstreamTimeout;

impl Downstream {
    async fn charge(&self, _order: &Order) -> Result<(), DownstreamTimeout> {
        tokio::time::sleep(self.latency).await;
        if fastrand::f64() < self.failure_rate {
            return Err(DownstreamTimeout);
        }
        Ok(())
    }
}

/// The service's own logic: the only part a team writes. Everything else is kafka-ops.
#[derive(Debug)]
struct OrderHandler {
    downstream: Downstream,
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
        let order: Order = serde_json::from_slice(value).map_err(HandlerError::permanent)?;
        // A flaky downstream is a transient error: retried in place, then in the tiers.
        self.downstream
            .charge(&order)
            .await
            .map_err(HandlerError::transient)?;
        tracing::debug!(order = order.order_id, customer = %order.customer, "charged");
        self.orders.fetch_add(1, AtomicOrdering::Relaxed);
        self.revenue_cents
            .fetch_add(order.amount_cents, AtomicOrdering::Relaxed);
        Ok(Outcome::Processed)
    }
}

/// The demo workload: record `i`, repeating an earlier event id at `duplicate_rate`, not JSON at
/// `poison_rate` (both spread evenly, so runs are repeatable).
fn demo_order(i: u64, duplicate_rate: f64, poison_rate: f64) -> TestRecord {
    let every = |rate: f64| {
        if rate > 0.0 {
            (1.0 / rate).round().max(1.0) as u64
        } else {
            u64::MAX
        }
    };
    let event = if i % every(duplicate_rate) == every(duplicate_rate) - 1 && i >= 7 {
        i - 7
    } else {
        i
    };
    let customer = format!("customer-{}", event % 50);
    let value = if i % every(poison_rate) == every(poison_rate) / 2 {
        format!("order #{event}: not JSON")
    } else {
        format!(
            r#"{{"order_id":{event},"customer":"{customer}","amount_cents":{}}}"#,
            100 + (event * 37) % 9_900
        )
    };
    TestRecord::keyed(customer, value)
        .header("event-id", format!("order-{event}"))
        .header("content-type", "application/json")
}

async fn idempotency_store(
    spec: &str,
) -> Result<Arc<dyn IdempotencyStore>, Box<dyn std::error::Error>> {
    Ok(if spec == "memory" {
        Arc::new(MemoryStore::new(1_000_000))
    } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        Arc::new(RedisStore::connect(spec).await?)
    } else if spec.starts_with("postgres://")
        || spec.starts_with("postgresql://")
        || spec.contains("host=")
    {
        let store = PostgresStore::connect(spec).await?;
        store.migrate().await?;
        Arc::new(store)
    } else {
        Arc::new(RedbStore::open(spec)?)
    })
}

async fn lag_total(cluster: &KafkaCluster, group: &str) -> Option<u64> {
    let (lag, _) = group_lag(cluster, group, &SystemClock, LagOptions::default())
        .await
        .ok()?;
    Some(lag.total_lag())
}

async fn print_lag(
    cluster: &KafkaCluster,
    group: &str,
    title: &str,
) -> Result<(), kafka_ops_core::Error> {
    let (mut lag, _) = group_lag(cluster, group, &SystemClock, LagOptions::default()).await?;
    fill_time_lag_from_records(cluster, &mut lag).await?;
    let verdict = judge(&lag, &[], None, &LagThresholds::default());
    let taken_at = lag.taken_at;
    let text = kafka_ops_examples::cli::lag::render(&[(lag, Vec::new(), verdict)], taken_at, false)
        .map_err(|e| kafka_ops_core::Error::InvalidInput(e.to_string()))?;
    println!("== {title}\n{text}");
    Ok(())
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
            let workload =
                (0..args.records).map(|i| demo_order(i, args.duplicate_rate, args.poison_rate));
            let written = kafka.produce(&args.topic, workload).await?;
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
    print_lag(&cluster, &args.group, "lag before").await?;

    let mut consumer_config: ClientConfig = client_config.clone();
    consumer_config
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest");
    let mut driver_config =
        DriverConfig::new(std::iter::once(args.topic.clone()).chain(tiers.topics(&args.topic)));
    driver_config.max_in_flight = args.max_in_flight;

    // The composition, outermost first (see the file's documentation).
    let handle = DriverHandle::new();
    let sink = Arc::new(KafkaDeadLetterSink::new(&client_config)?);
    let breaker = Arc::new(CircuitBreaker::new("downstream", BreakerConfig::default())?);
    let store = idempotency_store(&args.store).await?;
    let handler = Arc::new(OrderHandler {
        downstream: Downstream {
            failure_rate: args.failure_rate,
            latency: args.latency,
        },
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
        .layer(IdempotencyLayer::new(
            store,
            KeyPolicy::new(&args.group, HeaderKey("event-id".into())),
        ))
        .layer(CircuitBreakerLayer::new(
            breaker.clone(),
            Arc::new(handle.clone()),
        ))
        .layer(RetryLayer::new(
            RetryPolicy::new(BackoffPolicy::constant(Duration::from_millis(20), 3))
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
            lag.map_or_else(|| "?".into(), |l| l.to_string()),
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
    print_lag(&cluster, &args.group, "lag after").await?;
    // Clients first, then the embedded cluster they talk to.
    drop(cluster);
    drop(sink);
    drop(embedded);
    Ok(())
}
