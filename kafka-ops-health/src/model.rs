//! What a probe reports and how reports combine.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::{Extent, Severity, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::HealthError;

/// What a probe's failure means for the process that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// Failing means the process is stuck and should be restarted (`/livez`).
    Liveness,
    /// Failing means the process should get no traffic or work for now (`/readyz`).
    Readiness,
    /// Reported in the full report, fails neither liveness nor readiness.
    Informational,
}

/// How healthy the probed thing is. Ordered from best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working as expected.
    #[default]
    Healthy,
    /// Working, with a problem someone should look at.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl Status {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// The gauge value exported for this status: 0 healthy, 1 degraded, 2 unhealthy.
    pub fn gauge_value(self) -> f64 {
        match self {
            Status::Healthy => 0.0,
            Status::Degraded => 1.0,
            Status::Unhealthy => 2.0,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check of a probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The status.
    pub status: Status,
    /// How urgent it is.
    pub severity: Severity,
    /// One line for a human.
    pub message: String,
    /// Structured facts behind the message.
    pub details: Map<String, Value>,
    /// How much of what it checks is affected (brokers down of those expected, partitions
    /// offline or under-replicated of all), where the probe can count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<Extent>,
}

impl Check {
    /// Healthy, severity info.
    pub fn healthy(message: impl Into<String>) -> Self {
        Check::new(Status::Healthy, Severity::Info, message)
    }

    /// Degraded, severity warning.
    pub fn degraded(message: impl Into<String>) -> Self {
        Check::new(Status::Degraded, Severity::Warning, message)
    }

    /// Unhealthy, severity critical.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Check::new(Status::Unhealthy, Severity::Critical, message)
    }

    /// A check with the given status and severity.
    pub fn new(status: Status, severity: Severity, message: impl Into<String>) -> Self {
        Check {
            status,
            severity,
            message: message.into(),
            details: Map::new(),
            extent: None,
        }
    }

    /// The same check with another severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// The same check with one more detail.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// The same check with how much is affected.
    pub fn with_extent(mut self, affected: usize, total: usize) -> Self {
        self.extent = Some(Extent::new(affected, total));
        self
    }
}

/// A check as the checker reports it: the probe's name and kind, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The probe's name.
    pub name: String,
    /// The probe's kind.
    pub kind: ProbeKind,
    /// The status.
    pub status: Status,
    /// How urgent it is.
    pub severity: Severity,
    /// One line for a human.
    pub message: String,
    /// Structured facts behind the message.
    pub details: Map<String, Value>,
    /// How much is affected, where the probe counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<Extent>,
    /// How long the check took.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// When the check finished.
    pub checked_at: Timestamp,
}

/// Every probe's report and what they add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The worst status of all probes.
    pub status: Status,
    /// The worst status of the liveness probes (healthy when there are none).
    pub live: Status,
    /// The worst status of the liveness and readiness probes (a process that is not live is not
    /// ready either).
    pub ready: Status,
    /// The most urgent severity of all probes.
    pub severity: Severity,
    /// Each probe's report, in the order the probes were added.
    pub probes: Vec<ProbeReport>,
    /// When the last probe finished.
    pub checked_at: Timestamp,
}

impl HealthReport {
    /// Combines probe reports: worst wins, and only liveness probes decide liveness.
    pub fn from_probes(probes: Vec<ProbeReport>, checked_at: Timestamp) -> Self {
        let worst = |filter: &dyn Fn(&ProbeReport) -> bool| {
            probes
                .iter()
                .filter(|p| filter(p))
                .map(|p| p.status)
                .max()
                .unwrap_or_default()
        };
        HealthReport {
            status: worst(&|_| true),
            live: worst(&|p| p.kind == ProbeKind::Liveness),
            ready: worst(&|p| p.kind != ProbeKind::Informational),
            severity: probes.iter().map(|p| p.severity).max().unwrap_or_default(),
            checked_at,
            probes,
        }
    }

    /// The report of the probe named `name`.
    pub fn probe(&self, name: &str) -> Option<&ProbeReport> {
        self.probes.iter().find(|p| p.name == name)
    }
}

/// One health check: the runbooks' "check broker status", "under-replicated partitions > 0 →
/// investigate", "DLQ depth > 100 investigate" as a value a service or tool composes.
///
/// A check that fails (returns `Err`) is reported as unhealthy and critical with the error's
/// message; a check that does not finish within the checker's timeout likewise.
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// A short, stable name (`broker_connectivity`, `lag:billing`), unique within a checker.
    fn name(&self) -> &str;
    /// What its failure means.
    fn kind(&self) -> ProbeKind;
    /// Checks once.
    async fn check(&self) -> Result<Check, HealthError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kind: ProbeKind, status: Status, severity: Severity) -> ProbeReport {
        ProbeReport {
            name: format!("{kind:?}-{status}"),
            kind,
            status,
            severity,
            message: String::new(),
            details: Map::new(),
            extent: None,
            latency: Duration::ZERO,
            checked_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn worst_status_wins_and_readiness_does_not_fail_liveness() {
        let at = Timestamp::from_millis(5);
        let combined = HealthReport::from_probes(
            vec![
                report(ProbeKind::Liveness, Status::Healthy, Severity::Info),
                report(ProbeKind::Readiness, Status::Unhealthy, Severity::Critical),
                report(
                    ProbeKind::Informational,
                    Status::Degraded,
                    Severity::Warning,
                ),
            ],
            at,
        );
        assert_eq!(combined.live, Status::Healthy);
        assert_eq!(combined.ready, Status::Unhealthy);
        assert_eq!(combined.status, Status::Unhealthy);
        assert_eq!(combined.severity, Severity::Critical);
        assert_eq!(combined.checked_at, at);
    }

    #[test]
    fn informational_probes_fail_neither_liveness_nor_readiness() {
        let combined = HealthReport::from_probes(
            vec![
                report(ProbeKind::Liveness, Status::Degraded, Severity::Warning),
                report(
                    ProbeKind::Informational,
                    Status::Unhealthy,
                    Severity::Critical,
                ),
            ],
            Timestamp::from_millis(0),
        );
        assert_eq!(combined.live, Status::Degraded);
        assert_eq!(combined.ready, Status::Degraded);
        assert_eq!(combined.status, Status::Unhealthy);
    }

    #[test]
    fn no_probes_is_healthy() {
        let combined = HealthReport::from_probes(Vec::new(), Timestamp::from_millis(0));
        assert_eq!(
            (
                combined.status,
                combined.live,
                combined.ready,
                combined.severity
            ),
            (
                Status::Healthy,
                Status::Healthy,
                Status::Healthy,
                Severity::Info
            )
        );
    }
}
