//! The `kafka-ops` command-line tool: runbook steps as subcommands.
//!
//! Exit codes follow the monitoring-plugin convention the runbook scripts use: 0 ok, 1 warning,
//! 2 critical, 3 for errors (unreachable cluster, bad arguments). Which verdicts fail the run is
//! `--fail-on`'s: `health` fails on critical unless told otherwise (a check that reports the
//! cluster unreachable must not exit 0 to the script calling it), `lag` only when asked.

pub mod dlq;
pub mod exporter;
pub mod health;
pub mod hygiene;
pub mod lag;
pub mod offsets;

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kafka_ops_core::Severity;
use kafka_ops_core::cluster::MetadataQuery;
use kafka_ops_core::kafka::{KafkaCluster, client_config};
use kafka_ops_core::lag::verdict::LagThresholds;
use rdkafka::ClientConfig;

/// Exit code for errors: the check could not run.
pub const EXIT_ERROR: i32 = 3;

/// kafka-ops: Kafka consumer operations from the runbooks, as commands.
#[derive(Debug, Parser)]
#[command(name = "kafka-ops", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consumer-group lag: offsets, time lag and a verdict (like kafka-consumer-groups --describe).
    Lag(lag::LagArgs),
    /// The daily health check: brokers, controller, partitions, topics, lag, DLQ depth, canary
    /// (exit 2 when a probe is critical, 1 on warning with `--fail-on warning`).
    Health(health::HealthArgs),
    /// May this broker be stopped now? The rolling-restart checklist (exit 0 safe, 2 not).
    RestartCheck(health::RestartCheckArgs),
    /// Reset, export, import a group's offsets; wait for a group to drain.
    Offsets(offsets::OffsetsArgs),
    /// Dead letters: inspect, replay, archive, purge.
    Dlq(dlq::DlqArgs),
    /// Serve consumer lag and dead-letter depth to Prometheus (/metrics, /livez, /readyz).
    Exporter(exporter::ExporterArgs),
    /// The maintenance review: inactive groups (safe to delete?), idle topics, DLQ depth, leaders.
    Hygiene(hygiene::HygieneArgs),
}

/// How to reach the cluster. Extra librdkafka settings (SASL, TLS) go in `-X key=value`; their
/// values are never printed.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap: String,
    /// A librdkafka setting, `key=value` (repeatable), e.g. `-X security.protocol=SASL_SSL`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub config: Vec<(String, String)>,
    /// Bound on each request to the cluster.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

impl ConnectionArgs {
    /// The client configuration these arguments describe.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = client_config(&self.bootstrap);
        for (key, value) in &self.config {
            config.set(key, value);
        }
        config
    }

    /// A cluster client bounded by `--timeout`.
    pub fn cluster(&self) -> Result<KafkaCluster, kafka_ops_core::Error> {
        Ok(KafkaCluster::from_config(&self.client_config())?.with_timeout(self.timeout))
    }

    /// A cluster client that answered a metadata request, or `None` after telling the user why
    /// the cluster cannot be reached (within `--timeout`, never a hang).
    pub async fn connect(&self, output: &mut Output<'_>) -> Option<KafkaCluster> {
        let checked = match self.cluster() {
            Ok(cluster) => cluster.metadata(&[]).await.map(|_| cluster),
            Err(error) => Err(error),
        };
        match checked {
            Ok(cluster) => Some(cluster),
            Err(error) => {
                let _ = writeln!(
                    output.err,
                    "error: cannot reach the cluster at {} within {}: {error}",
                    self.bootstrap,
                    humantime::format_duration(self.timeout)
                );
                None
            }
        }
    }
}

/// The runbook's lag thresholds, for every command that judges a group.
#[derive(Debug, Clone, Args)]
pub struct ThresholdArgs {
    /// Total lag above which a group is a warning.
    #[arg(long, default_value_t = 10_000)]
    warning_lag: u64,
    /// Total lag above which a group is critical.
    #[arg(long, default_value_t = 100_000)]
    critical_lag: u64,
    /// Lag growth (records per minute) above which a group is a warning.
    #[arg(long, default_value_t = 1_000.0)]
    growth_per_min: f64,
}

impl ThresholdArgs {
    /// The thresholds these arguments describe (validated by the caller's configuration).
    pub fn thresholds(&self) -> LagThresholds {
        LagThresholds {
            warning_total_lag: self.warning_lag,
            critical_total_lag: self.critical_lag,
            warning_growth_per_minute: self.growth_per_min,
        }
    }
}

/// When a check's verdict turns into a failing exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 1 on warning, 2 on critical.
    Warning,
    /// Exit 2 on critical; warnings exit 0.
    Critical,
    /// Exit 0 whatever the verdict (3 still means the check could not run): for callers that
    /// read the report and judge it themselves.
    Never,
}

/// The exit code for `severity` under `--fail-on`.
pub fn exit_code(severity: Severity, fail_on: Option<FailOn>) -> i32 {
    match (fail_on, severity) {
        (None | Some(FailOn::Never), _) | (_, Severity::Info) => 0,
        (Some(FailOn::Warning), severity) => severity.exit_code(),
        (Some(FailOn::Critical), Severity::Critical) => 2,
        (Some(FailOn::Critical), Severity::Warning) => 0,
    }
}

/// Where a command writes: its report and its diagnostics.
pub struct Output<'a> {
    /// The report (table or JSON).
    pub out: &'a mut (dyn Write + Send),
    /// Diagnostics and errors.
    pub err: &'a mut (dyn Write + Send),
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

/// Runs the tool with `args` (the first is the program name) and returns the exit code.
pub async fn run<I, T>(args: I, output: &mut Output<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_ERROR } else { 0 };
            let text = error.render().to_string();
            let target: &mut dyn Write = if error.use_stderr() {
                output.err
            } else {
                output.out
            };
            let _ = target.write_all(text.as_bytes());
            return code;
        }
    };
    match cli.command {
        Command::Lag(args) => lag::run(args, output).await,
        Command::Health(args) => health::run(args, output).await,
        Command::RestartCheck(args) => health::run_restart_check(args, output).await,
        Command::Offsets(args) => offsets::run(args, output).await,
        Command::Dlq(args) => dlq::run(args, output).await,
        Command::Exporter(args) => exporter::run(args, output).await,
        Command::Hygiene(args) => hygiene::run(args, output).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_fail_on() {
        use Severity::*;
        assert_eq!(exit_code(Critical, None), 0);
        assert_eq!(exit_code(Warning, Some(FailOn::Warning)), 1);
        assert_eq!(exit_code(Critical, Some(FailOn::Warning)), 2);
        assert_eq!(exit_code(Warning, Some(FailOn::Critical)), 0);
        assert_eq!(exit_code(Critical, Some(FailOn::Critical)), 2);
        assert_eq!(exit_code(Info, Some(FailOn::Warning)), 0);
        assert_eq!(exit_code(Critical, Some(FailOn::Never)), 0);
        assert_eq!(exit_code(Warning, Some(FailOn::Never)), 0);
    }

    #[test]
    fn settings_parse_as_key_value() {
        assert_eq!(
            parse_setting("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert!(parse_setting("novalue").is_err());
        assert!(parse_setting("=x").is_err());
    }
}
