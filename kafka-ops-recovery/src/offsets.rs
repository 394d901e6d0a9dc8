//! The runbooks' `kafka-consumer-groups.sh` offset commands as functions: reset (earliest,
//! latest, a datetime, an offset, a shift) with a dry-run plan showing before → after, export
//! and import (the daily offsets backup), and `wait_for_drain`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::{
    ClusterQuery, GroupQuery, LagOptions, PartitionError, PartitionResults, group_lag,
};
use kafka_ops_core::kafka::commit_group_offsets;
use kafka_ops_core::{
    Clock, Error, IsolationLevel, KafkaCode, Offset, OffsetSpec, SystemClock, Timestamp,
    TopicPartition,
};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::RecoveryError;

/// Where a reset moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTarget {
    /// The log start: reprocess everything still retained.
    Earliest,
    /// The end: skip everything not consumed yet.
    Latest,
    /// The first record at or after this time (the end where none is).
    DateTime(Timestamp),
    /// This offset, clamped into the partition's range.
    Offset(i64),
    /// The committed offset moved by this much (negative: back), clamped; from the log start
    /// where the group never committed.
    ShiftBy(i64),
}

impl fmt::Display for ResetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetTarget::Earliest => f.write_str("earliest"),
            ResetTarget::Latest => f.write_str("latest"),
            ResetTarget::DateTime(at) => write!(f, "datetime:{at}"),
            ResetTarget::Offset(offset) => write!(f, "offset:{offset}"),
            ResetTarget::ShiftBy(by) => write!(f, "shift:{by}"),
        }
    }
}

impl FromStr for ResetTarget {
    type Err = RecoveryError;

    /// `earliest`, `latest`, `datetime:2026-11-23T08:00:00Z`, `offset:N`, `shift:±N`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RecoveryError::Config(format!(
                "reset target {text:?}: expected earliest, latest, datetime:RFC3339, offset:N or shift:±N"
            ))
        };
        match text.split_once(':') {
            None if text == "earliest" => Ok(ResetTarget::Earliest),
            None if text == "latest" => Ok(ResetTarget::Latest),
            Some(("datetime", at)) => humantime::parse_rfc3339_weak(at)
                .map(|t| ResetTarget::DateTime(Timestamp::from_system_time(t)))
                .map_err(|_| bad()),
            Some(("offset", n)) => n.parse().map(ResetTarget::Offset).map_err(|_| bad()),
            Some(("shift", n)) => n.parse().map(ResetTarget::ShiftBy).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetChange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset now (`None`: never committed).
    pub before: Option<i64>,
    /// The offset it will be.
    pub after: i64,
    /// The target fell outside the partition's range and was clamped to it.
    pub clamped: bool,
}

impl OffsetChange {
    /// `tp` moving from `before` to `wanted`, kept inside the log `[low, high]`: an offset
    /// outside it would send the group's consumers wherever their `auto.offset.reset` says.
    fn clamped_to_log(
        tp: &TopicPartition,
        before: Option<i64>,
        wanted: i64,
        (low, high): (i64, i64),
    ) -> Self {
        let after = wanted.clamp(low, high.max(low));
        OffsetChange {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            before,
            after,
            clamped: after != wanted,
        }
    }
}

/// A reset worked out and not applied yet: what `--dry-run` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetPlan {
    /// The group.
    pub group: String,
    /// Where it moves.
    pub target: ResetTarget,
    /// Partition by partition.
    pub changes: Vec<OffsetChange>,
}

/// A group's committed offsets as a file keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsBackup {
    /// The group.
    pub group: String,
    /// When they were read.
    pub exported_at: Timestamp,
    /// Offsets by topic, then partition.
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// Whether a reset may go ahead when the broker cannot say if the group has members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MembershipCheck {
    /// Refuse unless the broker confirms the group has no members.
    #[default]
    Required,
    /// Go ahead when the broker cannot describe groups (it answers `UNSUPPORTED_VERSION` or
    /// `_UNSUPPORTED_FEATURE`, as librdkafka's mock cluster does); still refuse when it says
    /// members are there, or when describing the group failed otherwise (a timeout, a
    /// coordinator moving, a refusal), which says nothing about its members.
    SkipWhenUnsupported,
}

