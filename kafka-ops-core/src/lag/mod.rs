//! The lag engine: offset lag, time lag and verdicts, all pure.
//!
//! - [`offset_lag`] turns a committed offset and a partition's watermarks into a lag, with the
//!   two anomalies an operator must see flagged (records lost to retention, a commit beyond the end).
//! - [`GroupLag`] holds one group's per-partition rows with per-topic and group totals.
//! - [`time`] estimates how far behind a consumer is in *time*, by interpolation over end-offset
//!   samples.
//! - [`burrow`] evaluates a window of commits with Burrow's rules; [`verdict`] combines that with
//!   the runbook thresholds into OK / warning / critical.
//! - [`monitor::LagMonitor`] keeps the windows and tables across snapshots.
//!
//! Nothing here does I/O: [`crate::cluster`] collects the inputs from a cluster.
//!
//! ```
//! use kafka_ops_core::lag::{offset_lag, LagAnomaly};
//! use kafka_ops_core::{Offset, Watermarks};
//!
//! let marks = Watermarks { low: Offset::new(100).unwrap(), high: Offset::new(250).unwrap() };
//! let healthy = offset_lag(Some(Offset::new(200).unwrap()), Some(marks));
//! assert_eq!(healthy.lag, Some(50));
//!
//! // Committed below the log start: 50 records were deleted before anyone read them.
//! let lost = offset_lag(Some(Offset::new(50).unwrap()), Some(marks));
//! assert_eq!(lost.anomaly, Some(LagAnomaly::RetentionLoss { lost: 50 }));
//!
//! // No commit: the lag is unknown, never a huge number.
//! assert_eq!(offset_lag(None, Some(marks)).lag, None);
//! ```

pub mod burrow;
pub mod monitor;
pub mod time;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{Offset, Timestamp, TopicPartition, Watermarks};

/// Something an operator must know about a partition's lag besides the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LagAnomaly {
    /// The committed offset is below the log start: `lost` records were deleted by retention
    /// before the group read them. The consumer will reset on its next fetch.
    RetentionLoss {
        /// Records between the committed offset and the log start.
        lost: u64,
    },
    /// The committed offset is beyond the end offset (topic recreated, offsets reset by hand, or
    /// a `read_committed` end below an uncommitted read). Lag is clamped to 0.
    CommittedBeyondEnd {
        /// How far beyond the end.
        by: u64,
    },
}

/// The offset lag of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetLag {
    /// `end - committed`; `None` when either is unknown.
    pub lag: Option<u64>,
    /// An anomaly, when there is one.
    pub anomaly: Option<LagAnomaly>,
}

/// Lag of one partition: `end - committed`, where `end` is the high watermark (or the last stable
/// offset for `read_committed` readers; the caller passes whichever applies).
///
/// - no commit or unknown watermarks → `lag: None`;
/// - committed beyond the end → lag 0 and [`LagAnomaly::CommittedBeyondEnd`];
/// - committed below the log start → the full distance to the end, and
///   [`LagAnomaly::RetentionLoss`] with the number of records lost.
pub fn offset_lag(committed: Option<Offset>, watermarks: Option<Watermarks>) -> OffsetLag {
    let (Some(committed), Some(marks)) = (committed, watermarks) else {
        return OffsetLag {
            lag: None,
            anomaly: None,
        };
    };
    if committed > marks.high {
        return OffsetLag {
            lag: Some(0),
            anomaly: Some(LagAnomaly::CommittedBeyondEnd {
                by: committed.saturating_distance(marks.high),
            }),
        };
    }
    let anomaly = (committed < marks.low).then(|| LagAnomaly::RetentionLoss {
        lost: marks.low.saturating_distance(committed),
    });
    OffsetLag {
        lag: Some(marks.high.saturating_distance(committed)),
        anomaly,
    }
}

/// One partition's row in a lag report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset; `None` when the group never committed here.
    pub committed: Option<Offset>,
    /// The log-start offset, when known.
    pub log_start: Option<Offset>,
    /// The end offset (high watermark or LSO), when known.
    pub end_offset: Option<Offset>,
    /// `end - committed`; `None` when unknown.
    pub lag: Option<u64>,
    /// How far behind in time, when estimated.
    #[serde(with = "humantime_serde", default)]
    pub time_lag: Option<Duration>,
    /// Retention loss or a commit beyond the end.
    #[serde(default)]
    pub anomaly: Option<LagAnomaly>,
    /// Why the end offset is unknown (broker down, leader missing, ...), when it is.
    #[serde(default)]
    pub unknown_reason: Option<String>,
}

