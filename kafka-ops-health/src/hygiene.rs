//! The hygiene review of runbooks 000 and 001: "review consumer groups, delete inactive ones",
//! "topic growth" and "partition leader balance".
//!
//! [`collect`] reads the facts in a few batched requests (one group listing and description, the
//! all-groups lag pass, the timestamps of the records behind each committed offset, the newest
//! record timestamp of every partition, dead-letter depths); [`evaluate`] judges them, a pure
//! function of the facts, the [`HygieneOptions`] and a [`Clock`], so every verdict is tested
//! exactly. [`review`] does both.
//!
//! - **Groups**: a group without members whose newest consumed record (the record just before
//!   each committed offset; the newest over its partitions) is older than `inactive_after` is
//!   *inactive* — as is an empty group with no commit or no record left behind its commits (one
//!   whose record behind a commit is stored but has no readable time is not judged).
//!   Deleting it is *safe* when it is inactive, has no members, every partition's lag could be
//!   read and its total lag is at most `accepted_lag` (the records nobody would then consume). A
//!   group with members is never flagged, nor one whose members could not be read (describing
//!   it failed; on a cluster that cannot describe groups, every group).
//! - **Topics**: a topic whose newest record (ListOffsets' max timestamp over its partitions) is
//!   older than `idle_after`, or that stores no record, is *idle*. Dead-letter topics carry their
//!   depth (core's [`dead_letter_depths`](kafka_ops_core::dead_letter::dead_letter_depths)).
//! - **Leadership**: partitions led by a broker other than their preferred (first) replica,
//!   partitions without a leader, leaders per broker and the skew (most minus fewest).
//!
//! Severity: critical for a partition without a leader or a dead-letter topic deeper than the
//! critical depth; warning for an inactive group, an idle topic, a leader off its preferred
//! replica, a group whose offsets or members cannot be read, or a dead-letter topic deeper than
//! the warning depth; info otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_ops_core::cluster::{ClusterMetadata, GroupFailure, GroupState};
use kafka_ops_core::dead_letter::TopicDepth;
use kafka_ops_core::lag::PartitionLag;
use kafka_ops_core::{Clock, Severity, Timestamp};
use serde::{Deserialize, Serialize};

use crate::probes::DeadLetterTopics;

mod collect;
mod leadership;
#[cfg(test)]
mod tests;

pub use collect::{collect, review};
pub use leadership::{BrokerLeadership, Leadership, MisplacedLeader, leadership};

/// What the review judges against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HygieneOptions {
    /// An empty group whose newest consumed record is older than this is inactive.
    #[serde(with = "humantime_serde")]
    pub inactive_after: Duration,
    /// A topic whose newest record is older than this is idle.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Unconsumed records an operator accepts to lose when deleting an inactive group.
    pub accepted_lag: u64,
    /// Which topics are dead-letter topics.
    pub dead_letters: DeadLetterTopics,
    /// Dead-letter depth above which the review warns (runbook: 100).
    pub dead_letter_warning: u64,
    /// Dead-letter depth above which the review is critical (runbook: 1 000).
    pub dead_letter_critical: u64,
}

/// A week: the CLI's default for both `inactive_after` and `idle_after`.
pub const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for HygieneOptions {
    fn default() -> Self {
        HygieneOptions {
            inactive_after: WEEK,
            idle_after: WEEK,
            accepted_lag: 0,
            dead_letters: DeadLetterTopics::default(),
            dead_letter_warning: 100,
            dead_letter_critical: 1_000,
        }
    }
}

/// What [`collect`] read about one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFacts {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: GroupState,
    /// How many members it has.
    pub members: usize,
    /// Why its members could not be read (describing the group failed, or the answer left it
    /// out); `None` when they were. A group whose members are unknown is never judged
    /// inactive.
    #[serde(default)]
    pub members_unread: Option<String>,
    /// Its committed offsets and lag, partition by partition.
    pub partitions: Vec<PartitionLag>,
    /// The newest timestamp of the records just before its committed offsets (the last records
    /// it consumed), when one is still stored.
    pub newest_consumed: Option<Timestamp>,
}

/// What [`collect`] read about one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicFacts {
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: usize,
    /// Records stored (end minus log start, over the partitions that answered).
    pub records: u64,
    /// The newest record timestamp over its partitions.
    pub newest_record: Option<Timestamp>,
    /// Partitions whose offsets could not be read.
    pub unreadable_partitions: usize,
    /// Its depth, when it is a dead-letter topic.
    pub dead_letter_depth: Option<u64>,
}

