//! [`LagMonitor`]: the state a lag watcher keeps between snapshots of one group.
//!
//! Each [`observe`](LagMonitor::observe) call records the snapshot's end offsets into per-partition
//! interpolation tables (filling in time lag), its commits into Burrow windows, and its total lag
//! into a growth history. [`verdict`](LagMonitor::verdict) judges the group from that state.
//!
//! Snapshots are polled, and a poll cannot see a consumer re-commit the same offset: a commit is
//! recorded when the committed offset changes, stamped with the snapshot time that first saw it.
//! So a consumer stuck at one offset reads as STOP rather than STALL here; feeds that see every
//! commit (for example from `__consumer_offsets`) can call [`record_commit`](LagMonitor::record_commit)
//! directly and get Burrow's STALL.
//!
//! ```
//! use kafka_ops_core::lag::monitor::{LagMonitor, LagMonitorConfig};
//! use kafka_ops_core::lag::{GroupLag, PartitionLag};
//! use kafka_ops_core::Severity;
//! use kafka_ops_core::{Offset, Timestamp, TopicPartition, Watermarks};
//!
//! let tp = TopicPartition::new("orders", 0);
//! let mut monitor = LagMonitor::new(LagMonitorConfig::default());
//! for (i, committed) in [0, 100, 200].into_iter().enumerate() {
//!     let end = Watermarks { low: Offset::ZERO, high: Offset::new(300 + 100 * i as i64).unwrap() };
//!     let row = PartitionLag::compute(&tp, Some(Offset::new(committed).unwrap()), Some(end));
//!     let mut snapshot = GroupLag::new("billing", Timestamp::from_millis(60_000 * i as i64), vec![row]);
//!     monitor.observe(&mut snapshot).unwrap();
//!     let verdict = monitor.verdict(&snapshot, snapshot.taken_at);
//!     assert_eq!(verdict.severity, Severity::Info);
//! }
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::lag::GroupLag;
use crate::lag::burrow::{BurrowConfig, CommitSample, PartitionEvaluation, evaluate_partition};
use crate::lag::time::{DEFAULT_CAPACITY, EndOffsetHistory};
use crate::lag::verdict::{GroupVerdict, LagThresholds, judge};
use crate::types::{Offset, Timestamp, TopicPartition};

/// Configuration of a [`LagMonitor`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LagMonitorConfig {
    /// Burrow evaluation settings.
    pub burrow: BurrowConfig,
    /// Runbook thresholds.
    pub thresholds: LagThresholds,
    /// Points kept per partition in the time-lag table.
    pub time_lag_points: usize,
    /// How far back the growth rate of the total lag looks.
    #[serde(with = "humantime_serde")]
    pub growth_window: Duration,
}

impl Default for LagMonitorConfig {
    fn default() -> Self {
        LagMonitorConfig {
            burrow: BurrowConfig::default(),
            thresholds: LagThresholds::default(),
            time_lag_points: DEFAULT_CAPACITY,
            growth_window: Duration::from_secs(300),
        }
    }
}