impl PartitionLag {
    /// Builds a row from the inputs, computing lag and anomaly.
    pub fn compute(
        partition: &TopicPartition,
        committed: Option<Offset>,
        watermarks: Option<Watermarks>,
    ) -> Self {
        let OffsetLag { lag, anomaly } = offset_lag(committed, watermarks);
        PartitionLag {
            topic: partition.topic.clone(),
            partition: partition.partition,
            committed,
            log_start: watermarks.map(|w| w.low),
            end_offset: watermarks.map(|w| w.high),
            lag,
            time_lag: None,
            anomaly,
            unknown_reason: None,
        }
    }

    /// A row whose end offset could not be read.
    pub fn unknown(
        partition: &TopicPartition,
        committed: Option<Offset>,
        reason: impl Into<String>,
    ) -> Self {
        let mut row = Self::compute(partition, committed, None);
        row.unknown_reason = Some(reason.into());
        row
    }

    /// The row's topic-partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

/// Totals for one topic of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicLag {
    /// The topic.
    pub topic: Arc<str>,
    /// Sum of the known partition lags.
    pub total_lag: u64,
    /// Partitions in the report.
    pub partitions: usize,
    /// Partitions whose lag is unknown (no commit, or end offset unreadable).
    pub unknown_partitions: usize,
    /// The largest partition lag.
    pub max_lag: u64,
}

