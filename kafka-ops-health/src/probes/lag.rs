//! "Consumer lag > 10000 → alert": core's lag engine as a probe.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use kafka_ops_core::cluster::{ClusterQuery, GroupState, GroupType, LagOptions, group_lag};
use kafka_ops_core::lag::monitor::{LagMonitor, LagMonitorConfig};
use kafka_ops_core::lag::verdict::LagThresholds;
use kafka_ops_core::{Clock, SystemClock};
use serde_json::json;

use crate::error::HealthError;
use crate::model::{Check, HealthProbe, ProbeKind, Status};
use kafka_ops_core::Severity;

/// How many of a group's worst partitions the message names.
const WORST: usize = 3;

/// Judges one or more consumer groups with core's lag engine: the runbook thresholds on every
/// check, and Burrow's rules once the probe has seen enough checks (it keeps each group's
/// history between checks, so run it on an interval). The message names the worst partitions.
/// A group without any committed offset (a misspelt name, a group that never committed, or one
/// whose offsets expired) is a warning: nothing shows it keeping up.
pub struct ConsumerLagProbe {
    cluster: Arc<dyn ClusterQuery>,
    groups: Vec<String>,
    options: LagOptions,
    monitor_config: LagMonitorConfig,
    clock: Arc<dyn Clock>,
    monitors: Mutex<BTreeMap<String, LagMonitor>>,
    kind: ProbeKind,
}

impl std::fmt::Debug for ConsumerLagProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLagProbe")
            .field("groups", &self.groups)
            .field("thresholds", &self.monitor_config.thresholds)
            .finish()
    }
}

impl ConsumerLagProbe {
    /// An informational probe of `groups` with the runbook's thresholds.
    pub fn new<G: Into<String>>(
        cluster: Arc<dyn ClusterQuery>,
        groups: impl IntoIterator<Item = G>,
    ) -> Self {
        ConsumerLagProbe {
            cluster,
            groups: groups.into_iter().map(Into::into).collect(),
            options: LagOptions::default(),
            monitor_config: LagMonitorConfig::default(),
            clock: Arc::new(SystemClock),
            monitors: Mutex::new(BTreeMap::new()),
            kind: ProbeKind::Informational,
        }
    }

    /// Other thresholds.
    pub fn with_thresholds(mut self, thresholds: LagThresholds) -> Self {
        self.monitor_config.thresholds = thresholds;
        self
    }

    /// Another monitor configuration (Burrow window, time-lag table size, thresholds).
    pub fn with_monitor_config(mut self, config: LagMonitorConfig) -> Self {
        self.monitor_config = config;
        self
    }

    /// Measures against the last stable offset or the high watermark.
    pub fn with_options(mut self, options: LagOptions) -> Self {
        self.options = options;
        self
    }

    /// Another clock (snapshots are stamped and judged with it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

#[async_trait]
impl HealthProbe for ConsumerLagProbe {
    fn name(&self) -> &str {
        "consumer_lag"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        if self.groups.is_empty() {
            return Err(HealthError::Config("no consumer groups given".into()));
        }
        self.monitor_config.validate()?;
        let mut worst = Severity::Info;
        let mut lines = Vec::new();
        let mut details = serde_json::Map::new();
        // Each group's protocol and state, for the operator (a rebalancing group is not
        // unhealthy by itself); one request for all groups, left out where it is unsupported.
        let states: HashMap<String, (GroupType, GroupState)> =
            match self.cluster.describe_groups(&self.groups).await {
                Ok(described) => described
                    .into_iter()
                    .filter(|d| d.error.is_none())
                    .map(|d| (d.group, (d.group_type, d.state)))
                    .collect(),
                Err(error) => {
                    tracing::debug!(%error, "cannot describe the groups");
                    HashMap::new()
                }
            };
        for group in &self.groups {
            let (mut lag, _) = group_lag(
                self.cluster.as_ref(),
                group,
                self.clock.as_ref(),
                self.options,
            )
            .await?;
            let verdict = {
                let mut monitors = self.monitors.lock().unwrap_or_else(PoisonError::into_inner);
                let monitor = monitors
                    .entry(group.clone())
                    .or_insert_with(|| LagMonitor::new(self.monitor_config));
                monitor.observe(&mut lag)?;
                monitor.verdict(&lag, self.clock.wall())
            };
            // No committed offset at all: a misspelt group, one that never committed, or one
            // whose offsets expired after it stopped. Nothing says it is keeping up.
            let uncommitted = lag.partitions.is_empty();
            let severity = if uncommitted {
                verdict.severity.max(Severity::Warning)
            } else {
                verdict.severity
            };
            worst = worst.max(severity);
            let mut rows: Vec<_> = lag.partitions.iter().filter(|r| r.lag.is_some()).collect();
            rows.sort_by_key(|row| std::cmp::Reverse(row.lag));
            let worst_rows: Vec<String> = rows
                .iter()
                .take(WORST)
                .filter(|r| r.lag.unwrap_or(0) > 0)
                .map(|r| format!("{}/{} lag {}", r.topic, r.partition, r.lag.unwrap_or(0)))
                .collect();
            let unknown = lag.unknown_partitions().count();
            let mut line = verdict.summary(2);
            if uncommitted {
                line = format!(
                    "{group}: no committed offsets (unknown group, never committed, or its offsets expired)"
                );
            }
            if !worst_rows.is_empty() {
                line.push_str(&format!("; worst: {}", worst_rows.join(", ")));
            }
            if unknown > 0 {
                line.push_str(&format!("; {unknown} partitions unknown"));
            }
            lines.push(line);
            let (protocol, state) = states
                .get(group)
                .map_or((None, None), |(kind, state)| (Some(*kind), Some(*state)));
            details.insert(
                group.clone(),
                json!({
                    "protocol": protocol,
                    "state": state,
                    "severity": severity,
                    "committed": !uncommitted,
                    "total_lag": verdict.total_lag,
                    "status": verdict.status,
                    "growth_per_minute": verdict.growth_per_minute,
                    "unknown_partitions": unknown,
                    "worst_partitions": worst_rows,
                }),
            );
        }
        let status = match worst {
            Severity::Info => Status::Healthy,
            Severity::Warning => Status::Degraded,
            Severity::Critical => Status::Unhealthy,
        };
        let mut check = Check::new(status, worst, lines.join(" | "));
        check.details = details;
        Ok(check)
    }
}
