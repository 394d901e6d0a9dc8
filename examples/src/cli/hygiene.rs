//! `kafka-ops hygiene`: the runbooks' maintenance review — inactive consumer groups and whether
//! deleting them is safe, idle topics and dead-letter depth, partition leadership per broker.

use std::time::Duration;

use clap::Args;
use kafka_ops_core::{Clock, SystemClock, Timestamp};
use kafka_ops_health::HealthError;
use kafka_ops_health::hygiene::{HygieneOptions, HygieneReport, review};
use kafka_ops_health::probes::DeadLetterTopics;

use super::{ConnectionArgs, EXIT_ERROR, FailOn, Output, exit_code};
use crate::table::{Table, compact_duration};

/// Arguments of `kafka-ops hygiene`.
#[derive(Debug, Clone, Args)]
pub struct HygieneArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Exit 1 on warning and 2 on critical (`warning`), or 2 on critical only (`critical`).
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// A group without members that consumed nothing newer than this is inactive.
    #[arg(long, value_name = "DURATION", default_value = "7days", value_parser = humantime::parse_duration)]
    inactive_after: Duration,
    /// A topic whose newest record is older than this is idle.
    #[arg(long, value_name = "DURATION", default_value = "7days", value_parser = humantime::parse_duration)]
    idle_after: Duration,
    /// Unconsumed records you accept to lose when deleting an inactive group.
    #[arg(long, value_name = "RECORDS", default_value_t = 0)]
    accept_lag: u64,
    /// Dead-letter topics end with this suffix.
    #[arg(long, default_value = ".dlq", conflicts_with = "dlq_topics")]
    dlq_suffix: String,
    /// A dead-letter topic (repeatable; replaces the suffix rule).
    #[arg(long = "dlq-topic", value_name = "TOPIC")]
    dlq_topics: Vec<String>,
}

impl HygieneArgs {
    fn options(&self) -> HygieneOptions {
        let dead_letters = if self.dlq_topics.is_empty() {
            DeadLetterTopics::Suffix(self.dlq_suffix.clone())
        } else {
            DeadLetterTopics::Named(self.dlq_topics.clone())
        };
        HygieneOptions {
            inactive_after: self.inactive_after,
            idle_after: self.idle_after,
            accepted_lag: self.accept_lag,
            dead_letters,
            ..HygieneOptions::default()
        }
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// How long before `now` `at` was, compactly (`3d ago`), or `-`.
fn age(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(
        || "-".to_string(),
        |at| format!("{} ago", compact_duration(now.saturating_since(at))),
    )
}

/// The report as three tables (groups, topics, leaders) and a summary, or as JSON.
pub fn render(report: &HygieneReport, json: bool) -> Result<String, serde_json::Error> {
    if json {
        return Ok(serde_json::to_string(report)? + "\n");
    }
    let now = report.taken_at;
    let mut groups = Table::new([
        "GROUP",
        "STATE",
        "MEMBERS",
        "COMMITTED",
        "LAG",
        "LAST-CONSUMED",
        "INACTIVE",
        "SAFE-TO-DELETE",
        "REASON",
    ]);
    for g in &report.groups {
        let committed = g
            .partitions
            .iter()
            .filter(|p| p.committed.is_some())
            .count();
        groups.row([
            g.group.clone(),
            g.state.to_string(),
            match g.members_unread {
                Some(_) => "?".to_string(),
                None => g.members.to_string(),
            },
            format!("{committed}/{}", g.partitions.len()),
            g.total_lag.to_string(),
            age(g.newest_consumed, now),
            yes_no(g.inactive).to_string(),
            yes_no(g.safe_to_delete).to_string(),
            g.reason.clone(),
        ]);
    }
    for failure in &report.unreadable_groups {
        groups.row([
            failure.group.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "no".into(),
            format!("offsets unreadable: {}", failure.reason),
        ]);
    }
    let mut topics = Table::new([
        "TOPIC",
        "PARTITIONS",
        "RECORDS",
        "NEWEST-RECORD",
        "IDLE",
        "DLQ-DEPTH",
    ]);
    for t in &report.topics {
        topics.row([
            t.topic.clone(),
            t.partitions.to_string(),
            t.records.to_string(),
            age(t.newest_record, now),
            yes_no(t.idle).to_string(),
            t.dead_letter_depth
                .map_or_else(|| "-".to_string(), |d| d.to_string()),
        ]);
    }
    let mut leaders = Table::new(["BROKER", "LEADERS", "PREFERRED", "NOT-PREFERRED"]);
    for b in &report.leadership.brokers {
        leaders.row([
            b.broker.to_string(),
            b.leaders.to_string(),
            b.preferred.to_string(),
            b.not_preferred.to_string(),
        ]);
    }
    let mut text = String::new();
    for table in [&groups, &topics, &leaders] {
        text.push_str(&table.render());
        text.push('\n');
    }
    text.push_str(&format!("leader skew: {}\n", report.leadership.skew));
    for m in &report.leadership.not_preferred {
        text.push_str(&format!(
            "not on its preferred leader: {}/{} led by {}, preferred {}\n",
            m.topic, m.partition, m.leader, m.preferred
        ));
    }
    for tp in &report.leadership.leaderless {
        text.push_str(&format!("no leader: {tp}\n"));
    }
    text.push_str(&format!("hygiene: {}", report.severity.status_word()));
    if !report.findings.is_empty() {
        text.push_str(&format!(": {}", report.findings.join("; ")));
    }
    text.push('\n');
    Ok(text)
}

/// Runs `kafka-ops hygiene`.
pub async fn run(args: HygieneArgs, output: &mut Output<'_>) -> i32 {
    match run_inner(&args, output).await {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            EXIT_ERROR
        }
    }
}

async fn run_inner(args: &HygieneArgs, output: &mut Output<'_>) -> Result<i32, HealthError> {
    let options = args.options();
    let Some(cluster) = args.connection.connect(output).await else {
        return Ok(EXIT_ERROR);
    };
    let clock: &dyn Clock = &SystemClock;
    let report = review(&cluster, &options, clock).await?;
    let text = render(&report, args.json)
        .map_err(|e| HealthError::Config(format!("cannot encode the report: {e}")))?;
    output
        .out
        .write_all(text.as_bytes())
        .map_err(|e| HealthError::Config(format!("cannot write the report: {e}")))?;
    Ok(exit_code(report.severity, args.fail_on))
}
