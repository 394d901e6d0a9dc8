//! `kafka-ops lag`: the runbooks' "check consumer lag" and "lag > 10000 → exit 1" scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{ArgGroup, Args};
use kafka_ops_core::Severity;
use kafka_ops_core::cluster::{
    GroupFailure, LagOptions, all_groups_lag, fill_time_lag_of_groups, group_lag,
};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::lag::burrow::{BurrowConfig, PartitionEvaluation, PartitionStatus};
use kafka_ops_core::lag::monitor::{LagMonitor, LagMonitorConfig};
use kafka_ops_core::lag::verdict::{GroupStatus, GroupVerdict, judge};
use kafka_ops_core::lag::{GroupLag, LagAnomaly, PartitionLag};
use kafka_ops_core::{Clock, Error, ErrorClass, IsolationLevel, SystemClock};
use serde::Serialize;

use super::{ConnectionArgs, EXIT_ERROR, FailOn, Output, ThresholdArgs, exit_code};
use crate::table::{Table, compact_duration};

/// Arguments of `kafka-ops lag`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["groups", "all_groups"])))]
pub struct LagArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// A consumer group to report (repeatable).
    #[arg(long = "group", short = 'g', value_name = "GROUP")]
    groups: Vec<String>,
    /// Every group the cluster lists (needs the ListGroups admin API).
    #[arg(long)]
    all_groups: bool,
    /// Print JSON instead of a table (one document per round in watch mode).
    #[arg(long)]
    json: bool,
    /// Exit 1 on warning and 2 on critical (`warning`), or 2 on critical only (`critical`).
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// Re-check every INTERVAL, building time-lag tables and Burrow verdicts as commits accumulate.
    #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
    watch: Option<Duration>,
    /// Stop watching after this many rounds (default: until interrupted).
    #[arg(long, requires = "watch")]
    iterations: Option<u64>,
    /// Measure lag against the last stable offset, as a `read_committed` consumer sees it.
    #[arg(long)]
    read_committed: bool,
    #[command(flatten)]
    thresholds: ThresholdArgs,
    /// Commits in Burrow's window (watch mode).
    #[arg(long, default_value_t = 10)]
    window: usize,
}

/// One partition in the JSON report.
#[derive(Debug, Serialize)]
struct PartitionReport<'a> {
    topic: &'a str,
    partition: i32,
    committed: Option<i64>,
    end_offset: Option<i64>,
    log_start: Option<i64>,
    lag: Option<u64>,
    time_lag_ms: Option<u64>,
    status: String,
    anomaly: Option<LagAnomaly>,
    unknown_reason: Option<&'a str>,
}

/// One group in the JSON report.
#[derive(Debug, Serialize)]
struct GroupReport<'a> {
    group: &'a str,
    /// The runbook's word: `ok`, `warning` or `critical`.
    #[serde(serialize_with = "runbook_status")]
    status: Severity,
    burrow_status: Option<GroupStatus>,
    total_lag: u64,
    complete: bool,
    growth_per_minute: Option<f64>,
    findings: Vec<String>,
    partitions: Vec<PartitionReport<'a>>,
}

/// A severity as the lag scripts of the runbooks print it (`ok` where there is nothing to do).
fn runbook_status<S: serde::Serializer>(severity: &Severity, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(severity.status_word())
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    taken_at: String,
    groups: Vec<GroupReport<'a>>,
    /// Groups whose committed offsets could not be read (`--all-groups`), each with its error.
    failed: &'a [GroupFailure],
}

fn partition_status(row: &PartitionLag, evaluation: Option<&PartitionEvaluation>) -> String {
    if row.unknown_reason.is_some() {
        return "UNKNOWN".into();
    }
    if row.committed.is_none() {
        return "NO-COMMIT".into();
    }
    match row.anomaly {
        Some(LagAnomaly::RetentionLoss { .. }) => return "RETENTION-LOSS".into(),
        Some(LagAnomaly::CommittedBeyondEnd { .. }) => return "BEYOND-END".into(),
        None => {}
    }
    evaluation
        .map(|e| e.status)
        .unwrap_or(PartitionStatus::Ok)
        .as_str()
        .to_string()
}

fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn time_cell(value: Option<Duration>) -> String {
    value.map_or_else(|| "-".to_string(), compact_duration)
}

