//! `kafka-ops dlq`: runbook 001's "DLQ filling up" steps — inspect the dead letters, find the
//! error pattern, replay after the fix, archive and purge after the investigation.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use kafka_ops_core::{ErrorClass, Timestamp};
use kafka_ops_dlq::inspect::inspect;
use kafka_ops_dlq::purge::{archive, purge};
use kafka_ops_dlq::{Destination, DlqError, HeaderMatch, Replay, Selection};
use serde::Serialize;

use super::{ConnectionArgs, EXIT_ERROR, Output};
use crate::table::{Table, compact_duration};

/// Arguments of `kafka-ops dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum DlqCommand {
    /// Depth per partition, a sample, and the error patterns (class + message fingerprint).
    Inspect(InspectArgs),
    /// Copy selected dead letters back to their topics (or an allow-listed one), resumably.
    Replay(ReplayArgs),
    /// Write a dead-letter topic to a JSON-lines file (base64 bytes, every header).
    Archive(ArchiveArgs),
    /// Archive, then delete the archived records (needs --confirm <topic>).
    Purge(PurgeArgs),
}

#[derive(Debug, Clone, Args)]
struct Topic {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The dead-letter topic.
    #[arg(long, short = 't')]
    topic: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Args)]
struct InspectArgs {
    #[command(flatten)]
    target: Topic,
    /// Records to show.
    #[arg(long, default_value_t = 5)]
    sample: usize,
}

#[derive(Debug, Clone, Args)]
struct ReplayArgs {
    #[command(flatten)]
    target: Topic,
    /// Names the replay (and its consumer group); run again with the same id to resume.
    #[arg(long)]
    id: String,
    /// Only records that failed on this topic.
    #[arg(long)]
    original_topic: Option<String>,
    /// Only this error class: transient, permanent or fatal.
    #[arg(long)]
    class: Option<ErrorClass>,
    /// Only this error fingerprint (as `dlq inspect` shows it).
    #[arg(long)]
    fingerprint: Option<String>,
    /// Only records dead-lettered at or after: RFC 3339 time, or a duration ago ("2h").
    #[arg(long, value_parser = parse_time)]
    since: Option<Timestamp>,
    /// Only records dead-lettered before: RFC 3339 time, or a duration ago.
    #[arg(long, value_parser = parse_time)]
    until: Option<Timestamp>,
    /// Only records with this header, `name` or `name=value`.
    #[arg(long)]
    header: Option<String>,
    /// Write to this topic instead of each record's original topic (must be --allow'ed).
    #[arg(long)]
    to: Option<String>,
    /// Allow this destination topic (repeatable).
    #[arg(long = "allow")]
    allowed: Vec<String>,
    /// At most this many records per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Burst size for --rate.
    #[arg(long, default_value_t = 100)]
    burst: u32,
    /// Refuse records already replayed this many times.
    #[arg(long, default_value_t = 3)]
    max_replays: u32,
    /// List what would be replayed; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Forget an earlier run of this id and start from the beginning.
    #[arg(long)]
    start_over: bool,
}

#[derive(Debug, Clone, Args)]
struct ArchiveArgs {
    #[command(flatten)]
    target: Topic,
    /// The archive file to create (never overwritten).
    #[arg(long, short = 'o')]
    output: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct PurgeArgs {
    #[command(flatten)]
    target: Topic,
    /// The archive file written before anything is deleted.
    #[arg(long)]
    archive: PathBuf,
    /// The topic's name again, to confirm.
    #[arg(long)]
    confirm: String,
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let then = now.saturating_sub(ago);
        return Ok(Timestamp::from_millis(
            i64::try_from(then.as_millis()).unwrap_or(i64::MAX),
        ));
    }
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is neither an RFC 3339 time nor a duration: {e}"))?;
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{text} is before 1970"))?;
    Ok(Timestamp::from_millis(
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX),
    ))
}

/// `[#####-----]  50%  1200/2400  800/s  ETA 2s`
fn progress_line(done: u64, total: u64, rate: f64, eta: Option<Duration>) -> String {
    const WIDTH: u64 = 24;
    let filled = done
        .min(total)
        .saturating_mul(WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    let percent = (done.min(total) * 100).checked_div(total).unwrap_or(100);
    format!(
        "[{}{}] {percent:>3}%  {done}/{total}  {rate:.0}/s  ETA {}",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        eta.map_or_else(|| "?".to_string(), compact_duration)
    )
}

/// Runs `work`, drawing a progress line on stderr from the `(done, total)` counts it reports
/// through `counts`, and ends the line when it finishes.
async fn with_progress<T>(
    label: &str,
    work: impl std::future::Future<Output = T>,
    mut counts: tokio::sync::watch::Receiver<(u64, u64)>,
    output: &mut Output<'_>,
) -> T {
    let started = std::time::Instant::now();
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            changed = counts.changed() => {
                if changed.is_ok() {
                    let (done, total) = *counts.borrow_and_update();
                    let secs = started.elapsed().as_secs_f64();
                    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                    let eta = (rate > 0.0)
                        .then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate));
                    let _ = write!(output.err, "\r{label} {}", progress_line(done, total, rate, eta));
                }
            }
        }
    };
    let _ = writeln!(output.err);
    result
}

