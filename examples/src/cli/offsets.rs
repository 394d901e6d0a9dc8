//! `kafka-ops offsets`: the runbooks' `kafka-consumer-groups.sh --reset-offsets`, the daily
//! offsets backup and restore, and "wait for the pipeline to drain".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use kafka_ops_core::TopicPartition;
use kafka_ops_recovery::ResetPlan;
use kafka_ops_recovery::{MembershipCheck, OffsetOps, OffsetsBackup, ResetTarget};

use super::{ConnectionArgs, EXIT_ERROR, Output};
use crate::table::{Table, compact_duration};

/// Arguments of `kafka-ops offsets`.
#[derive(Debug, Clone, Args)]
pub struct OffsetsArgs {
    #[command(subcommand)]
    command: OffsetsCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum OffsetsCommand {
    /// Move a group's committed offsets (dry run unless --execute).
    Reset(ResetArgs),
    /// Write a group's committed offsets to a JSON file (or stdout).
    Export(ExportArgs),
    /// Restore offsets from a JSON file written by export (dry run unless --execute).
    Import(ImportArgs),
    /// Wait until a group has no lag left.
    WaitDrain(WaitDrainArgs),
}

#[derive(Debug, Clone, Args)]
struct Safety {
    /// Apply the change; without it only the plan (before → after) is shown.
    #[arg(long)]
    execute: bool,
    /// Go ahead when the broker cannot describe groups at all (it says so); a description that
    /// failed otherwise (a timeout, a coordinator moving) still refuses.
    #[arg(long)]
    allow_unverified_membership: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Args)]
struct ResetArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The group.
    #[arg(long, short = 'g')]
    group: String,
    /// A topic, all its partitions (repeatable).
    #[arg(long = "topic", short = 't')]
    topics: Vec<String>,
    /// One partition, `topic:partition` (repeatable).
    #[arg(long = "partition", value_parser = parse_partition)]
    partitions: Vec<TopicPartition>,
    /// earliest, latest, datetime:RFC3339, offset:N or shift:±N.
    #[arg(long)]
    to: ResetTarget,
    #[command(flatten)]
    safety: Safety,
}

#[derive(Debug, Clone, Args)]
struct ExportArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The group.
    #[arg(long, short = 'g')]
    group: String,
    /// The file to write (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct ImportArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// A file written by `offsets export`.
    #[arg(long)]
    input: PathBuf,
    /// Restore into this group instead of the one in the file.
    #[arg(long, short = 'g')]
    group: Option<String>,
    #[command(flatten)]
    safety: Safety,
}

#[derive(Debug, Clone, Args)]
struct WaitDrainArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The group.
    #[arg(long, short = 'g')]
    group: String,
    /// Give up after this long (exit 1).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// How often to check.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

fn parse_partition(text: &str) -> Result<TopicPartition, String> {
    let (topic, partition) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected topic:partition, got {text:?}"))?;
    let partition = partition
        .parse::<i32>()
        .map_err(|_| format!("expected topic:partition, got {text:?}"))?;
    Ok(TopicPartition::new(topic, partition))
}

fn fail(output: &mut Output<'_>, error: impl std::fmt::Display) -> i32 {
    let _ = writeln!(output.err, "error: {error}");
    EXIT_ERROR
}

fn render_plan(plan: &ResetPlan, executed: bool) -> String {
    let mut table = Table::new(["GROUP", "TOPIC", "PARTITION", "BEFORE", "AFTER", ""]);
    for change in &plan.changes {
        table.row([
            plan.group.clone(),
            change.topic.clone(),
            change.partition.to_string(),
            change.before.map_or("-".into(), |o| o.to_string()),
            change.after.to_string(),
            if change.clamped {
                "clamped to the log range".into()
            } else {
                String::new()
            },
        ]);
    }
    format!(
        "{}\n{}\n",
        table.render(),
        if executed {
            format!("reset {} partitions of {}", plan.changes.len(), plan.group)
        } else {
            "dry run: nothing changed (add --execute to apply)".to_string()
        }
    )
}