/// Renders judged groups as the lag table (like `kafka-consumer-groups --describe`) or as the
/// JSON document. `evaluations` may be empty (one-shot reports have no Burrow window); `failed`
/// lists the groups whose offsets could not be read, each reported with its error.
pub fn render(
    groups: &[(GroupLag, Vec<PartitionEvaluation>, GroupVerdict)],
    failed: &[GroupFailure],
    taken_at: kafka_ops_core::Timestamp,
    json: bool,
) -> Result<String, serde_json::Error> {
    if json {
        let report = Report {
            taken_at: taken_at.to_string(),
            failed,
            groups: groups
                .iter()
                .map(|(lag, evaluations, verdict)| GroupReport {
                    group: &lag.group,
                    status: verdict.severity,
                    burrow_status: verdict.status,
                    total_lag: verdict.total_lag,
                    complete: lag.is_complete(),
                    growth_per_minute: verdict.growth_per_minute,
                    findings: verdict.findings.iter().map(|f| f.describe()).collect(),
                    partitions: lag
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(i, row)| PartitionReport {
                            topic: &row.topic,
                            partition: row.partition,
                            committed: row.committed.map(|o| o.get()),
                            end_offset: row.end_offset.map(|o| o.get()),
                            log_start: row.log_start.map(|o| o.get()),
                            lag: row.lag,
                            time_lag_ms: row
                                .time_lag
                                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                            status: partition_status(row, evaluations.get(i)),
                            anomaly: row.anomaly,
                            unknown_reason: row.unknown_reason.as_deref(),
                        })
                        .collect(),
                })
                .collect(),
        };
        return Ok(serde_json::to_string(&report)? + "\n");
    }
    let mut table = Table::new([
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "TIME-LAG",
        "STATUS",
    ]);
    let mut summaries = Vec::new();
    for (lag, evaluations, verdict) in groups {
        for (i, row) in lag.partitions.iter().enumerate() {
            let mut status = partition_status(row, evaluations.get(i));
            if let Some(reason) = &row.unknown_reason {
                status = format!("{status} ({reason})");
            }
            table.row([
                lag.group.clone(),
                row.topic.to_string(),
                row.partition.to_string(),
                cell(row.committed),
                cell(row.end_offset),
                cell(row.lag),
                time_cell(row.time_lag),
                status,
            ]);
        }
        if lag.partitions.is_empty() {
            summaries.push(format!(
                "{}: no committed offsets (unknown group, never committed, or its offsets expired)",
                lag.group
            ));
        } else {
            summaries.push(verdict.summary(3));
        }
    }
    for failure in failed {
        summaries.push(format!("{}: error: {}", failure.group, failure.reason));
    }
    let mut text = String::new();
    if !table.is_empty() {
        text.push_str(&table.render());
        text.push('\n');
    }
    for line in summaries {
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// The groups' lag, and the groups whose offsets could not be read (`--all-groups` reports them
/// and goes on; a named group that cannot be read fails the command).
async fn collect(
    cluster: &KafkaCluster,
    args: &LagArgs,
    clock: &dyn Clock,
) -> Result<(Vec<GroupLag>, Vec<GroupFailure>), Error> {
    let options = LagOptions {
        isolation: if args.read_committed {
            IsolationLevel::ReadCommitted
        } else {
            IsolationLevel::ReadUncommitted
        },
    };
    if args.all_groups {
        let all = all_groups_lag(cluster, clock, options).await?;
        return Ok((all.groups, all.failed));
    }
    let mut out = Vec::with_capacity(args.groups.len());
    for group in &args.groups {
        out.push(group_lag(cluster, group, clock, options).await?.0);
    }
    Ok((out, Vec::new()))
}

fn describe_error(error: &Error, args: &LagArgs) -> String {
    match error {
        Error::Unsupported { operation, .. } if args.all_groups => format!(
            "error: this cluster cannot {operation} ({error}); name the groups with --group"
        ),
        other => format!("error: {other}"),
    }
}

/// Runs `kafka-ops lag`.
pub async fn run(args: LagArgs, output: &mut Output<'_>) -> i32 {
    match run_inner(&args, output).await {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(output.err, "{}", describe_error(&error, &args));
            EXIT_ERROR
        }
    }
}

