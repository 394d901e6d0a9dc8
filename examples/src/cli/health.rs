//! `kafka-ops health` and `kafka-ops restart-check`: the runbooks' morning health check and the
//! maintenance checklist before stopping a broker.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kafka_ops_health::probes::{
    BrokerConnectivityProbe, CanaryProbe, ConsumerLagProbe, ControllerProbe, DeadLetterDepthProbe,
    DeadLetterTopics, PartitionsProbe, RequiredTopicsProbe,
};
use kafka_ops_health::{HealthChecker, HealthReport, RestartGateOptions, safe_to_restart};

use super::{ConnectionArgs, EXIT_ERROR, FailOn, Output, exit_code};
use crate::table::{Table, compact_duration};

/// Arguments of `kafka-ops health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// A consumer group whose lag to judge (repeatable).
    #[arg(long = "group", short = 'g', value_name = "GROUP")]
    groups: Vec<String>,
    /// A topic that must exist (repeatable; `NAME:PARTITIONS` also requires a partition count).
    #[arg(long = "topic", short = 't', value_name = "TOPIC")]
    topics: Vec<String>,
    /// Brokers the cluster should have (fewer is a warning).
    #[arg(long)]
    expected_brokers: Option<usize>,
    /// Dead-letter topics are those ending with this suffix.
    #[arg(long, default_value = ".dlq")]
    dlq_suffix: String,
    /// Produce to and consume back from this topic (an end-to-end canary).
    #[arg(long, value_name = "TOPIC")]
    canary_topic: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Which verdicts fail the run: `critical` exits 2 on critical, `warning` also exits 1 on
    /// warning, `never` exits 0 whatever the verdict. Exit 3 always means the check could not
    /// run.
    #[arg(long, value_enum, default_value = "critical")]
    fail_on: FailOn,
    /// Bound on each probe.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    probe_timeout: Duration,
}

fn parse_required(topic: &str) -> Result<(String, Option<usize>), String> {
    match topic.rsplit_once(':') {
        Some((name, count)) if !name.is_empty() => count
            .parse::<usize>()
            .map(|count| (name.to_string(), Some(count)))
            .map_err(|_| format!("expected TOPIC or TOPIC:PARTITIONS, got {topic:?}")),
        _ => Ok((topic.to_string(), None)),
    }
}

/// Renders a report as the table `kafka-ops health` prints.
pub fn render(report: &HealthReport) -> String {
    let mut table = Table::new(["PROBE", "STATUS", "SEVERITY", "LATENCY", "MESSAGE"]);
    for probe in &report.probes {
        table.row([
            probe.name.clone(),
            probe.status.to_string(),
            probe.severity.to_string(),
            compact_duration(probe.latency),
            probe.message.clone(),
        ]);
    }
    format!(
        "{}\noverall: {} ({}); live: {}, ready: {}\n",
        table.render(),
        report.status,
        report.severity,
        report.live,
        report.ready
    )
}

