//! What the exporter knows between polls: per group, the lag monitor (commit windows and
//! end-offset tables, each bounded per partition) and the last judged snapshot; per dead-letter
//! topic, its depth; and its own bookkeeping (polls, errors, the last success).
//!
//! Pure: every method takes the instant it happens at, from an injected clock, so staleness and
//! readiness are tested exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_ops_core::Error;
use kafka_ops_core::lag::GroupLag;
use kafka_ops_core::lag::burrow::PartitionEvaluation;
use kafka_ops_core::lag::monitor::{HeldHistory, LagMonitor, LagMonitorConfig};
use kafka_ops_core::lag::verdict::{GroupVerdict, judge};

/// What one poll of the cluster found.
#[derive(Debug)]
pub struct PollReport {
    /// Every group the pass covered, with its lag or why it could not be read. A group missing
    /// here is gone: its series and history are dropped.
    pub groups: Vec<(String, Result<GroupLag, Error>)>,
    /// Each dead-letter topic's depth (`None` when a partition of it could not be read), or why
    /// the depths could not be read at all (the last ones are kept then).
    pub dead_letters: Result<BTreeMap<String, Option<u64>>, Error>,
}

/// A group's last judged snapshot.
#[derive(Debug, Clone)]
pub(crate) struct GroupView {
    pub(crate) lag: GroupLag,
    /// One per row of `lag.partitions`.
    pub(crate) evaluations: Vec<PartitionEvaluation>,
    pub(crate) verdict: GroupVerdict,
}

#[derive(Debug)]
pub(crate) struct GroupEntry {
    monitor: LagMonitor,
    /// The last snapshot read; kept when a later read fails, so a flapping group does not blink.
    pub(crate) view: Option<GroupView>,
    /// Whether the last poll read this group.
    pub(crate) up: bool,
    /// Reads of this group that failed since it appeared.
    pub(crate) errors: u64,
}

/// The exporter's state; see the module documentation.
#[derive(Debug)]
pub struct ExporterState {
    config: LagMonitorConfig,
    started: Instant,
    pub(crate) groups: BTreeMap<String, GroupEntry>,
    pub(crate) dead_letters: BTreeMap<String, Option<u64>>,
    pub(crate) polls: u64,
    pub(crate) lag_errors: u64,
    pub(crate) dead_letter_errors: u64,
    pub(crate) last_poll_duration: Option<Duration>,
    last_success: Option<Instant>,
    ready: bool,
    pub(crate) scrapes: u64,
}

impl ExporterState {
    /// A state with no poll yet (not ready), started at `now`. Fails on an unusable
    /// configuration.
    pub fn new(config: LagMonitorConfig, now: Instant) -> Result<Self, Error> {
        config.validate()?;
        Ok(ExporterState {
            config,
            started: now,
            groups: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            polls: 0,
            lag_errors: 0,
            dead_letter_errors: 0,
            last_poll_duration: None,
            last_success: None,
            ready: false,
            scrapes: 0,
        })
    }

    /// Takes in one poll that ran from `started` to `finished`.
    ///
    /// A failed poll (the cluster did not answer the group listing) changes no value: the last
    /// ones keep being served, growing stale, and the exporter is not ready until a poll succeeds
    /// again. A successful poll replaces every group, drops the groups it no longer lists, and
    /// counts each group it could not read, keeping that group's last values.
    pub fn record_poll(
        &mut self,
        result: Result<PollReport, Error>,
        started: Instant,
        finished: Instant,
    ) {
        self.polls += 1;
        self.last_poll_duration = Some(finished.saturating_duration_since(started));
        let report = match result {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "lag poll failed; serving the last values");
                self.lag_errors += 1;
                self.ready = false;
                return;
            }
        };
        self.ready = true;
        self.last_success = Some(finished);
        let listed: std::collections::BTreeSet<&str> =
            report.groups.iter().map(|(g, _)| g.as_str()).collect();
        self.groups
            .retain(|group, _| listed.contains(group.as_str()));
        let config = self.config;
        for (group, result) in report.groups {
            let entry = self.groups.entry(group).or_insert_with(|| GroupEntry {
                monitor: LagMonitor::new(config),
                view: None,
                up: false,
                errors: 0,
            });
            match result.and_then(|lag| observe(&mut entry.monitor, lag, &config)) {
                Ok(view) => {
                    entry.view = Some(view);
                    entry.up = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "a group's lag could not be read");
                    entry.errors += 1;
                    entry.up = false;
                }
            }
        }
        match report.dead_letters {
            Ok(depths) => self.dead_letters = depths,
            Err(error) => {
                tracing::warn!(%error, "dead-letter depths could not be read");
                self.dead_letter_errors += 1;
            }
        }
    }

    /// Counts a scrape (for the exporter's own counter).
    pub fn record_scrape(&mut self) {
        self.scrapes += 1;
    }

    /// Whether the last poll succeeded: `/readyz` answers 200 only then.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Time since the last successful poll at `now` (since the start before the first one): how
    /// old the values served are.
    pub fn staleness(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_success.unwrap_or(self.started))
    }

    /// How much lag history is held, over every group.
    pub fn held(&self) -> HeldHistory {
        self.groups.values().map(|entry| entry.monitor.held()).fold(
            HeldHistory::default(),
            |sum, held| HeldHistory {
                partitions: sum.partitions + held.partitions,
                end_offset_points: sum.end_offset_points + held.end_offset_points,
                commits: sum.commits + held.commits,
                totals: sum.totals + held.totals,
            },
        )
    }

    /// The groups known, in order.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }
}

/// Adds a snapshot to a group's monitor (filling in interpolated time lags) and judges it.
fn observe(
    monitor: &mut LagMonitor,
    mut lag: GroupLag,
    config: &LagMonitorConfig,
) -> Result<GroupView, Error> {
    monitor.observe(&mut lag)?;
    let evaluations = monitor.evaluate(&lag, lag.taken_at);
    let verdict = judge(
        &lag,
        &evaluations,
        monitor.growth_per_minute(),
        &config.thresholds,
    );
    Ok(GroupView {
        lag,
        evaluations,
        verdict,
    })
}
