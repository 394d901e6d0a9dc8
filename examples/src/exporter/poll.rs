//! One poll of the cluster: every group's lag (each with its own result) and the dead-letter
//! topics' depths.

use std::collections::{BTreeMap, BTreeSet};

use kafka_ops_core::cluster::{
    AllGroupsLag, ClusterQuery, LagOptions, all_groups_lag, fill_time_lag_of_groups, groups_lag,
};
use kafka_ops_core::dead_letter::{PartitionDepth, dead_letter_depths};
use kafka_ops_core::lag::GroupLag;
use kafka_ops_core::{Clock, Error};

use super::state::PollReport;

/// What each poll reads.
#[derive(Debug, Clone, Default)]
pub struct PollPlan {
    /// Only these groups; every group the cluster lists when empty.
    pub groups: Vec<String>,
    /// Which end offset lag is measured against.
    pub options: LagOptions,
    /// Also read the record at each lagging committed offset and take the time lag from its
    /// timestamp (one read per lagging partition and poll); otherwise the time lag is
    /// interpolated from the end-offset history only.
    pub time_lag_from_records: bool,
    /// Dead-letter topics are those ending with this suffix (`.dlq`, `-dlt`); none when `None`.
    pub dead_letter_suffix: Option<String>,
    /// Dead-letter topics named outright.
    pub dead_letter_topics: Vec<String>,
}

/// A group's lag, or why it could not be read.
type GroupResult = (String, Result<GroupLag, Error>);

/// Polls the cluster once. Fails only when no group could be read at all (the cluster did not
/// answer): a group whose lag fails comes back as that group's error, and the dead-letter depths
/// carry their own result.
pub async fn poll<C: ClusterQuery + ?Sized>(
    cluster: &C,
    plan: &PollPlan,
    clock: &dyn Clock,
) -> Result<PollReport, Error> {
    let mut pass = if plan.groups.is_empty() {
        all_groups_lag(cluster, clock, plan.options).await?
    } else {
        groups_lag(cluster, &plan.groups, clock, plan.options).await?
    };
    // The records at every group's committed offsets are read together, not group by group.
    if plan.time_lag_from_records
        && let Err(error) = fill_time_lag_of_groups(cluster, &mut pass.groups).await
    {
        tracing::warn!(%error, "record timestamps unreadable; time lag by interpolation");
    }
    let groups = some_read(per_group(pass))?;
    let dead_letters = dead_letter_pass(cluster, plan).await;
    Ok(PollReport {
        groups,
        dead_letters,
    })
}

/// One result per group, sorted by group: its lag, or why its offsets could not be read.
fn per_group(pass: AllGroupsLag) -> Vec<GroupResult> {
    let mut out: Vec<GroupResult> = pass
        .groups
        .into_iter()
        .map(|lag| (lag.group.clone(), Ok(lag)))
        .collect();
    out.extend(pass.failed.into_iter().map(|failure| {
        let error = Error::Kafka {
            operation: "read committed offsets",
            code: failure.code,
            source: failure.reason.clone().into(),
        };
        (failure.group, Err(error))
    }));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The results when at least one group was read; otherwise the first error: not one group
/// answering means the cluster did not (the poll failed, the exporter is not ready).
fn some_read(results: Vec<GroupResult>) -> Result<Vec<GroupResult>, Error> {
    if results.iter().any(|(_, lag)| lag.is_ok()) {
        return Ok(results);
    }
    match results.into_iter().find_map(|(_, lag)| lag.err()) {
        Some(error) => Err(error),
        None => Ok(Vec::new()),
    }
}

/// Each dead-letter topic's depth, summed over its partitions (`None` when one is unreadable).
async fn dead_letter_pass<C: ClusterQuery + ?Sized>(
    cluster: &C,
    plan: &PollPlan,
) -> Result<BTreeMap<String, Option<u64>>, Error> {
    let mut topics: BTreeSet<String> = plan.dead_letter_topics.iter().cloned().collect();
    if let Some(suffix) = plan.dead_letter_suffix.as_deref() {
        let metadata = cluster.metadata(&[]).await?;
        topics.extend(
            metadata
                .topics
                .iter()
                .filter(|t| t.error.is_none() && t.name.ends_with(suffix))
                .map(|t| t.name.to_string()),
        );
    }
    if topics.is_empty() {
        return Ok(BTreeMap::new());
    }
    let topics: Vec<String> = topics.into_iter().collect();
    let depths = dead_letter_depths(cluster, &topics, None).await?;
    Ok(depths
        .into_iter()
        .map(|(topic, partitions)| {
            let total = partitions
                .iter()
                .map(|(_, depth)| depth.as_ref().ok().map(PartitionDepth::depth))
                .sum::<Option<u64>>();
            (topic, total)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::cluster::GroupFailure;
    use kafka_ops_core::{KafkaCode, Timestamp};

    fn pass(read: &[&str], failed: &[&str]) -> AllGroupsLag {
        AllGroupsLag {
            groups: read
                .iter()
                .map(|g| GroupLag::new(*g, Timestamp::from_millis(0), Vec::new()))
                .collect(),
            failed: failed
                .iter()
                .map(|g| GroupFailure {
                    group: (*g).to_string(),
                    code: Some(KafkaCode::GROUP_AUTHORIZATION_FAILED),
                    reason: "not authorized".into(),
                })
                .collect(),
        }
    }

    fn outcome(results: &[GroupResult]) -> Vec<(&str, bool)> {
        results
            .iter()
            .map(|(group, lag)| (group.as_str(), lag.is_ok()))
            .collect()
    }

    #[test]
    fn a_group_that_fails_hides_no_other() {
        let results = some_read(per_group(pass(&["c", "a"], &["bad"]))).unwrap();
        assert_eq!(
            outcome(&results),
            [("a", true), ("bad", false), ("c", true)]
        );
        let Err(Error::Kafka { code, .. }) = &results[1].1 else {
            panic!("the failed group carries its Kafka error");
        };
        assert_eq!(*code, Some(KafkaCode::GROUP_AUTHORIZATION_FAILED));
    }

    #[test]
    fn no_group_read_is_a_failed_poll_and_no_group_at_all_is_not() {
        let results = per_group(pass(&[], &["bad1", "bad2"]));
        assert!(matches!(some_read(results), Err(Error::Kafka { .. })));
        assert!(some_read(per_group(pass(&[], &[]))).unwrap().is_empty());
    }
}