/// Runs `kafka-ops health`.
pub async fn run(args: HealthArgs, output: &mut Output<'_>) -> i32 {
    let mut required = Vec::new();
    for topic in &args.topics {
        match parse_required(topic) {
            Ok(topic) => required.push(topic),
            Err(message) => {
                let _ = writeln!(output.err, "error: {message}");
                return EXIT_ERROR;
            }
        }
    }
    let cluster = match args.connection.cluster() {
        Ok(cluster) => Arc::new(cluster),
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            return EXIT_ERROR;
        }
    };
    let mut connectivity = BrokerConnectivityProbe::new(cluster.clone());
    if let Some(expected) = args.expected_brokers {
        connectivity = connectivity.expect_brokers(expected);
    }
    let mut checker = HealthChecker::new()
        .with_default_timeout(args.probe_timeout)
        .probe(connectivity)
        .probe(ControllerProbe::new(cluster.clone()).with_configs(cluster.clone()))
        .probe(PartitionsProbe::new(cluster.clone()))
        .probe(DeadLetterDepthProbe::new(
            cluster.clone(),
            DeadLetterTopics::Suffix(args.dlq_suffix.clone()),
        ));
    if !required.is_empty() {
        let mut probe = RequiredTopicsProbe::new(cluster.clone());
        for (topic, partitions) in required {
            probe = match partitions {
                Some(partitions) => probe.topic_with_partitions(topic, partitions),
                None => probe.topic(topic),
            };
        }
        checker = checker.probe(probe);
    }
    if !args.groups.is_empty() {
        checker = checker.probe(ConsumerLagProbe::new(cluster.clone(), args.groups.clone()));
    }
    if let Some(topic) = &args.canary_topic {
        match CanaryProbe::new(&args.connection.client_config(), topic.clone()) {
            Ok(probe) => checker = checker.probe(probe),
            Err(error) => {
                let _ = writeln!(output.err, "error: {error}");
                return EXIT_ERROR;
            }
        }
    }
    let report = checker.check().await;
    let written = if args.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(output.out, "{json}"))
    } else {
        write!(output.out, "{}", render(&report))
    };
    if let Err(error) = written {
        let _ = writeln!(output.err, "error: {error}");
        return EXIT_ERROR;
    }
    exit_code(report.severity, Some(args.fail_on))
}

/// Arguments of `kafka-ops restart-check`.
#[derive(Debug, Clone, Args)]
pub struct RestartCheckArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The broker to be stopped.
    #[arg(long)]
    broker: i32,
    /// Overrides every topic's `min.insync.replicas` (read from the topic configuration
    /// otherwise; where it cannot be read, the check refuses until this decides): partitions
    /// must keep this many in-sync replicas without the broker.
    #[arg(long)]
    min_insync_replicas: Option<usize>,
    /// Do not refuse a node whose controller quorum cannot be read (a KRaft combined-mode node
    /// of a dynamic quorum, or any node when the brokers' configuration cannot be read): you
    /// checked it (`kafka-metadata-quorum describe --status`).
    #[arg(long)]
    allow_unverified_quorum: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `kafka-ops restart-check`: exit 0 when the broker may be stopped, 2 when not, 3 when the
/// cluster cannot be asked.
pub async fn run_restart_check(args: RestartCheckArgs, output: &mut Output<'_>) -> i32 {
    let Some(cluster) = args.connection.connect(output).await else {
        return EXIT_ERROR;
    };
    let options = RestartGateOptions {
        min_insync_replicas: args.min_insync_replicas,
        allow_unverified_quorum: args.allow_unverified_quorum,
    };
    let verdict = match safe_to_restart(&cluster, args.broker, options).await {
        Ok(verdict) => verdict,
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            return EXIT_ERROR;
        }
    };
    let written = if args.json {
        serde_json::to_string_pretty(&verdict)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(output.out, "{json}"))
    } else if verdict.safe {
        writeln!(
            output.out,
            "broker {}: safe to restart (leads {} partitions, in sync for {})",
            verdict.broker, verdict.leads, verdict.in_sync_for
        )
    } else {
        let mut text = format!("broker {}: NOT safe to restart\n", verdict.broker);
        for refusal in &verdict.refusals {
            text.push_str(&format!("  - {refusal}\n"));
        }
        write!(output.out, "{text}")
    };
    if let Err(error) = written {
        let _ = writeln!(output.err, "error: {error}");
        return EXIT_ERROR;
    }
    if verdict.safe { 0 } else { 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_topics_parse_with_optional_partition_counts() {
        assert_eq!(
            parse_required("audit_events").unwrap(),
            ("audit_events".into(), None)
        );
        assert_eq!(
            parse_required("outbox:6").unwrap(),
            ("outbox".into(), Some(6))
        );
        assert!(parse_required("outbox:many").is_err());
    }
}