fn fail(output: &mut Output<'_>, error: &DlqError) -> i32 {
    let _ = writeln!(output.err, "error: {error}");
    EXIT_ERROR
}

fn print_json(output: &mut Output<'_>, value: &impl Serialize) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            let _ = writeln!(output.out, "{text}");
            0
        }
        Err(error) => {
            let _ = writeln!(output.err, "error: {error}");
            EXIT_ERROR
        }
    }
}

fn time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_string())
}

/// Runs `kafka-ops dlq ...`.
pub async fn run(args: DlqArgs, output: &mut Output<'_>) -> i32 {
    match args.command {
        DlqCommand::Inspect(args) => run_inspect(args, output).await,
        DlqCommand::Replay(args) => run_replay(args, output).await,
        DlqCommand::Archive(args) => run_archive(args, output).await,
        DlqCommand::Purge(args) => run_purge(args, output).await,
    }
}

#[derive(Serialize)]
struct SampleRecord {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    info: kafka_ops_core::dead_letter::headers::DeadLetterInfo,
}

/// A readable preview of bytes: UTF-8 with replacements, at most 120 characters.
fn preview(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| {
        let text = String::from_utf8_lossy(b);
        let mut cut: String = text.chars().take(120).collect();
        if text.chars().count() > 120 {
            cut.push('…');
        }
        cut
    })
}

async fn run_inspect(args: InspectArgs, output: &mut Output<'_>) -> i32 {
    let config = args.target.connection.client_config();
    let found = match inspect(&config, &args.target.topic, args.sample).await {
        Ok(found) => found,
        Err(error) => return fail(output, &error),
    };
    let sample: Vec<SampleRecord> = found
        .sample
        .iter()
        .map(|(record, info)| SampleRecord {
            partition: record.partition,
            offset: record.offset.get(),
            key: preview(record.key()),
            value: preview(record.value()),
            info: info.clone(),
        })
        .collect();
    if args.target.json {
        #[derive(Serialize)]
        struct Report<'a> {
            #[serde(flatten)]
            inspection: &'a kafka_ops_dlq::inspect::Inspection,
            sample: Vec<SampleRecord>,
        }
        return print_json(
            output,
            &Report {
                inspection: &found,
                sample,
            },
        );
    }
    let mut depth = Table::new(["PARTITION", "LOW", "HIGH", "DEPTH"]);
    for p in &found.partitions {
        depth.row([
            p.partition.to_string(),
            p.low.to_string(),
            p.high.to_string(),
            p.depth().to_string(),
        ]);
    }
    let mut patterns = Table::new([
        "COUNT",
        "CLASS",
        "FINGERPRINT",
        "PATTERN",
        "FIRST SEEN",
        "LAST SEEN",
        "TOPICS",
    ]);
    for pattern in &found.patterns {
        patterns.row([
            pattern.count.to_string(),
            pattern
                .error_class
                .map(|c| c.as_str().to_string())
                .or_else(|| pattern.error_type.clone())
                .unwrap_or_else(|| "-".into()),
            pattern.fingerprint.clone(),
            pattern.normalized.clone(),
            time(pattern.first_seen),
            time(pattern.last_seen),
            pattern.original_topics.join(","),
        ]);
    }
    let mut samples = Table::new(["PARTITION", "OFFSET", "FROM", "CLASS", "ERROR", "KEY"]);
    for s in &sample {
        samples.row([
            s.partition.to_string(),
            s.offset.to_string(),
            match (&s.info.original_topic, s.info.original_offset) {
                (Some(t), Some(o)) => format!("{t}@{o}"),
                (Some(t), None) => t.clone(),
                _ => "-".into(),
            },
            s.info
                .error_class
                .map_or_else(|| "-".into(), |c| c.as_str().to_string()),
            s.info.error_message.clone().unwrap_or_else(|| "-".into()),
            s.key.clone().unwrap_or_else(|| "(null)".into()),
        ]);
    }
    let _ = write!(
        output.out,
        "{} holds {} dead letters ({} read)\n\n{}\nERROR PATTERNS\n{}\nSAMPLE\n{}",
        found.topic,
        found.depth,
        found.read,
        depth.render(),
        patterns.render(),
        samples.render()
    );
    0
}