/// Everything the review judges, as read from the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HygieneFacts {
    /// The cluster's metadata (brokers, partitions, replicas, leaders).
    pub metadata: ClusterMetadata,
    /// Every listed group whose offsets could be read, by name.
    pub groups: Vec<GroupFacts>,
    /// Groups whose offsets could not be read.
    pub unreadable_groups: Vec<GroupFailure>,
    /// Every non-internal topic, by name.
    pub topics: Vec<TopicFacts>,
}

/// The review of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupHygiene {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: GroupState,
    /// How many members it has.
    pub members: usize,
    /// Why its members could not be read (describing the group failed, or the answer left it
    /// out); `None` when they were. A group whose members are unknown is never judged
    /// inactive.
    #[serde(default)]
    pub members_unread: Option<String>,
    /// Its committed offsets and lag, partition by partition.
    pub partitions: Vec<PartitionLag>,
    /// Total lag over the partitions whose lag is known.
    pub total_lag: u64,
    /// The newest timestamp of the records it last consumed.
    pub newest_consumed: Option<Timestamp>,
    /// No members and nothing consumed within `inactive_after`.
    pub inactive: bool,
    /// Inactive, no members, lag readable and within `accepted_lag`.
    pub safe_to_delete: bool,
    /// Why, in words.
    pub reason: String,
}

/// The review of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicHygiene {
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: usize,
    /// Records stored.
    pub records: u64,
    /// The newest record timestamp over its partitions.
    pub newest_record: Option<Timestamp>,
    /// No record within `idle_after` (or none stored).
    pub idle: bool,
    /// Its depth, when it is a dead-letter topic.
    pub dead_letter_depth: Option<u64>,
}

/// The hygiene review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HygieneReport {
    /// When it was judged.
    pub taken_at: Timestamp,
    /// The worst finding's severity.
    pub severity: Severity,
    /// One line per finding.
    pub findings: Vec<String>,
    /// Every group, by name.
    pub groups: Vec<GroupHygiene>,
    /// Groups whose offsets could not be read.
    pub unreadable_groups: Vec<GroupFailure>,
    /// Every non-internal topic, by name.
    pub topics: Vec<TopicHygiene>,
    /// Partition leadership per broker.
    pub leadership: Leadership,
}

/// Judges one group.
fn judge_group(facts: &GroupFacts, options: &HygieneOptions, now: Timestamp) -> GroupHygiene {
    let total_lag = facts.partitions.iter().filter_map(|p| p.lag).sum();
    let unreadable = facts
        .partitions
        .iter()
        .filter(|p| p.unknown_reason.is_some())
        .count();
    let committed = facts.partitions.iter().any(|p| p.committed.is_some());
    let (inactive, mut reason) = if facts.members > 0 || facts.state.has_members() {
        (false, format!("{} members", facts.members))
    } else if let Some(why) = &facts.members_unread {
        (false, format!("members unknown: {why}"))
    } else if !committed {
        (true, "no members, no committed offset".to_string())
    } else {
        match facts.newest_consumed {
            // A record is stored behind a commit but its time could not be read (a transaction
            // marker there, compacted away, a failed read): when the group last consumed is not
            // known, so it is not judged inactive.
            None if !collect::consumed_positions(&facts.partitions).is_empty() => (
                false,
                "no members, time of its last consumed record unknown".to_string(),
            ),
            None => (
                true,
                "no members, no record left behind its commits".to_string(),
            ),
            Some(at) => {
                let idle = now.saturating_since(at);
                let words = humantime_serde::re::humantime::format_duration(Duration::from_secs(
                    idle.as_secs(),
                ));
                (
                    idle >= options.inactive_after,
                    format!("no members, last consumed record {words} old"),
                )
            }
        }
    };
    let safe_to_delete = inactive && unreadable == 0 && total_lag <= options.accepted_lag;
    if inactive && unreadable > 0 {
        reason.push_str(&format!("; lag unreadable on {unreadable} partitions"));
    } else if inactive && total_lag > options.accepted_lag {
        reason.push_str(&format!(
            "; {total_lag} records unconsumed (accepted: {})",
            options.accepted_lag
        ));
    }
    GroupHygiene {
        group: facts.group.clone(),
        state: facts.state,
        members: facts.members,
        members_unread: facts.members_unread.clone(),
        partitions: facts.partitions.clone(),
        total_lag,
        newest_consumed: facts.newest_consumed,
        inactive,
        safe_to_delete,
        reason,
    }
}

