//! A group's verdict: Burrow's partition statuses combined with the runbook's thresholds.
//!
//! The runbooks alert on the group's total lag (warning above 10 000, critical above 100 000) and
//! on its growth (above 1 000 records a minute). Burrow's statuses catch what totals miss: a
//! consumer that stopped on a quiet partition, or one that rewound. [`judge`] applies both and
//! lists every [`Finding`] that contributed, so an alert always says why.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::lag::burrow::{PartitionEvaluation, PartitionStatus, Rule};
use crate::lag::{GroupLag, LagAnomaly};
use crate::severity::Severity;

/// Burrow's group status: the worst partition, with STOP/STALL/REWIND folded into ERROR.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum GroupStatus {
    /// Every partition OK.
    #[default]
    Ok,
    /// Some partition WARN.
    #[serde(rename = "WARN")]
    Warning,
    /// Some partition STOP, STALL or REWIND.
    #[serde(rename = "ERR")]
    Error,
}

impl GroupStatus {
    /// The group status for a set of partition statuses.
    pub fn of(statuses: impl IntoIterator<Item = PartitionStatus>) -> Self {
        statuses
            .into_iter()
            .map(|s| match s {
                PartitionStatus::Ok => GroupStatus::Ok,
                PartitionStatus::Warning => GroupStatus::Warning,
                _ => GroupStatus::Error,
            })
            .max()
            .unwrap_or(GroupStatus::Ok)
    }
}

/// The runbook thresholds (all configurable).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LagThresholds {
    /// Total lag above which the group is a warning (runbook: 10 000).
    pub warning_total_lag: u64,
    /// Total lag above which the group is critical (runbook: 100 000).
    pub critical_total_lag: u64,
    /// Growth of the total lag, in records per minute, above which the group is a warning
    /// (runbook: 1 000/min).
    pub warning_growth_per_minute: f64,
}

impl Default for LagThresholds {
    fn default() -> Self {
        LagThresholds {
            warning_total_lag: 10_000,
            critical_total_lag: 100_000,
            warning_growth_per_minute: 1_000.0,
        }
    }
}

impl LagThresholds {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), Error> {
        if self.warning_total_lag > self.critical_total_lag {
            return Err(Error::Config(format!(
                "warning lag threshold {} is above the critical one {}",
                self.warning_total_lag, self.critical_total_lag
            )));
        }
        if !self.warning_growth_per_minute.is_finite() || self.warning_growth_per_minute < 0.0 {
            return Err(Error::Config(format!(
                "lag growth threshold must be a non-negative number, got {}",
                self.warning_growth_per_minute
            )));
        }
        Ok(())
    }
}

/// One reason that contributed to a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "finding")]
pub enum Finding {
    /// Total lag above the critical threshold.
    TotalLagCritical {
        /// The group's total lag.
        total_lag: u64,
        /// The threshold.
        threshold: u64,
    },
    /// Total lag above the warning threshold.
    TotalLagWarning {
        /// The group's total lag.
        total_lag: u64,
        /// The threshold.
        threshold: u64,
    },
    /// Total lag growing faster than the threshold.
    LagGrowing {
        /// Measured growth, records per minute.
        per_minute: f64,
        /// The threshold.
        threshold: f64,
    },
    /// A partition Burrow does not consider OK.
    Partition {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// Burrow status.
        status: PartitionStatus,
        /// The rule that fired.
        rule: Rule,
        /// Current lag.
        lag: Option<u64>,
    },
    /// Records deleted by retention before the group read them.
    RetentionLoss {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// Records lost.
        lost: u64,
    },
    /// A commit beyond the end offset.
    CommittedBeyondEnd {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// By how many offsets.
        by: u64,
    },
    /// Some partitions' end offsets could not be read: the totals are partial.
    Incomplete {
        /// How many partitions are unknown.
        unknown_partitions: usize,
    },
}

impl Finding {
    /// How serious this finding is on its own.
    pub fn severity(&self) -> Severity {
        match self {
            Finding::TotalLagCritical { .. } | Finding::RetentionLoss { .. } => Severity::Critical,
            Finding::Partition { status, .. } if status.is_error() => Severity::Critical,
            Finding::Partition {
                status: PartitionStatus::Ok,
                ..
            } => Severity::Info,
            Finding::TotalLagWarning { .. }
            | Finding::LagGrowing { .. }
            | Finding::Partition { .. }
            | Finding::CommittedBeyondEnd { .. }
            | Finding::Incomplete { .. } => Severity::Warning,
        }
    }