async fn run_replay(args: ReplayArgs, output: &mut Output<'_>) -> i32 {
    let config = args.target.connection.client_config();
    let selection = Selection {
        original_topic: args.original_topic,
        error_class: args.class,
        fingerprint: args.fingerprint,
        since: args.since,
        until: args.until,
        header: args.header.as_deref().map(HeaderMatch::parse),
    };
    let (progress_tx, progress_rx) = tokio::sync::watch::channel((0_u64, 0_u64));
    let mut replay = Replay::new(args.target.topic.clone(), args.id)
        .select(selection)
        .max_replays(args.max_replays)
        .dry_run(args.dry_run)
        .start_over(args.start_over)
        .on_progress(move |p| {
            let _ = progress_tx.send((p.scanned, p.total));
        });
    if let Some(topic) = args.to {
        replay = replay.to(Destination::Topic(topic));
    }
    for topic in args.allowed {
        replay = replay.allow(topic);
    }
    if let Some(rate) = args.rate {
        replay = replay.rate_limit(rate, args.burst);
    }
    let result = with_progress("replay", replay.run(&config), progress_rx, output).await;
    let report = match result {
        Ok(report) => report,
        Err(error) => return fail(output, &error),
    };
    if args.target.json {
        return print_json(output, &report);
    }
    if report.already_finished {
        let _ = writeln!(
            output.out,
            "replay {} already finished: nothing to do (use --start-over to replay again)",
            report.id
        );
        return 0;
    }
    if report.dry_run {
        let mut table = Table::new(["PARTITION", "OFFSET", "DESTINATION", "CLASS", "ERROR"]);
        for c in &report.candidates {
            table.row([
                c.partition.to_string(),
                c.offset.to_string(),
                c.destination.clone(),
                c.error_class.clone().unwrap_or_else(|| "-".into()),
                c.error_message.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let _ = write!(output.out, "{}", table.render());
    }
    let mut destinations = Table::new(["DESTINATION", "RECORDS"]);
    for (topic, count) in &report.by_destination {
        destinations.row([topic.clone(), count.to_string()]);
    }
    let _ = write!(
        output.out,
        "{}\n{}: scanned {}, selected {}, {} {}, already written before a crash {}, \
         filtered out {}, refused by the loop guard {}, without a destination {}, \
         truncated {}, removed before they were read {}\n",
        destinations.render(),
        if report.dry_run {
            "dry run: nothing written"
        } else {
            "replayed"
        },
        report.scanned,
        report.selected,
        if report.dry_run {
            "would write"
        } else {
            "wrote"
        },
        report.by_destination.values().sum::<u64>(),
        report.already_replayed,
        report.filtered_out,
        report.refused_loop_guard,
        report.refused_no_destination,
        report.refused_truncated,
        report.removed_unread,
    );
    0
}

async fn run_archive(args: ArchiveArgs, output: &mut Output<'_>) -> i32 {
    let config = args.target.connection.client_config();
    let (tx, rx) = tokio::sync::watch::channel((0_u64, 0_u64));
    let run = archive(
        &config,
        &args.target.topic,
        &args.output,
        move |done, total| {
            let _ = tx.send((done, total));
        },
    );
    let result = with_progress("archive", run, rx, output).await;
    match result {
        Ok(report) if args.target.json => print_json(output, &report),
        Ok(report) => {
            let _ = writeln!(
                output.out,
                "archived {} records ({} bytes) of {} to {}",
                report.records,
                report.bytes,
                report.topic,
                report.path.display()
            );
            0
        }
        Err(error) => fail(output, &error),
    }
}

async fn run_purge(args: PurgeArgs, output: &mut Output<'_>) -> i32 {
    let config = args.target.connection.client_config();
    match purge(&config, &args.target.topic, &args.archive, &args.confirm).await {
        Ok(report) if args.target.json => print_json(output, &report),
        Ok(report) => {
            let _ = writeln!(
                output.out,
                "archived {} records to {}, then deleted them from {}",
                report.archive.records,
                report.archive.path.display(),
                report.archive.topic
            );
            0
        }
        Err(error) => fail(output, &error),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn progress_lines_show_share_rate_and_eta() {
        assert_eq!(
            progress_line(50, 200, 25.0, Some(Duration::from_secs(6))),
            "[######------------------]  25%  50/200  25/s  ETA 6s"
        );
        assert_eq!(
            progress_line(0, 0, 0.0, None),
            "[########################] 100%  0/0  0/s  ETA ?"
        );
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        assert_eq!(
            parse_time("2026-11-20T10:00:00Z").unwrap(),
            Timestamp::from_millis(1_795_168_800_000)
        );
        let hour_ago = parse_time("1h").unwrap().as_millis();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - 3_600_000 - hour_ago).abs() < 5_000);
        assert!(parse_time("yesterday-ish").is_err());
    }
}