/// One consumer group's lag, partition by partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLag {
    /// The group id.
    pub group: String,
    /// When the end offsets were read.
    pub taken_at: Timestamp,
    /// One row per partition, sorted by topic then partition.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// A report from rows (sorted here).
    pub fn new(
        group: impl Into<String>,
        taken_at: Timestamp,
        mut partitions: Vec<PartitionLag>,
    ) -> Self {
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        GroupLag {
            group: group.into(),
            taken_at,
            partitions,
        }
    }

    /// Sum of the known partition lags. Check [`GroupLag::is_complete`] before treating it as exact.
    pub fn total_lag(&self) -> u64 {
        self.partitions.iter().filter_map(|p| p.lag).sum()
    }

    /// Whether every partition's end offset was read. Partitions without a commit do not make a
    /// report incomplete: their lag is unknown by nature, and reported as such.
    pub fn is_complete(&self) -> bool {
        self.partitions.iter().all(|p| p.unknown_reason.is_none())
    }

    /// Partitions whose end offset could not be read, with the reason.
    pub fn unknown_partitions(&self) -> impl Iterator<Item = &PartitionLag> {
        self.partitions
            .iter()
            .filter(|p| p.unknown_reason.is_some())
    }

    /// Partitions the group never committed.
    pub fn uncommitted_partitions(&self) -> impl Iterator<Item = &PartitionLag> {
        self.partitions.iter().filter(|p| p.committed.is_none())
    }

    /// The partition with the largest known lag.
    pub fn max_lag(&self) -> Option<&PartitionLag> {
        self.partitions
            .iter()
            .filter(|p| p.lag.is_some())
            .max_by_key(|p| p.lag)
    }

    /// Per-topic totals, sorted by topic.
    pub fn topics(&self) -> Vec<TopicLag> {
        let mut by_topic: BTreeMap<&Arc<str>, TopicLag> = BTreeMap::new();
        // Rows are kept sorted by topic, so each topic is one run: one map update per topic.
        for run in self.partitions.chunk_by(|a, b| a.topic == b.topic) {
            let topic = &run[0].topic;
            let entry = by_topic.entry(topic).or_insert_with(|| TopicLag {
                topic: topic.clone(),
                total_lag: 0,
                partitions: 0,
                unknown_partitions: 0,
                max_lag: 0,
            });
            for row in run {
                entry.partitions += 1;
                match row.lag {
                    Some(lag) => {
                        entry.total_lag += lag;
                        entry.max_lag = entry.max_lag.max(lag);
                    }
                    None => entry.unknown_partitions += 1,
                }
            }
        }
        by_topic.into_values().collect()
    }

    /// The largest time lag among partitions, when any was estimated.
    pub fn max_time_lag(&self) -> Option<Duration> {
        self.partitions.iter().filter_map(|p| p.time_lag).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn o(v: i64) -> Offset {
        Offset::new(v).unwrap()
    }
    fn marks(low: i64, high: i64) -> Option<Watermarks> {
        Some(Watermarks {
            low: o(low),
            high: o(high),
        })
    }

    #[test]
    fn lag_is_end_minus_committed() {
        assert_eq!(
            offset_lag(Some(o(10)), marks(0, 25)),
            OffsetLag {
                lag: Some(15),
                anomaly: None
            }
        );
        assert_eq!(offset_lag(Some(o(25)), marks(0, 25)).lag, Some(0));
        assert_eq!(offset_lag(Some(o(0)), marks(0, 0)).lag, Some(0));
    }

    #[test]
    fn unknown_inputs_give_unknown_lag() {
        assert_eq!(offset_lag(None, marks(0, 5)).lag, None);
        assert_eq!(offset_lag(Some(o(1)), None).lag, None);
        assert_eq!(offset_lag(None, None).anomaly, None);
    }

    #[test]
    fn commit_beyond_end_clamps_and_flags() {
        assert_eq!(
            offset_lag(Some(o(30)), marks(0, 25)),
            OffsetLag {
                lag: Some(0),
                anomaly: Some(LagAnomaly::CommittedBeyondEnd { by: 5 })
            }
        );
    }

    #[test]
    fn commit_below_log_start_flags_retention_loss() {
        assert_eq!(
            offset_lag(Some(o(40)), marks(100, 120)),
            OffsetLag {
                lag: Some(80),
                anomaly: Some(LagAnomaly::RetentionLoss { lost: 60 })
            }
        );
        // Exactly at the log start is fine.
        assert_eq!(offset_lag(Some(o(100)), marks(100, 120)).anomaly, None);
    }

    fn group() -> GroupLag {
        let a0 = TopicPartition::new("a", 0);
        let a1 = TopicPartition::new("a", 1);
        let b0 = TopicPartition::new("b", 0);
        let b1 = TopicPartition::new("b", 1);
        GroupLag::new(
            "g",
            Timestamp::from_millis(0),
            vec![
                PartitionLag::compute(&b1, None, marks(0, 9)),
                PartitionLag::compute(&a1, Some(o(5)), marks(0, 12)),
                PartitionLag::unknown(&b0, Some(o(3)), "broker 2 down"),
                PartitionLag::compute(&a0, Some(o(1)), marks(0, 4)),
            ],
        )
    }

    #[test]
    fn group_totals_sum_known_lags_and_count_unknowns() {
        let g = group();
        assert_eq!(
            g.partitions
                .iter()
                .map(|p| p.topic_partition().to_string())
                .collect::<Vec<_>>(),
            ["a/0", "a/1", "b/0", "b/1"]
        );
        assert_eq!(g.total_lag(), 10);
        assert!(!g.is_complete());
        assert_eq!(g.unknown_partitions().count(), 1);
        assert_eq!(g.uncommitted_partitions().count(), 1);
        assert_eq!(g.max_lag().map(|p| p.partition), Some(1));
        let topics = g.topics();
        assert_eq!(topics.len(), 2);
        assert_eq!(
            (
                topics[0].total_lag,
                topics[0].max_lag,
                topics[0].unknown_partitions
            ),
            (10, 7, 0)
        );
        assert_eq!(
            (
                topics[1].total_lag,
                topics[1].partitions,
                topics[1].unknown_partitions
            ),
            (0, 2, 2)
        );
    }

    #[test]
    fn rows_serialize_unknowns_as_null() {
        let json = serde_json::to_value(&group().partitions[3]).unwrap();
        assert_eq!(json["committed"], serde_json::Value::Null);
        assert_eq!(json["lag"], serde_json::Value::Null);
        assert_eq!(json["end_offset"], 9);
    }

    proptest! {
        #[test]
        fn lag_is_never_negative_and_bounded(
            committed in proptest::option::of(0i64..1_000_000),
            low in 0i64..1_000_000,
            extra in 0i64..1_000_000,
        ) {
            let m = marks(low, low + extra);
            let result = offset_lag(committed.map(o), m);
            match committed {
                None => prop_assert_eq!(result.lag, None),
                Some(c) => {
                    let lag = result.lag.unwrap();
                    prop_assert!(lag <= (low + extra).max(0) as u64);
                    prop_assert_eq!(lag, ((low + extra) - c).max(0) as u64);
                    prop_assert_eq!(
                        matches!(result.anomaly, Some(LagAnomaly::RetentionLoss { .. })),
                        c < low
                    );
                    prop_assert_eq!(
                        matches!(result.anomaly, Some(LagAnomaly::CommittedBeyondEnd { .. })),
                        c > low + extra
                    );
                }
            }
        }

        #[test]
        fn totals_equal_sums(rows in proptest::collection::vec(
            (0usize..4, 0i32..8, proptest::option::of(0i64..1000), 0i64..2000), 0..40)
        ) {
            let topics = ["w", "x", "y", "z"];
            let partitions: Vec<PartitionLag> = rows.iter().map(|(t, p, c, end)| {
                PartitionLag::compute(&TopicPartition::new(topics[*t], *p), c.map(o), marks(0, *end))
            }).collect();
            let expected: u64 = partitions.iter().filter_map(|p| p.lag).sum();
            let g = GroupLag::new("g", Timestamp::from_millis(0), partitions);
            prop_assert_eq!(g.total_lag(), expected);
            prop_assert_eq!(g.topics().iter().map(|t| t.total_lag).sum::<u64>(), expected);
            prop_assert_eq!(g.topics().iter().map(|t| t.partitions).sum::<usize>(), g.partitions.len());
        }
    }
}