    /// A one-line human description.
    pub fn describe(&self) -> String {
        match self {
            Finding::TotalLagCritical {
                total_lag,
                threshold,
            } => format!("total lag {total_lag} > critical threshold {threshold}"),
            Finding::TotalLagWarning {
                total_lag,
                threshold,
            } => format!("total lag {total_lag} > warning threshold {threshold}"),
            Finding::LagGrowing {
                per_minute,
                threshold,
            } => format!("lag growing {per_minute:.0}/min > {threshold:.0}/min"),
            Finding::Partition {
                topic,
                partition,
                status,
                rule,
                lag,
            } => format!(
                "{topic}/{partition} {} ({rule:?}, lag {})",
                status.as_str(),
                lag.map_or_else(|| "unknown".to_string(), |l| l.to_string())
            ),
            Finding::RetentionLoss {
                topic,
                partition,
                lost,
            } => format!("{topic}/{partition} lost {lost} records to retention"),
            Finding::CommittedBeyondEnd {
                topic,
                partition,
                by,
            } => format!("{topic}/{partition} committed {by} beyond the end offset"),
            Finding::Incomplete { unknown_partitions } => {
                format!("{unknown_partitions} partitions unreadable: totals are partial")
            }
        }
    }
}

/// The verdict for one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupVerdict {
    /// The group id.
    pub group: String,
    /// The worst severity among the findings.
    pub severity: Severity,
    /// Burrow's group status; `None` when no partition was evaluated (a one-shot report has no
    /// commit history to judge).
    pub status: Option<GroupStatus>,
    /// Sum of known partition lags.
    pub total_lag: u64,
    /// Measured growth of the total lag, records per minute, when measurable.
    pub growth_per_minute: Option<f64>,
    /// Everything that contributed, worst first.
    pub findings: Vec<Finding>,
}

impl GroupVerdict {
    /// A one-line summary: severity, Burrow status, total lag and the worst findings.
    pub fn summary(&self, max_findings: usize) -> String {
        let burrow = match self.status {
            None => String::new(),
            Some(GroupStatus::Ok) => " (burrow OK)".into(),
            Some(GroupStatus::Warning) => " (burrow WARN)".into(),
            Some(GroupStatus::Error) => " (burrow ERR)".into(),
        };
        let mut line = format!(
            "{}: {}{burrow}, total lag {}",
            self.group,
            self.severity.status_word(),
            self.total_lag
        );
        let shown: Vec<String> = self
            .findings
            .iter()
            .take(max_findings)
            .map(Finding::describe)
            .collect();
        if !shown.is_empty() {
            line.push_str(": ");
            line.push_str(&shown.join("; "));
        }
        if self.findings.len() > max_findings {
            line.push_str(&format!(" (+{} more)", self.findings.len() - max_findings));
        }
        line
    }
}

/// Judges a group from its lag report, Burrow evaluations (matched to rows by position: one per
/// row of `lag.partitions`, or none at all for a one-shot report) and the measured growth.
pub fn judge(
    lag: &GroupLag,
    evaluations: &[PartitionEvaluation],
    growth_per_minute: Option<f64>,
    thresholds: &LagThresholds,
) -> GroupVerdict {
    let total_lag = lag.total_lag();
    let mut findings = Vec::new();
    if total_lag > thresholds.critical_total_lag {
        findings.push(Finding::TotalLagCritical {
            total_lag,
            threshold: thresholds.critical_total_lag,
        });
    } else if total_lag > thresholds.warning_total_lag {
        findings.push(Finding::TotalLagWarning {
            total_lag,
            threshold: thresholds.warning_total_lag,
        });
    }
    if let Some(per_minute) = growth_per_minute
        && per_minute > thresholds.warning_growth_per_minute
    {
        findings.push(Finding::LagGrowing {
            per_minute,
            threshold: thresholds.warning_growth_per_minute,
        });
    }
    for (row, evaluation) in lag.partitions.iter().zip(evaluations) {
        if evaluation.status != PartitionStatus::Ok {
            findings.push(Finding::Partition {
                topic: row.topic.clone(),
                partition: row.partition,
                status: evaluation.status,
                rule: evaluation.rule,
                lag: row.lag,
            });
        }
    }
    for row in &lag.partitions {
        match row.anomaly {
            Some(LagAnomaly::RetentionLoss { lost }) => findings.push(Finding::RetentionLoss {
                topic: row.topic.clone(),
                partition: row.partition,
                lost,
            }),
            Some(LagAnomaly::CommittedBeyondEnd { by }) => {
                findings.push(Finding::CommittedBeyondEnd {
                    topic: row.topic.clone(),
                    partition: row.partition,
                    by,
                })
            }
            None => {}
        }
    }
    let unknown_partitions = lag.unknown_partitions().count();
    if unknown_partitions > 0 {
        findings.push(Finding::Incomplete { unknown_partitions });
    }
    // Worst first; among equals, larger lag first so the message names the worst partitions.
    findings.sort_by(|a, b| {
        b.severity()
            .cmp(&a.severity())
            .then_with(|| finding_lag(b).cmp(&finding_lag(a)))
    });
    GroupVerdict {
        group: lag.group.clone(),
        severity: findings
            .iter()
            .map(Finding::severity)
            .max()
            .unwrap_or(Severity::Info),
        status: (!evaluations.is_empty())
            .then(|| GroupStatus::of(evaluations.iter().map(|e| e.status))),
        total_lag,
        growth_per_minute,
        findings,
    }
}

