//! The self-healing monitor (runbook 002) driven by a YAML file:
//!
//! ```sh
//! cargo run --example self-healing -- --config examples/self-healing/config/development.yaml
//! cargo run --example self-healing -- --config my.yaml --validate
//! cargo run --example self-healing -- --config my.yaml --dry-run
//! ```
//!
//! Without a `cluster:` section it runs against an embedded mock cluster with a demo consumer,
//! and takes a broker down after a few rounds so there is something to heal. Detections,
//! actions and notifications are printed as they happen; Ctrl-C stops it gracefully.

// An app talking to its operator prints to stdout by design.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use kafka_ops_core::Record;
use kafka_ops_core::handler::ConsumerControl;
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::testkit::{MockKafka, TestRecord};
use kafka_ops_recovery::actions::RestartFuture;
use kafka_ops_recovery::{BuildContext, EngineEvent, Registry, SelfHealingConfig};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "The kafka-ops self-healing monitor")]
struct Args {
    /// The YAML configuration.
    #[arg(long)]
    config: PathBuf,
    /// Check the configuration and exit (0 valid, 1 not).
    #[arg(long)]
    validate: bool,
    /// Decide and record, act on nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stop after this many rounds (default: until Ctrl-C).
    #[arg(long)]
    rounds: Option<u64>,
}

fn describe(event: &EngineEvent) -> String {
    match event {
        EngineEvent::Detected { key, checks } => format!("detected   {key} (check {checks})"),
        EngineEvent::Recovered { key, action } => format!("recovered  {key} by {action}"),
        EngineEvent::Escalated { key } => format!("escalated  {key}: notifiers told"),
        EngineEvent::TooWidespread { key } => format!("widespread {key}: notified, not acted on"),
        EngineEvent::WouldAct { key, actions } => {
            format!("dry run    {key}: would run {}", actions.join(", "))
        }
        EngineEvent::Unhandled { key } => format!("unhandled  {key}: no playbook; notifiers told"),
        EngineEvent::Cleared { key } => format!("cleared    {key}"),
        EngineEvent::MonitorFailed { monitor, error } => {
            format!("monitor    {monitor} failed: {error}")
        }
    }
}

/// A demo consumer on the embedded cluster, and a hook that restarts it.
fn demo_consumer(
    kafka: &MockKafka,
    handle: DriverHandle,
) -> Arc<dyn Fn() -> RestartFuture + Send + Sync> {
    let config = kafka.consumer_config("self-healing-demo");
    Arc::new(move || {
        let driver = Driver::with_handle(
            config.clone(),
            DriverConfig::new(["orders"]),
            handler_fn(|_: &Record<'_>| async { Ok(Outcome::Processed) }),
            handle.clone(),
        );
        Box::pin(async move {
            tokio::spawn(driver.run());
            Ok(())
        })
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The engine's events are printed below; the probes' own logs would repeat them.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,kafka_ops_health=error,librdkafka=off,rdkafka=off",
                    )
                }),
        )
        .init();
    let args = Args::parse();
    let mut config = match SelfHealingConfig::load(&args.config) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("invalid configuration:\n{problems}");
            return ExitCode::from(1);
        }
    };
    let registry = Registry::with_builtins();
    let problems = registry.validate(&config);
    if !problems.is_empty() {
        eprintln!("invalid configuration {}:", args.config.display());
        for problem in problems {
            eprintln!("  - {problem}");
        }
        return ExitCode::from(1);
    }
    if args.validate {
        println!(
            "configuration OK: {} monitors, {} playbooks, {} notifiers{}",
            config.monitors.len(),
            config.playbooks.len(),
            config.notifiers.len(),
            if config.cluster.is_some() {
                ""
            } else {
                " (embedded mock cluster)"
            }
        );
        return ExitCode::SUCCESS;
    }
    config.engine.dry_run |= args.dry_run;

    // The embedded cluster (and the demo consumer on it) must outlive the engine.
    let mut ctx = BuildContext::default();
    let mut embedded = None;
    let mut demo_handle = None;
    let client_config = match &config.cluster {
        Some(cluster) => cluster.client_config(),
        None => {
            let kafka = match MockKafka::start(3) {
                Ok(kafka) => kafka,
                Err(error) => {
                    eprintln!("error: cannot start the embedded cluster: {error}");
                    return ExitCode::from(3);
                }
            };
            if let Err(error) = kafka.create_topic("orders", 6) {
                eprintln!("error: {error}");
                return ExitCode::from(3);
            }
            let orders = (0..500).map(|i| TestRecord::keyed(format!("order-{i}"), "{}"));
            if let Err(error) = kafka.produce("orders", orders).await {
                eprintln!("error: {error}");
                return ExitCode::from(3);
            }
            println!(
                "embedded mock cluster at {} (3 brokers); demo consumer on `orders`",
                kafka.bootstrap()
            );
            let handle = DriverHandle::new();
            let restart = demo_consumer(&kafka, handle.clone());
            if let Err(error) = restart().await {
                eprintln!("error: {error}");
                return ExitCode::from(3);
            }
            ctx.consumer = Some(Arc::new(handle.clone()) as Arc<dyn ConsumerControl>);
            demo_handle = Some(handle);
            ctx.restart = Some(restart);
            let config = kafka.client_config();
            embedded = Some(kafka);
            config
        }
    };
    match KafkaCluster::from_config(&client_config) {
        Ok(cluster) => ctx.cluster = Some(Arc::new(cluster.with_timeout(Duration::from_secs(5)))),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(3);
        }
    }
    ctx.client_config = Some(client_config);
    let engine = match registry.build(&config, ctx) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    println!(
        "self-healing: every {}{}",
        humantime::format_duration(config.engine.interval),
        if config.engine.dry_run {
            " (dry run: deciding, not acting)"
        } else {
            ""
        }
    );

    let rounds = AtomicU64::new(0);
    let (done, finished) = tokio::sync::watch::channel(false);
    let shutdown = {
        let mut finished = finished.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => println!("interrupted: finishing the running round"),
                _ = finished.wait_for(|done| *done) => {}
            }
        }
    };
    engine
        .run(shutdown, |events| {
            let round = rounds.fetch_add(1, Ordering::SeqCst) + 1;
            for event in events {
                println!("round {round:>3}  {}", describe(event));
            }
            if let Some(kafka) = &embedded {
                // Something to heal: broker 2 goes down for a while.
                if round == 2 && kafka.broker_down(2).is_ok() {
                    println!("round {round:>3}  (demo) broker 2 taken down");
                }
                if round == 12 && kafka.broker_up(2).is_ok() {
                    println!("round {round:>3}  (demo) broker 2 back up");
                }
            }
            if args.rounds.is_some_and(|limit| round >= limit) {
                let _ = done.send(true);
            }
        })
        .await;
    println!("stopped after {} rounds", rounds.load(Ordering::SeqCst));
    // The demo consumer leaves before the cluster it talks to goes away.
    if let Some(handle) = demo_handle {
        handle.shutdown();
        for _ in 0..100 {
            if !handle.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(engine);
    drop(embedded);
    ExitCode::SUCCESS
}
