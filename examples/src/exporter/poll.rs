//! One poll of the cluster: every group's lag (each with its own result) and the dead-letter
//! topics' depths.

use std::collections::{BTreeMap, BTreeSet};

use kafka_ops_core::cluster::{
    ClusterQuery, LagOptions, all_groups_lag, fill_time_lag_from_records, group_lag,
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
    let mut groups = if plan.groups.is_empty() {
        lag_pass(cluster, clock, plan.options).await?
    } else {
        named_groups(cluster, &plan.groups, clock, plan.options).await?
    };
    if plan.time_lag_from_records {
        for (group, lag) in &mut groups {
            if let Ok(lag) = lag
                && let Err(error) = fill_time_lag_from_records(cluster, lag).await
            {
                tracing::warn!(group = %group, %error, "record timestamps unreadable; time lag by interpolation");
            }
        }
    }
    let dead_letters = dead_letter_pass(cluster, plan).await;
    Ok(PollReport {
        groups,
        dead_letters,
    })
}

/// Every listed group's lag, each with its own result.
///
/// This is the one place that knows the shape of core's all-groups pass: today it returns one
/// result for all groups, so when it fails each group is read alone and a group whose offsets
/// cannot be read does not hide the others. A pass that carries per-group errors makes this a
/// single call.
async fn lag_pass<C: ClusterQuery + ?Sized>(
    cluster: &C,
    clock: &dyn Clock,
    options: LagOptions,
) -> Result<Vec<GroupResult>, Error> {
    match all_groups_lag(cluster, clock, options).await {
        Ok(groups) => Ok(groups
            .into_iter()
            .map(|lag| (lag.group.clone(), Ok(lag)))
            .collect()),
        Err(error) => {
            tracing::debug!(%error, "the all-groups pass failed; reading each group alone");
            let mut listed: Vec<String> = cluster
                .list_groups()
                .await?
                .into_iter()
                .map(|listing| listing.group)
                .collect();
            listed.sort();
            let mut out = Vec::with_capacity(listed.len());
            for group in listed {
                let lag = group_lag(cluster, &group, clock, options).await;
                out.push((group, lag.map(|(lag, _)| lag)));
            }
            Ok(out)
        }
    }
}

/// The named groups' lag, each with its own result; an error when none could be read.
async fn named_groups<C: ClusterQuery + ?Sized>(
    cluster: &C,
    groups: &[String],
    clock: &dyn Clock,
    options: LagOptions,
) -> Result<Vec<GroupResult>, Error> {
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let lag = group_lag(cluster, group, clock, options).await;
        out.push((group.clone(), lag.map(|(lag, _)| lag)));
    }
    if out.iter().all(|(_, lag)| lag.is_err()) {
        return match out.into_iter().find_map(|(_, lag)| lag.err()) {
            Some(error) => Err(error),
            None => Ok(Vec::new()),
        };
    }
    Ok(out)
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