/// Progress of [`OffsetOps::wait_for_drain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainProgress {
    /// Total lag now.
    pub lag: u64,
    /// Time waited so far.
    pub elapsed: Duration,
}

/// Refuses when `group` has members (or when that cannot be known and `check` requires it).
pub async fn ensure_group_inactive(
    groups: &dyn GroupQuery,
    group: &str,
    check: MembershipCheck,
) -> Result<(), RecoveryError> {
    match groups.describe_groups(&[group.to_string()]).await {
        Ok(descriptions) => {
            // Kafka describes a group it does not know as `Dead`: an answer without the group
            // says nothing about its members.
            let Some(description) = descriptions.into_iter().find(|d| d.group == group) else {
                return Err(RecoveryError::CannotVerifyGroup {
                    group: group.to_string(),
                    source: Box::new(Error::Kafka {
                        operation: "describe group",
                        code: None,
                        source: "the answer does not describe the group".into(),
                    }),
                });
            };
            if let Some(error) = &description.error {
                // Only a broker that cannot describe groups at all may be skipped: a timeout, a
                // coordinator moving or a refusal says nothing about the group's members.
                let unsupported = error.code.is_some_and(KafkaCode::is_unsupported);
                let source = if unsupported {
                    Error::Unsupported {
                        operation: "describe group",
                        reason: error.reason.clone(),
                    }
                } else {
                    Error::Kafka {
                        operation: "describe group",
                        code: error.code,
                        source: error.reason.clone().into(),
                    }
                };
                return if unsupported && check == MembershipCheck::SkipWhenUnsupported {
                    tracing::warn!(group, %error, "the broker could not describe the group; resetting without checking for members");
                    Ok(())
                } else {
                    Err(RecoveryError::CannotVerifyGroup {
                        group: group.to_string(),
                        source: Box::new(source),
                    })
                };
            }
            if !description.members.is_empty() || description.state.has_members() {
                return Err(RecoveryError::GroupActive {
                    group: group.to_string(),
                    state: description.state.to_string(),
                    members: description
                        .members
                        .iter()
                        .map(|m| format!("{} ({})", m.client_id, m.host))
                        .collect(),
                });
            }
            Ok(())
        }
        Err(Error::Unsupported { .. }) if check == MembershipCheck::SkipWhenUnsupported => {
            tracing::warn!(
                group,
                "the broker cannot describe groups; resetting without checking for members"
            );
            Ok(())
        }
        Err(error) => Err(RecoveryError::CannotVerifyGroup {
            group: group.to_string(),
            source: Box::new(error),
        }),
    }
}

/// Per-partition answers by partition, failing on the first partition answered with an error.
fn answers<T>(
    what: &'static str,
    results: PartitionResults<T>,
) -> Result<BTreeMap<TopicPartition, T>, RecoveryError> {
    results
        .into_iter()
        .map(|(partition, result)| match result {
            Ok(value) => Ok((partition, value)),
            Err(source) => Err(RecoveryError::PartitionUnreadable {
                what,
                partition,
                source,
            }),
        })
        .collect()
}

/// The answer for `tp`; a partition left out of the answer is an error too, not a default.
fn answer<T: Clone>(
    answers: &BTreeMap<TopicPartition, T>,
    what: &'static str,
    tp: &TopicPartition,
) -> Result<T, RecoveryError> {
    answers
        .get(tp)
        .cloned()
        .ok_or_else(|| RecoveryError::PartitionUnreadable {
            what,
            partition: tp.clone(),
            source: PartitionError {
                code: None,
                reason: "the broker's answer left it out".into(),
            },
        })
}

/// Offset operations on one cluster.
#[derive(Clone)]
pub struct OffsetOps {
    cluster: Arc<dyn ClusterQuery>,
    client_config: ClientConfig,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for OffsetOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffsetOps")
            .field(
                "client_config",
                &kafka_ops_core::kafka::redacted_config(&self.client_config),
            )
            .finish()
    }
}