async fn run_inner(args: &LagArgs, output: &mut Output<'_>) -> Result<i32, Error> {
    let thresholds = args.thresholds.thresholds();
    let monitor_config = LagMonitorConfig {
        burrow: BurrowConfig {
            window: args.window,
            ..BurrowConfig::default()
        },
        thresholds,
        ..LagMonitorConfig::default()
    };
    monitor_config.validate()?;
    let Some(cluster) = args.connection.connect(output).await else {
        return Ok(EXIT_ERROR);
    };
    let clock = SystemClock;

    let Some(interval) = args.watch else {
        let (mut groups, failed) = collect(&cluster, args, &clock).await?;
        // Every group's records are read together, not group by group. The offset lag is read
        // already: a time lag that cannot be read (no READ on the topic, a broker going away)
        // leaves its column empty rather than the report unwritten.
        if let Err(error) = fill_time_lag_of_groups(&cluster, &mut groups).await {
            let _ = writeln!(
                output.err,
                "warning: time lag not read: {}",
                error.describe()
            );
        }
        let mut judged = Vec::with_capacity(groups.len());
        for lag in groups.drain(..) {
            let verdict = judge(&lag, &[], None, &thresholds);
            judged.push((lag, Vec::new(), verdict));
        }
        let worst = worst_of(&judged, &failed);
        write_report(output, &judged, &failed, clock.wall(), args.json)?;
        return Ok(exit_code(worst, args.fail_on));
    };

    let mut monitors: BTreeMap<String, LagMonitor> = BTreeMap::new();
    let mut round = 0u64;
    let mut worst;
    loop {
        round += 1;
        match collect(&cluster, args, &clock).await {
            Ok((groups, failed)) => {
                let mut judged = Vec::with_capacity(groups.len());
                for mut lag in groups {
                    let monitor = monitors
                        .entry(lag.group.clone())
                        .or_insert_with(|| LagMonitor::new(monitor_config));
                    monitor.observe(&mut lag)?;
                    let now = clock.wall();
                    let evaluations = monitor.evaluate(&lag, now);
                    let verdict = monitor.verdict(&lag, now);
                    judged.push((lag, evaluations, verdict));
                }
                worst = worst_of(&judged, &failed);
                if !args.json {
                    let _ = writeln!(output.out, "--- round {round} at {}", clock.wall());
                }
                write_report(output, &judged, &failed, clock.wall(), args.json)?;
            }
            // A round the cluster could not answer (a broker restarting, a coordinator
            // moving) does not end the watch: it is said, counts as critical (nobody can tell)
            // and the next round tries again.
            Err(error) if error.class() == ErrorClass::Transient => {
                let _ = writeln!(
                    output.err,
                    "warning: round {round} at {}: lag not read: {}",
                    clock.wall(),
                    error.describe()
                );
                worst = Severity::Critical;
            }
            Err(error) => return Err(error),
        }
        if args.iterations.is_some_and(|n| round >= n) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(exit_code(worst, args.fail_on))
}

/// The worst verdict; a group whose lag cannot be read counts as critical (nobody can tell).
fn worst_of(
    judged: &[(GroupLag, Vec<PartitionEvaluation>, GroupVerdict)],
    failed: &[GroupFailure],
) -> Severity {
    let unreadable = (!failed.is_empty()).then_some(Severity::Critical);
    judged
        .iter()
        // No committed offset at all: nothing shows the group keeping up.
        .map(|(lag, _, v)| {
            if lag.partitions.is_empty() {
                v.severity.max(Severity::Warning)
            } else {
                v.severity
            }
        })
        .chain(unreadable)
        .max()
        .unwrap_or(Severity::Info)
}

fn write_report(
    output: &mut Output<'_>,
    groups: &[(GroupLag, Vec<PartitionEvaluation>, GroupVerdict)],
    failed: &[GroupFailure],
    taken_at: kafka_ops_core::Timestamp,
    json: bool,
) -> Result<(), Error> {
    let text = render(groups, failed, taken_at, json)
        .map_err(|e| Error::InvalidInput(format!("cannot encode the report: {e}")))?;
    output
        .out
        .write_all(text.as_bytes())
        .map_err(|e| Error::InvalidInput(format!("cannot write the report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::lag::verdict::LagThresholds;
    use kafka_ops_core::{Offset, Timestamp, TopicPartition, Watermarks};

    fn lag() -> GroupLag {
        let marks = Some(Watermarks {
            low: Offset::ZERO,
            high: Offset::new(20).unwrap(),
        });
        GroupLag::new(
            "billing",
            Timestamp::from_millis(0),
            vec![
                PartitionLag::compute(
                    &TopicPartition::new("orders", 0),
                    Some(Offset::new(5).unwrap()),
                    marks,
                ),
                PartitionLag::compute(&TopicPartition::new("orders", 1), None, marks),
                PartitionLag::unknown(
                    &TopicPartition::new("orders", 2),
                    Some(Offset::ZERO),
                    "broker 2 down",
                ),
            ],
        )
    }

    #[test]
    fn table_shows_unknowns_as_dashes_with_reasons() {
        let lag = lag();
        let verdict = judge(&lag, &[], None, &LagThresholds::default());
        let text = render(
            &[(lag, Vec::new(), verdict)],
            &[GroupFailure {
                group: "locked".into(),
                code: None,
                reason: "not allowed".into(),
            }],
            Timestamp::from_millis(0),
            false,
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("GROUP"));
        assert!(
            lines[1].contains("15") && lines[1].ends_with("OK"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("NO-COMMIT"), "{}", lines[2]);
        assert!(lines[3].contains("UNKNOWN (broker 2 down)"), "{}", lines[3]);
        assert!(text.contains("billing: warning"), "{text}");
        assert!(text.contains("locked: error: not allowed"), "{text}");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let lag = lag();
        let verdict = judge(&lag, &[], None, &LagThresholds::default());
        let text = render(
            &[(lag, Vec::new(), verdict)],
            &[],
            Timestamp::from_millis(0),
            true,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let group = &json["groups"][0];
        assert_eq!(group["group"], "billing");
        assert_eq!(group["status"], "warning");
        assert_eq!(group["total_lag"], 15);
        assert_eq!(group["complete"], false);
        let partitions = group["partitions"].as_array().unwrap();
        assert_eq!(partitions[0]["committed"], 5);
        assert_eq!(partitions[0]["end_offset"], 20);
        assert_eq!(partitions[0]["lag"], 15);
        assert_eq!(partitions[1]["committed"], serde_json::Value::Null);
        assert_eq!(partitions[1]["lag"], serde_json::Value::Null);
        assert_eq!(partitions[2]["unknown_reason"], "broker 2 down");
        assert_eq!(json["failed"], serde_json::json!([]));
    }
}
