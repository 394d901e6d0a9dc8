//! `kafka-ops exporter`: consumer lag and dead-letter depth for Prometheus, polled on an
//! interval, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kafka_ops_core::cluster::LagOptions;
use kafka_ops_core::lag::burrow::BurrowConfig;
use kafka_ops_core::lag::monitor::LagMonitorConfig;
use kafka_ops_core::{Clock, Error, IsolationLevel, SystemClock};
use tokio::sync::watch;

use super::{ConnectionArgs, EXIT_ERROR, Output, ThresholdArgs};
use crate::exporter::{ExporterState, PollPlan, Shared, poll_loop, router, serve};

/// The shortest `--interval`: each group keeps one total-lag sample per poll over the growth
/// window, so the interval bounds that history (300 samples per group for the default 5 min).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Arguments of `kafka-ops exporter`.
#[derive(Debug, Clone, Args)]
pub struct ExporterArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Where `/metrics`, `/livez` and `/readyz` listen (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:9308")]
    listen: SocketAddr,
    /// Time between polls of the cluster (at least 1s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Only this group (repeatable); every group the cluster lists by default.
    #[arg(long = "group", short = 'g', value_name = "GROUP")]
    groups: Vec<String>,
    /// Measure lag against the last stable offset, as a `read_committed` consumer sees it.
    #[arg(long)]
    read_committed: bool,
    /// Also take time lag from the timestamp of the record at each lagging committed offset
    /// (one read per lagging partition and poll); otherwise it is interpolated from the
    /// end-offset history only.
    #[arg(long)]
    time_lag_from_records: bool,
    /// Dead-letter topics are those ending with this suffix (empty: none by suffix). Spring's
    /// `-dlt` is taken as a value, not an option.
    #[arg(long, default_value = ".dlq", allow_hyphen_values = true)]
    dlq_suffix: String,
    /// A dead-letter topic to report whatever its name (repeatable).
    #[arg(long = "dlq-topic", value_name = "TOPIC")]
    dlq_topics: Vec<String>,
    /// Commits in Burrow's window per partition.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// End-offset points kept per partition for time-lag interpolation.
    #[arg(long, default_value_t = 60)]
    history_points: usize,
    #[command(flatten)]
    thresholds: ThresholdArgs,
}

impl ExporterArgs {
    fn monitor_config(&self) -> Result<LagMonitorConfig, Error> {
        if self.interval < MIN_INTERVAL {
            return Err(Error::Config(format!(
                "--interval must be at least {}, got {}",
                humantime::format_duration(MIN_INTERVAL),
                humantime::format_duration(self.interval)
            )));
        }
        if self.history_points < 2 {
            return Err(Error::Config(format!(
                "--history-points must be at least 2 (interpolation needs two), got {}",
                self.history_points
            )));
        }
        let config = LagMonitorConfig {
            burrow: BurrowConfig {
                window: self.window,
                ..BurrowConfig::default()
            },
            thresholds: self.thresholds.thresholds(),
            time_lag_points: self.history_points,
            ..LagMonitorConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    fn plan(&self) -> PollPlan {
        PollPlan {
            groups: self.groups.clone(),
            options: LagOptions {
                isolation: if self.read_committed {
                    IsolationLevel::ReadCommitted
                } else {
                    IsolationLevel::ReadUncommitted
                },
            },
            time_lag_from_records: self.time_lag_from_records,
            dead_letter_suffix: (!self.dlq_suffix.is_empty()).then(|| self.dlq_suffix.clone()),
            dead_letter_topics: self.dlq_topics.clone(),
        }
    }
}

/// Resolves once SIGTERM or Ctrl-C (SIGINT) arrives.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `kafka-ops exporter` until SIGTERM or Ctrl-C; exits 0 then, 3 when it cannot start.
///
/// An unreachable cluster does not stop it: it serves, not ready, and keeps polling.
pub async fn run(args: ExporterArgs, output: &mut Output<'_>) -> i32 {
    let (config, cluster) = match args.monitor_config().and_then(|config| {
        let cluster = args.connection.cluster()?;
        Ok((config, cluster))
    }) {
        Ok(ready) => ready,
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            return EXIT_ERROR;
        }
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = match ExporterState::new(config, clock.now()) {
        Ok(state) => state,
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            return EXIT_ERROR;
        }
    };
    let shared = Shared::new(state, clock);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = writeln!(
                output.err,
                "error: cannot listen on {}: {error}",
                args.listen
            );
            return EXIT_ERROR;
        }
    };
    let address = listener.local_addr().unwrap_or(args.listen);
    let _ = writeln!(
        output.out,
        "kafka-ops exporter: serving http://{address}/metrics, polling {} every {}",
        args.connection.bootstrap,
        humantime::format_duration(args.interval)
    );
    let _ = output.out.flush();

    let (stop, stopped) = watch::channel(false);
    let signals = tokio::spawn(async move {
        stop_requested().await;
        let _ = stop.send(true);
    });
    let plan = args.plan();
    let server = serve(listener, router(shared.clone()), stopped.clone());
    let polls = poll_loop(&cluster, &plan, &shared, args.interval, stopped);
    tokio::pin!(server);
    // The server ends on the stop signal (after the requests in flight) or when it fails; the
    // poll loop ends on the signal only.
    let served = tokio::select! {
        served = &mut server => served,
        () = polls => server.await,
    };
    signals.abort();
    match served {
        Ok(()) => {
            let _ = writeln!(output.err, "kafka-ops exporter: stopped");
            0
        }
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> ExporterArgs {
        let cli = super::super::Cli::try_parse_from(
            ["kafka-ops", "exporter", "--bootstrap", "k:9092"]
                .iter()
                .chain(args),
        )
        .unwrap();
        match cli.command {
            super::super::Command::Exporter(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn arguments_make_the_plan_and_the_monitor_configuration() {
        let args = parse(&[
            "--dlq-suffix",
            "-dlt",
            "--group",
            "a",
            "-g",
            "b",
            "--read-committed",
            "--window",
            "5",
            "--history-points",
            "7",
            "--warning-lag",
            "5",
        ]);
        let plan = args.plan();
        assert_eq!(plan.dead_letter_suffix.as_deref(), Some("-dlt"));
        assert_eq!(plan.groups, ["a", "b"]);
        assert_eq!(plan.options.isolation, IsolationLevel::ReadCommitted);
        let config = args.monitor_config().unwrap();
        assert_eq!(config.burrow.window, 5);
        assert_eq!(config.time_lag_points, 7);
        assert_eq!(config.thresholds.warning_total_lag, 5);
        assert_eq!(args.listen.to_string(), "127.0.0.1:9308");
        assert_eq!(args.interval, Duration::from_secs(15));
        // An empty suffix turns discovery by name off.
        assert_eq!(parse(&["--dlq-suffix", ""]).plan().dead_letter_suffix, None);
        assert!(matches!(
            parse(&["--warning-lag", "9", "--critical-lag", "8"]).monitor_config(),
            Err(Error::Config(_))
        ));
    }
}