impl OffsetOps {
    /// Operations through `cluster` (queries) and `client_config` (commits; SASL/TLS included).
    pub fn new(cluster: Arc<dyn ClusterQuery>, client_config: ClientConfig) -> Self {
        OffsetOps {
            cluster,
            client_config,
            clock: Arc::new(SystemClock),
        }
    }

    /// Timestamps exports and drains with `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Works out a reset of `group` on `topics` (every partition of each) and `partitions`
    /// (individually), without changing anything.
    pub async fn plan_reset(
        &self,
        group: &str,
        topics: &[String],
        partitions: &[TopicPartition],
        target: ResetTarget,
    ) -> Result<ResetPlan, RecoveryError> {
        let mut selected: Vec<TopicPartition> = partitions.to_vec();
        if !topics.is_empty() {
            let metadata = self.cluster.metadata(topics).await?;
            for topic in topics {
                let info = metadata
                    .topic(topic)
                    .filter(|t| t.error.is_none())
                    .ok_or_else(|| {
                        RecoveryError::Config(format!("topic {topic} does not exist"))
                    })?;
                selected.extend(info.topic_partitions());
            }
        }
        selected.sort();
        selected.dedup();
        if selected.is_empty() {
            return Err(RecoveryError::Config(
                "no topic or partition selected".into(),
            ));
        }
        let committed = answers(
            "committed offset",
            self.cluster.committed_offsets(group, &selected).await?,
        )?;
        let marks = answers(
            "watermarks",
            self.cluster
                .watermarks(&selected, IsolationLevel::ReadUncommitted)
                .await?,
        )?;
        // Only a partition that answered "no record that late" moves to its end: one whose
        // lookup failed would skip its unread records on a guess.
        let by_time = match target {
            ResetTarget::DateTime(at) => {
                let queries: Vec<_> = selected
                    .iter()
                    .map(|tp| (tp.clone(), OffsetSpec::AtTime(at)))
                    .collect();
                answers(
                    "offset at the time",
                    self.cluster
                        .list_offsets(&queries, IsolationLevel::ReadUncommitted)
                        .await?,
                )?
            }
            _ => BTreeMap::new(),
        };
        let mut changes = Vec::with_capacity(selected.len());
        for tp in &selected {
            let before = answer(&committed, "committed offset", tp)?.map(Offset::get);
            let marks = answer(&marks, "watermarks", tp)?;
            let (low, high) = (marks.low.get(), marks.high.get());
            let wanted = match target {
                ResetTarget::Earliest => low,
                ResetTarget::Latest => high,
                ResetTarget::DateTime(_) => answer(&by_time, "offset at the time", tp)?
                    .offset
                    .map_or(high, Offset::get),
                ResetTarget::Offset(offset) => offset,
                ResetTarget::ShiftBy(by) => before.unwrap_or(low).saturating_add(by),
            };
            changes.push(OffsetChange::clamped_to_log(
                tp,
                before,
                wanted,
                (low, high),
            ));
        }
        Ok(ResetPlan {
            group: group.to_string(),
            target,
            changes,
        })
    }