async fn finish_plan(
    ops: &OffsetOps,
    plan: ResetPlan,
    safety: &Safety,
    output: &mut Output<'_>,
) -> i32 {
    if safety.execute {
        let check = if safety.allow_unverified_membership {
            MembershipCheck::SkipWhenUnsupported
        } else {
            MembershipCheck::Required
        };
        if let Err(error) = ops.apply(&plan, check).await {
            return fail(output, error);
        }
    }
    let written = if safety.json {
        serde_json::to_string_pretty(&serde_json::json!({"executed": safety.execute, "plan": plan}))
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(output.out, "{json}"))
    } else {
        write!(output.out, "{}", render_plan(&plan, safety.execute))
    };
    match written {
        Ok(()) => 0,
        Err(error) => fail(output, error),
    }
}

async fn connect(connection: &ConnectionArgs, output: &mut Output<'_>) -> Option<OffsetOps> {
    let cluster = connection.connect(output).await?;
    Some(OffsetOps::new(
        Arc::new(cluster),
        connection.client_config(),
    ))
}

/// Runs `kafka-ops offsets`.
pub async fn run(args: OffsetsArgs, output: &mut Output<'_>) -> i32 {
    match args.command {
        OffsetsCommand::Reset(args) => {
            let Some(ops) = connect(&args.connection, output).await else {
                return EXIT_ERROR;
            };
            match ops
                .plan_reset(&args.group, &args.topics, &args.partitions, args.to)
                .await
            {
                Ok(plan) => finish_plan(&ops, plan, &args.safety, output).await,
                Err(error) => fail(output, error),
            }
        }
        OffsetsCommand::Export(args) => {
            let Some(ops) = connect(&args.connection, output).await else {
                return EXIT_ERROR;
            };
            let backup = match ops.export(&args.group).await {
                Ok(backup) => backup,
                Err(error) => return fail(output, error),
            };
            let json = match serde_json::to_string_pretty(&backup) {
                Ok(json) => json,
                Err(error) => return fail(output, error),
            };
            let partitions: usize = backup.offsets.values().map(|p| p.len()).sum();
            match &args.output {
                Some(path) => match std::fs::write(path, json + "\n") {
                    Ok(()) => {
                        let _ = writeln!(
                            output.err,
                            "exported {partitions} offsets of {} to {}",
                            backup.group,
                            path.display()
                        );
                        0
                    }
                    Err(error) => fail(output, format!("{}: {error}", path.display())),
                },
                None => match writeln!(output.out, "{json}") {
                    Ok(()) => 0,
                    Err(error) => fail(output, error),
                },
            }
        }
        OffsetsCommand::Import(args) => {
            let backup: OffsetsBackup = match std::fs::read_to_string(&args.input)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            {
                Ok(backup) => backup,
                Err(error) => return fail(output, format!("{}: {error}", args.input.display())),
            };
            let Some(ops) = connect(&args.connection, output).await else {
                return EXIT_ERROR;
            };
            match ops.plan_import(&backup, args.group.as_deref()).await {
                Ok(plan) => finish_plan(&ops, plan, &args.safety, output).await,
                Err(error) => fail(output, error),
            }
        }
        OffsetsCommand::WaitDrain(args) => {
            let Some(ops) = connect(&args.connection, output).await else {
                return EXIT_ERROR;
            };
            // Each check as it happens: a wait runs for minutes, and whoever watches it wants
            // to see the lag fall.
            let out = &mut *output.out;
            let result = ops
                .wait_for_drain(&args.group, args.wait, args.interval, |p| {
                    let _ = writeln!(out, "{:>8}  lag {}", compact_duration(p.elapsed), p.lag);
                    let _ = out.flush();
                })
                .await;
            match result {
                Ok(waited) => {
                    let _ = writeln!(
                        output.out,
                        "{} drained after {}",
                        args.group,
                        compact_duration(waited)
                    );
                    0
                }
                Err(
                    error @ (kafka_ops_recovery::RecoveryError::NotDrained { .. }
                    | kafka_ops_recovery::RecoveryError::NoCommittedOffsets { .. }),
                ) => {
                    let _ = writeln!(output.err, "{error}");
                    1
                }
                Err(error) => fail(output, error),
            }
        }
    }
}
