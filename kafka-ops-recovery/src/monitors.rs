//! Health probes as self-healing monitors (feature `health`).

use async_trait::async_trait;
use kafka_ops_health::{HealthChecker, Status};

use crate::engine::{Monitor, Signal};
use crate::error::RecoveryError;

/// Runs a [`HealthChecker`] and turns each probe's report into a signal keyed by the probe's
/// name: anomalous at or above a status (unhealthy by default), with the extent the probe
/// counted (brokers down of those expected, partitions offline or under-replicated).
#[derive(Debug)]
pub struct HealthMonitor {
    name: String,
    checker: HealthChecker,
    anomalous_at: Status,
}

impl HealthMonitor {
    /// A monitor named `name` over `checker`.
    pub fn new(name: impl Into<String>, checker: HealthChecker) -> Self {
        HealthMonitor {
            name: name.into(),
            checker,
            anomalous_at: Status::Unhealthy,
        }
    }

    /// Degraded probes count as anomalies too (or only unhealthy ones).
    pub fn anomalous_at(mut self, status: Status) -> Self {
        self.anomalous_at = status;
        self
    }
}

#[async_trait]
impl Monitor for HealthMonitor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn observe(&self) -> Result<Vec<Signal>, RecoveryError> {
        let report = self.checker.check().await;
        Ok(report
            .probes
            .iter()
            .map(|probe| Signal {
                key: probe.name.clone(),
                anomalous: probe.status >= self.anomalous_at,
                message: format!("{}: {}", probe.name, probe.message),
                extent: probe.extent,
                details: serde_json::Value::Object(probe.details.clone()),
            })
            .collect())
    }
}