    /// Applies `plan` after checking the group has no members.
    pub async fn apply(
        &self,
        plan: &ResetPlan,
        check: MembershipCheck,
    ) -> Result<(), RecoveryError> {
        ensure_group_inactive(self.cluster.as_ref(), &plan.group, check).await?;
        let offsets = plan
            .changes
            .iter()
            .map(|c| {
                Ok((
                    TopicPartition::new(c.topic.as_str(), c.partition),
                    Offset::new(c.after)?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut config = self.client_config.clone();
        config.set("group.id", &plan.group);
        commit_group_offsets(&config, &offsets).await?;
        tracing::info!(group = %plan.group, target = %plan.target, partitions = offsets.len(), "offsets reset");
        Ok(())
    }

    /// Reads every committed offset of `group`.
    pub async fn export(&self, group: &str) -> Result<OffsetsBackup, RecoveryError> {
        let (lag, _) = group_lag(
            self.cluster.as_ref(),
            group,
            self.clock.as_ref(),
            LagOptions::default(),
        )
        .await?;
        let mut offsets: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for row in &lag.partitions {
            if let Some(committed) = row.committed {
                offsets
                    .entry(row.topic.to_string())
                    .or_default()
                    .insert(row.partition, committed.get());
            }
        }
        Ok(OffsetsBackup {
            group: group.to_string(),
            exported_at: self.clock.wall(),
            offsets,
        })
    }

    /// Works out restoring `backup` (to its own group, or to `group` when given), as a plan to
    /// review or [`apply`](Self::apply). Offsets outside a partition's log now (records removed
    /// by retention since the backup, a topic created again) are clamped to it and marked
    /// [`clamped`](OffsetChange::clamped), as for a reset: a committed offset outside the log
    /// sends the group's consumers wherever their `auto.offset.reset` says, often the end. A
    /// partition of the backup that no longer exists is an error.
    pub async fn plan_import(
        &self,
        backup: &OffsetsBackup,
        group: Option<&str>,
    ) -> Result<ResetPlan, RecoveryError> {
        let group = group.unwrap_or(&backup.group);
        let partitions: Vec<TopicPartition> = backup
            .offsets
            .iter()
            .flat_map(|(topic, parts)| {
                parts
                    .keys()
                    .map(move |p| TopicPartition::new(topic.as_str(), *p))
            })
            .collect();
        if partitions.is_empty() {
            return Err(RecoveryError::Config(format!(
                "the backup of {} holds no offsets",
                backup.group
            )));
        }
        let committed = self.cluster.committed_offsets(group, &partitions).await?;
        let marks = answers(
            "watermarks",
            self.cluster
                .watermarks(&partitions, IsolationLevel::ReadUncommitted)
                .await?,
        )?;
        let mut changes = Vec::with_capacity(committed.len());
        for (tp, before) in committed {
            let wanted = backup
                .offsets
                .get(&*tp.topic)
                .and_then(|parts| parts.get(&tp.partition))
                .copied()
                .ok_or_else(|| {
                    RecoveryError::Config(format!(
                        "the cluster answered for {tp}, not in the backup"
                    ))
                })?;
            let marks = answer(&marks, "watermarks", &tp)?;
            changes.push(OffsetChange::clamped_to_log(
                &tp,
                before.ok().flatten().map(Offset::get),
                wanted,
                (marks.low.get(), marks.high.get()),
            ));
        }
        Ok(ResetPlan {
            group: group.to_string(),
            target: ResetTarget::Offset(-1),
            changes,
        })
    }

    /// Waits until `group` has no lag left (runbook 003's "wait for the pipeline to drain"),
    /// checking every `interval` and reporting progress; fails when `timeout` passes first
    /// ([`RecoveryError::NotDrained`], or [`RecoveryError::NoCommittedOffsets`] for a group
    /// without any committed offset: a misspelt group is never "drained").
    pub async fn wait_for_drain(
        &self,
        group: &str,
        timeout: Duration,
        interval: Duration,
        mut progress: impl FnMut(DrainProgress) + Send,
    ) -> Result<Duration, RecoveryError> {
        let started = Instant::now();
        loop {
            let (lag, _) = group_lag(
                self.cluster.as_ref(),
                group,
                self.clock.as_ref(),
                LagOptions::default(),
            )
            .await?;
            let total = lag.total_lag() + lag.unknown_partitions().count() as u64;
            let elapsed = started.elapsed();
            progress(DrainProgress {
                lag: total,
                elapsed,
            });
            let committed = !lag.partitions.is_empty();
            if committed && total == 0 && lag.is_complete() {
                return Ok(elapsed);
            }
            if elapsed + interval > timeout {
                if !committed {
                    return Err(RecoveryError::NoCommittedOffsets {
                        group: group.to_string(),
                        waited: elapsed,
                    });
                }
                return Err(RecoveryError::NotDrained {
                    group: group.to_string(),
                    lag: total,
                    waited: elapsed,
                });
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests;