/// Judges one topic.
fn judge_topic(facts: &TopicFacts, options: &HygieneOptions, now: Timestamp) -> TopicHygiene {
    let idle = facts.unreadable_partitions == 0
        && facts
            .newest_record
            .is_none_or(|at| now.saturating_since(at) >= options.idle_after);
    TopicHygiene {
        topic: facts.topic.clone(),
        partitions: facts.partitions,
        records: facts.records,
        newest_record: facts.newest_record,
        idle,
        dead_letter_depth: facts.dead_letter_depth,
    }
}

/// Judges `facts` at `clock`'s time: pure, so every verdict is tested exactly.
pub fn evaluate(
    facts: &HygieneFacts,
    options: &HygieneOptions,
    clock: &dyn Clock,
) -> HygieneReport {
    let now = clock.wall();
    let groups: Vec<GroupHygiene> = facts
        .groups
        .iter()
        .map(|g| judge_group(g, options, now))
        .collect();
    let topics: Vec<TopicHygiene> = facts
        .topics
        .iter()
        .map(|t| judge_topic(t, options, now))
        .collect();
    let leadership = leadership(&facts.metadata);
    let mut found: BTreeMap<Severity, Vec<String>> = BTreeMap::new();
    let mut note = |severity, line: String| found.entry(severity).or_default().push(line);
    let inactive: Vec<&str> = groups
        .iter()
        .filter(|g| g.inactive)
        .map(|g| g.group.as_str())
        .collect();
    if !inactive.is_empty() {
        let safe = groups.iter().filter(|g| g.safe_to_delete).count();
        note(
            Severity::Warning,
            format!("{} inactive groups ({safe} safe to delete)", inactive.len()),
        );
    }
    let unread = groups.iter().filter(|g| g.members_unread.is_some()).count();
    if unread > 0 {
        note(
            Severity::Warning,
            format!("{unread} groups with members unknown (not judged)"),
        );
    }
    for failure in &facts.unreadable_groups {
        note(Severity::Warning, failure.to_string());
    }
    let idle = topics.iter().filter(|t| t.idle).count();
    if idle > 0 {
        note(Severity::Warning, format!("{idle} idle topics"));
    }
    for topic in &topics {
        if let Some(depth) = topic.dead_letter_depth {
            if depth > options.dead_letter_critical {
                note(
                    Severity::Critical,
                    format!("dead-letter topic {} holds {depth} records", topic.topic),
                );
            } else if depth > options.dead_letter_warning {
                note(
                    Severity::Warning,
                    format!("dead-letter topic {} holds {depth} records", topic.topic),
                );
            }
        }
    }
    if !leadership.leaderless.is_empty() {
        note(
            Severity::Critical,
            format!(
                "{} partitions without a leader",
                leadership.leaderless.len()
            ),
        );
    }
    if !leadership.not_preferred.is_empty() {
        note(
            Severity::Warning,
            format!(
                "{} partitions led off their preferred replica (leader skew {})",
                leadership.not_preferred.len(),
                leadership.skew
            ),
        );
    }
    let severity = found.keys().next_back().copied().unwrap_or(Severity::Info);
    let findings = found
        .into_iter()
        .rev()
        .flat_map(|(_, lines)| lines)
        .collect();
    HygieneReport {
        taken_at: now,
        severity,
        findings,
        groups,
        unreadable_groups: facts.unreadable_groups.clone(),
        topics,
        leadership,
    }
}

/// Whether `options` can be judged against.
pub fn validate(options: &HygieneOptions) -> Result<(), crate::HealthError> {
    if options.dead_letter_warning > options.dead_letter_critical {
        return Err(crate::HealthError::Config(format!(
            "dead-letter warning depth {} is above critical depth {}",
            options.dead_letter_warning, options.dead_letter_critical
        )));
    }
    Ok(())
}

/// The depth of a dead-letter topic: its partitions' depths summed, `None` when one is unreadable.
fn total_depth(depth: &TopicDepth) -> Option<u64> {
    depth
        .iter()
        .map(|(_, d)| d.as_ref().ok().map(|d| d.depth()))
        .sum()
}