impl LagMonitorConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), Error> {
        self.burrow.validate()?;
        self.thresholds.validate()?;
        if self.growth_window.is_zero() {
            return Err(Error::Config("growth window must be positive".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct PartitionHistory {
    commits: VecDeque<CommitSample>,
    ends: EndOffsetHistory,
    /// The last `observe` round that listed this partition.
    seen: u64,
}

impl PartitionHistory {
    fn new(points: usize) -> Self {
        PartitionHistory {
            commits: VecDeque::new(),
            ends: EndOffsetHistory::new(points),
            seen: 0,
        }
    }

    fn push_commit(&mut self, commit: CommitSample, window: usize) {
        self.commits.push_back(commit);
        while self.commits.len() > window {
            self.commits.pop_front();
        }
    }
}

/// The size of a [`LagMonitor`]'s history, from [`LagMonitor::held`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeldHistory {
    /// Partitions with a history.
    pub partitions: usize,
    /// End-offset points over all partitions' time-lag tables.
    pub end_offset_points: usize,
    /// Commits over all partitions' Burrow windows.
    pub commits: usize,
    /// Total-lag samples kept for the growth rate.
    pub totals: usize,
}

/// Per-group lag history: commit windows, end-offset tables and total-lag growth.
#[derive(Debug, Clone)]
pub struct LagMonitor {
    config: LagMonitorConfig,
    partitions: HashMap<TopicPartition, PartitionHistory>,
    totals: VecDeque<(Timestamp, u64)>,
    round: u64,
}

impl LagMonitor {
    /// An empty monitor.
    pub fn new(config: LagMonitorConfig) -> Self {
        LagMonitor {
            config,
            partitions: HashMap::new(),
            totals: VecDeque::new(),
            round: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LagMonitorConfig {
        &self.config
    }

    /// How much history the monitor holds now. Every part is bounded: end-offset points by
    /// `time_lag_points` and commits by the Burrow window, per partition; totals by the growth
    /// window. A long-running watcher reports it to show its memory stays flat.
    pub fn held(&self) -> HeldHistory {
        HeldHistory {
            partitions: self.partitions.len(),
            end_offset_points: self.partitions.values().map(|h| h.ends.len()).sum(),
            commits: self.partitions.values().map(|h| h.commits.len()).sum(),
            totals: self.totals.len(),
        }
    }

    /// Records one commit of a partition (for feeds that see every commit).
    pub fn record_commit(&mut self, partition: &TopicPartition, commit: CommitSample) {
        let (points, window) = (self.config.time_lag_points, self.config.burrow.window);
        self.partitions
            .entry(partition.clone())
            .or_insert_with(|| PartitionHistory::new(points))
            .push_commit(commit, window);
    }

    /// Records a snapshot and fills in each row's time lag from the interpolation table (rows
    /// that already carry a time lag, for example from a record timestamp, keep theirs).
    ///
    /// An end offset that went backwards (topic recreated) resets that partition's history;
    /// partitions missing from the snapshot are forgotten. A snapshot older than the previous one
    /// is rejected without changing anything.
    pub fn observe(&mut self, snapshot: &mut GroupLag) -> Result<(), Error> {
        let at = snapshot.taken_at;
        if let Some((last_at, _)) = self.totals.back()
            && at < *last_at
        {
            return Err(Error::InvalidInput(format!(
                "snapshot at {at} is older than the previous one at {last_at}"
            )));
        }
        self.round += 1;
        let round = self.round;
        let (points, window) = (self.config.time_lag_points, self.config.burrow.window);
        for row in &mut snapshot.partitions {
            let history = self
                .partitions
                .entry(row.topic_partition())
                .or_insert_with(|| PartitionHistory::new(points));
            history.seen = round;
            if let Some(end) = row.end_offset
                && let Err(error) = history.ends.record(end, at)
            {
                tracing::warn!(topic = %row.topic, partition = row.partition, %error, "resetting lag history");
                *history = PartitionHistory::new(points);
                history.seen = round;
                history.ends.record(end, at)?;
            }
            if let Some(committed) = row.committed {
                if history
                    .commits
                    .back()
                    .is_none_or(|last| last.offset != committed)
                {
                    history.push_commit(
                        CommitSample {
                            offset: committed,
                            lag: row.lag,
                            at,
                        },
                        window,
                    );
                }
                if row.time_lag.is_none() {
                    row.time_lag = history.ends.time_lag(committed, at);
                }
            }
        }
        self.partitions.retain(|_, history| history.seen == round);
        self.totals.push_back((at, snapshot.total_lag()));
        let horizon = at.as_millis()
            - i64::try_from(self.config.growth_window.as_millis()).unwrap_or(i64::MAX);
        while self.totals.len() > 2
            && self
                .totals
                .front()
                .is_some_and(|(t, _)| t.as_millis() < horizon)
        {
            self.totals.pop_front();
        }
        Ok(())
    }

    /// Growth of the total lag over the growth window, in records per minute. `None` until two
    /// snapshots at least a second apart were observed.
    pub fn growth_per_minute(&self) -> Option<f64> {
        let (first_at, first) = self.totals.front()?;
        let (last_at, last) = self.totals.back()?;
        let elapsed_ms = last_at.as_millis() - first_at.as_millis();
        if elapsed_ms < 1_000 {
            return None;
        }
        let delta = *last as f64 - *first as f64;
        Some(delta * 60_000.0 / elapsed_ms as f64)
    }

    /// Burrow evaluations for the rows of `snapshot`, in order.
    pub fn evaluate(&self, snapshot: &GroupLag, now: Timestamp) -> Vec<PartitionEvaluation> {
        let window = self.config.burrow.window;
        let mut commits: Vec<CommitSample> = Vec::with_capacity(window);
        let mut ends: Vec<Offset> = Vec::with_capacity(window);
        snapshot
            .partitions
            .iter()
            .map(|row| {
                commits.clear();
                ends.clear();
                if let Some(history) = self.partitions.get(&row.topic_partition()) {
                    commits.extend(history.commits.iter().copied());
                    // Burrow's "recently caught up" looks at as many end-offset samples as commits.
                    ends.extend(history.ends.recent_end_offsets(window));
                }
                evaluate_partition(&commits, row.lag, &ends, now, &self.config.burrow)
            })
            .collect()
    }

    /// The group's verdict as of `now`.
    pub fn verdict(&self, snapshot: &GroupLag, now: Timestamp) -> GroupVerdict {
        let evaluations = self.evaluate(snapshot, now);
        judge(
            snapshot,
            &evaluations,
            self.growth_per_minute(),
            &self.config.thresholds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;
    use crate::lag::PartitionLag;
    use crate::lag::burrow::{PartitionStatus, Rule};
    use crate::lag::verdict::Finding;
    use crate::types::Watermarks;

    fn snapshot(at_s: i64, rows: &[(i32, Option<i64>, i64)]) -> GroupLag {
        let rows = rows
            .iter()
            .map(|(p, committed, end)| {
                PartitionLag::compute(
                    &TopicPartition::new("t", *p),
                    committed.map(|c| Offset::new(c).unwrap()),
                    Some(Watermarks {
                        low: Offset::ZERO,
                        high: Offset::new(*end).unwrap(),
                    }),
                )
            })
            .collect();
        GroupLag::new("g", Timestamp::from_millis(at_s * 1_000), rows)
    }

    fn monitor(window: usize) -> LagMonitor {
        LagMonitor::new(LagMonitorConfig {
            burrow: BurrowConfig {
                window,
                min_complete: 1.0,
                allowed_lag: 0,
            },
            ..Default::default()
        })
    }

    #[test]
    fn time_lag_comes_from_the_end_offset_table() {
        let mut m = monitor(3);
        let mut s = snapshot(0, &[(0, Some(0), 1_000)]);
        m.observe(&mut s).unwrap();
        let mut s = snapshot(10, &[(0, Some(500), 2_000)]);
        m.observe(&mut s).unwrap();
        // End passed 500 at t = -5 s by extrapolation from (1000, 0 s), (2000, 10 s): 15 s behind.
        assert_eq!(s.partitions[0].time_lag, Some(Duration::from_secs(15)));
        let mut s = snapshot(20, &[(0, Some(2_000), 2_000)]);
        m.observe(&mut s).unwrap();
        assert_eq!(s.partitions[0].time_lag, Some(Duration::ZERO));
    }

    #[test]
    fn an_idle_caught_up_consumer_is_one_poll_behind_when_the_end_moves() {
        let mut m = monitor(3);
        for at in [0, 1_800, 3_600] {
            let mut s = snapshot(at, &[(0, Some(100), 100)]);
            m.observe(&mut s).unwrap();
            assert_eq!(s.partitions[0].time_lag, Some(Duration::ZERO));
        }
        let mut s = snapshot(3_630, &[(0, Some(100), 101)]);
        m.observe(&mut s).unwrap();
        assert_eq!(s.partitions[0].time_lag, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_consumer_that_dies_before_the_topic_goes_idle_is_stopped() {
        let mut m = monitor(3);
        let mut last = None;
        // The consumer commits with some lag, dies at 30 while the end is at 40, and no more
        // records arrive. The idle run at 40 is kept as two points, so the sample of 25 taken
        // before the last commit stays among the recent end offsets; it must not pass for a
        // moment the consumer was caught up.
        for (at, committed, end) in [
            (0, 10, 15),
            (10, 20, 25),
            (20, 30, 40),
            (30, 30, 40),
            (45, 30, 40),
            (60, 30, 40),
        ] {
            let mut s = snapshot(at, &[(0, Some(committed), end)]);
            m.observe(&mut s).unwrap();
            last = Some(s);
        }
        let s = last.unwrap();
        let evaluations = m.evaluate(&s, s.taken_at);
        assert_eq!(
            (evaluations[0].status, evaluations[0].rule),
            (PartitionStatus::Stop, Rule::Stopped)
        );
    }

    #[test]
    fn a_stopped_consumer_is_detected_from_polls() {
        let mut m = monitor(3);
        let mut last = None;
        // Progress for three polls, then the consumer dies while producers continue.
        for (at, committed, end) in [
            (0, 0, 100),
            (10, 50, 200),
            (20, 100, 300),
            (30, 100, 400),
            (60, 100, 700),
        ] {
            let mut s = snapshot(at, &[(0, Some(committed), end)]);
            m.observe(&mut s).unwrap();
            last = Some(s);
        }
        let s = last.unwrap();
        let v = m.verdict(&s, s.taken_at);
        assert_eq!(v.severity, Severity::Critical);
        assert!(matches!(
            v.findings
                .iter()
                .find(|f| matches!(f, Finding::Partition { .. })),
            Some(Finding::Partition {
                status: PartitionStatus::Stop,
                rule: Rule::Stopped,
                ..
            })
        ));
    }

    #[test]
    fn growth_is_measured_over_the_window() {
        let mut m = monitor(3);
        for (at, end) in [(0, 100), (30, 700), (60, 2_100)] {
            let mut s = snapshot(at, &[(0, Some(0), end)]);
            m.observe(&mut s).unwrap();
        }
        assert_eq!(m.growth_per_minute(), Some(2_000.0));
        let s = snapshot(60, &[(0, Some(0), 2_100)]);
        let v = m.verdict(&s, s.taken_at);
        assert!(
            v.findings
                .iter()
                .any(|f| matches!(f, Finding::LagGrowing { .. }))
        );
    }

    #[test]
    fn recreated_topics_reset_history_and_old_snapshots_are_rejected() {
        let mut m = monitor(3);
        m.observe(&mut snapshot(0, &[(0, Some(0), 1_000)])).unwrap();
        m.observe(&mut snapshot(10, &[(0, Some(5), 10)])).unwrap();
        assert_eq!(m.partitions[&TopicPartition::new("t", 0)].ends.len(), 1);
        assert!(m.observe(&mut snapshot(5, &[(0, Some(5), 10)])).is_err());
        // The rejected snapshot changed nothing.
        assert_eq!(m.partitions[&TopicPartition::new("t", 0)].ends.len(), 1);
        assert_eq!(m.totals.len(), 2);
    }

    #[test]
    fn history_stays_within_its_caps() {
        let mut m = LagMonitor::new(LagMonitorConfig {
            burrow: BurrowConfig {
                window: 3,
                min_complete: 1.0,
                allowed_lag: 0,
            },
            time_lag_points: 4,
            growth_window: Duration::from_secs(30),
            ..Default::default()
        });
        for i in 0..100 {
            m.observe(&mut snapshot(
                i * 10,
                &[(0, Some(i * 5), i * 10), (1, Some(i), i * 7)],
            ))
            .unwrap();
        }
        // Three 10 s apart cover the 30 s window, plus the one just before it for the rate.
        assert_eq!(
            m.held(),
            HeldHistory {
                partitions: 2,
                end_offset_points: 8,
                commits: 6,
                totals: 4,
            }
        );
    }

    #[test]
    fn vanished_partitions_are_forgotten() {
        let mut m = monitor(3);
        m.observe(&mut snapshot(0, &[(0, Some(0), 10), (1, Some(0), 10)]))
            .unwrap();
        m.observe(&mut snapshot(10, &[(0, Some(0), 10)])).unwrap();
        assert_eq!(m.partitions.len(), 1);
    }

    #[test]
    fn config_validation() {
        assert!(LagMonitorConfig::default().validate().is_ok());
        let bad = LagMonitorConfig {
            growth_window: Duration::ZERO,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