fn finding_lag(finding: &Finding) -> u64 {
    match finding {
        Finding::Partition { lag, .. } => lag.unwrap_or(0),
        Finding::RetentionLoss { lost, .. } => *lost,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lag::PartitionLag;
    use crate::types::{Offset, Timestamp, TopicPartition, Watermarks};

    fn row(partition: i32, committed: i64, end: i64) -> PartitionLag {
        PartitionLag::compute(
            &TopicPartition::new("t", partition),
            Some(Offset::new(committed).unwrap()),
            Some(Watermarks {
                low: Offset::new(100).unwrap(),
                high: Offset::new(end).unwrap(),
            }),
        )
    }
    fn group(rows: Vec<PartitionLag>) -> GroupLag {
        GroupLag::new("g", Timestamp::from_millis(0), rows)
    }
    fn eval(status: PartitionStatus, rule: Rule) -> PartitionEvaluation {
        PartitionEvaluation {
            status,
            rule,
            complete: 1.0,
            current_lag: None,
        }
    }

    #[test]
    fn runbook_thresholds_apply_to_the_total() {
        let t = LagThresholds::default();
        let v = judge(&group(vec![row(0, 100, 10_100)]), &[], None, &t);
        assert_eq!((v.severity, v.findings.len()), (Severity::Info, 0));
        assert_eq!(v.status, None);
        assert_eq!(v.summary(3), "g: ok, total lag 10000");
        let v = judge(
            &group(vec![row(0, 100, 5_101), row(1, 100, 5_101)]),
            &[],
            None,
            &t,
        );
        assert_eq!(v.severity, Severity::Warning);
        assert!(matches!(
            v.findings[0],
            Finding::TotalLagWarning {
                total_lag: 10_002,
                ..
            }
        ));
        let v = judge(&group(vec![row(0, 100, 100_101)]), &[], None, &t);
        assert_eq!(v.severity, Severity::Critical);
        assert_eq!(v.severity.exit_code(), 2);
    }

    #[test]
    fn growth_above_threshold_warns() {
        let t = LagThresholds::default();
        let v = judge(&group(vec![row(0, 100, 200)]), &[], Some(1_500.0), &t);
        assert_eq!(v.severity, Severity::Warning);
        assert_eq!(v.findings[0].describe(), "lag growing 1500/min > 1000/min");
        let v = judge(&group(vec![row(0, 100, 200)]), &[], Some(1_000.0), &t);
        assert_eq!(v.severity, Severity::Info);
    }

    #[test]
    fn burrow_errors_are_critical_and_named() {
        let g = group(vec![row(0, 100, 150), row(1, 100, 900)]);
        let evals = [
            eval(PartitionStatus::Warning, Rule::LagNotDecreasing),
            eval(PartitionStatus::Stop, Rule::Stopped),
        ];
        let v = judge(&g, &evals, None, &LagThresholds::default());
        assert_eq!(v.severity, Severity::Critical);
        assert_eq!(v.status, Some(GroupStatus::Error));
        assert_eq!(v.findings[0].describe(), "t/1 STOP (Stopped, lag 800)");
        assert_eq!(v.findings[1].severity(), Severity::Warning);
        assert!(v.summary(1).contains("(+1 more)"));
    }

    #[test]
    fn anomalies_and_unknowns_are_findings() {
        let lost = row(0, 40, 150);
        let unknown = PartitionLag::unknown(&TopicPartition::new("t", 1), None, "broker down");
        let v = judge(
            &group(vec![lost, unknown]),
            &[],
            None,
            &LagThresholds::default(),
        );
        assert_eq!(v.severity, Severity::Critical);
        assert!(matches!(
            v.findings[0],
            Finding::RetentionLoss { lost: 60, .. }
        ));
        assert!(matches!(
            v.findings[1],
            Finding::Incomplete {
                unknown_partitions: 1
            }
        ));
    }

    #[test]
    fn group_status_is_the_worst_partition() {
        use PartitionStatus::*;
        assert_eq!(GroupStatus::of([]), GroupStatus::Ok);
        assert_eq!(GroupStatus::of([Ok, Warning]), GroupStatus::Warning);
        assert_eq!(GroupStatus::of([Warning, Rewind, Ok]), GroupStatus::Error);
        assert_eq!(GroupStatus::of([Stall]), GroupStatus::Error);
    }

    #[test]
    fn thresholds_and_severity_parse_and_validate() {
        assert!(LagThresholds::default().validate().is_ok());
        let bad = LagThresholds {
            warning_total_lag: 10,
            critical_total_lag: 5,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!("critical".parse::<Severity>().unwrap(), Severity::Critical);
        assert_eq!("warning".parse::<Severity>().unwrap(), Severity::Warning);
        assert!("meh".parse::<Severity>().is_err());
    }
}
