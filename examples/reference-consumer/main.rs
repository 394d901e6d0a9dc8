//! The reference consumer: a Kafka consumer service built from kafka-ops, end to end.
//!
//! ```text
//! cargo run --example reference-consumer                       # embedded cluster, demo workload
//! cargo run --example reference-consumer -- --bootstrap localhost:9092 --topic orders --group billing
//! ```
//!
//! Without `--bootstrap` it starts librdkafka's in-process mock cluster (no Kafka needed),
//! produces a demo workload of orders with keys and headers, consumes it through a handler, the
//! offset tracker and the driver, and prints the group's lag before and after. This file is the
//! template a service team copies: the handler is the only part that is theirs.

// An app talking to its operator prints to stdout by design.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use kafka_ops_core::cluster::{LagOptions, fill_time_lag_from_records, group_lag};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::lag::verdict::{LagThresholds, judge};
use kafka_ops_core::testkit::{MockKafka, TestRecord};
use kafka_ops_core::{Handler, HandlerError, Offset, Outcome, Record, SystemClock, TopicPartition};
use kafka_ops_health::HealthChecker;
use kafka_ops_health::http::{HealthSource, install_prometheus_recorder, router, serve_on};
use kafka_ops_health::probes::{BrokerConnectivityProbe, ConsumerLagProbe, ConsumerLivenessProbe};
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
    /// Orders in the demo workload (embedded mode), or to produce first (`--bootstrap` mode).
    #[arg(long, default_value_t = 2_000)]
    records: u64,
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

/// The service's own logic: the only part a team writes. Everything else is kafka-ops.
#[derive(Debug, Default)]
struct OrderHandler {
    orders: AtomicU64,
    revenue_cents: AtomicU64,
}

#[async_trait]
impl Handler for OrderHandler {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        // Bad input is a permanent error: retrying will not fix it (a DLQ layer would route it).
        let value = record
            .value()
            .ok_or_else(|| HandlerError::permanent("tombstone on the orders topic"))?;
        let order: Order = serde_json::from_slice(value).map_err(HandlerError::permanent)?;
        let event_id = record
            .headers
            .get_str("event-id")
            .map_err(HandlerError::permanent)?;
        tracing::debug!(order = order.order_id, customer = %order.customer, ?event_id, "order");
        self.orders.fetch_add(1, AtomicOrdering::Relaxed);
        self.revenue_cents
            .fetch_add(order.amount_cents, AtomicOrdering::Relaxed);
        Ok(Outcome::Processed)
    }
}

fn demo_order(i: u64) -> TestRecord {
    let customer = format!("customer-{}", i % 50);
    let value = format!(
        r#"{{"order_id":{i},"customer":"{customer}","amount_cents":{}}}"#,
        100 + (i * 37) % 9_900
    );
    TestRecord::keyed(customer, value)
        .header("event-id", format!("order-{i}"))
        .header("content-type", "application/json")
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();

    // The embedded cluster must outlive the consumer, so it is held here.
    let (embedded, mut client_config) = match &args.bootstrap {
        Some(bootstrap) => (None, kafka_ops_core::kafka::client_config(bootstrap)),
        None => {
            let kafka = MockKafka::start(3)?;
            kafka.create_topic(&args.topic, 6)?;
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
            let written = kafka
                .produce(&args.topic, (0..args.records).map(demo_order))
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
    print_lag(&cluster, &args.group, "lag before").await?;

    let mut consumer_config: ClientConfig = client_config.clone();
    consumer_config
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest");
    let mut driver_config = DriverConfig::new([args.topic.as_str()]);
    driver_config.max_in_flight = args.max_in_flight;
    let handler = Arc::new(OrderHandler::default());
    let driver = Driver::new(consumer_config.clone(), driver_config, handler.clone());
    let handle = driver.handle();
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

    // A live one-line status; in embedded mode, stop once the demo workload is done.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = handle.stats();
        println!(
            "processed {:>6}  in flight {:>3}  commits {:>3}  rebalances {}  {:>8.0} rec/s",
            stats.processed,
            stats.in_flight,
            stats.commits,
            stats.rebalances,
            stats.processed as f64 / started.elapsed().as_secs_f64()
        );
        if expected.is_some_and(|n| stats.processed >= n) {
            handle.shutdown();
        }
        if run.is_finished() || !handle.is_running() && stats.processed > 0 {
            break;
        }
    }
    let report = run.await??;
    println!(
        "done: {} orders, revenue {:.2}, {} commits, {} rebalances in {}",
        handler.orders.load(AtomicOrdering::Relaxed),
        handler.revenue_cents.load(AtomicOrdering::Relaxed) as f64 / 100.0,
        report.stats.commits,
        report.stats.rebalances,
        humantime::format_duration(Duration::from_millis(report.elapsed.as_millis() as u64)),
    );
    print_lag(&cluster, &args.group, "lag after").await?;
    // Clients first, then the embedded cluster they talk to.
    drop(cluster);
    drop(embedded);
    Ok(())
}
