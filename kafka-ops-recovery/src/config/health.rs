//! The health-probe monitors' factories (feature `health`).

use super::*;
use crate::monitors::HealthMonitor;
use kafka_ops_health::probes::{
    BrokerConnectivityProbe, ConsumerLagProbe, ControllerProbe, DeadLetterDepthProbe,
    DeadLetterTopics, PartitionsProbe, RequiredTopicsProbe,
};
use kafka_ops_health::{HealthChecker, Status};

const PROBES: &[&str] = &[
    "broker_connectivity",
    "controller",
    "partitions",
    "required_topics",
    "consumer_lag",
    "dead_letter_depth",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthParams {
    probes: Vec<String>,
    #[serde(default)]
    expected_brokers: Option<usize>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    required_topics: Vec<String>,
    #[serde(default = "default_suffix")]
    dlq_suffix: String,
    #[serde(default = "default_anomalous_at")]
    anomalous_at: Status,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
}

fn default_suffix() -> String {
    ".dlq".into()
}
fn default_anomalous_at() -> Status {
    Status::Unhealthy
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl CheckedParams for HealthParams {
    fn check(&self) -> Result<(), String> {
        if self.probes.is_empty() {
            return Err(format!("probes: at least one of {}", PROBES.join(", ")));
        }
        for probe in &self.probes {
            if !PROBES.contains(&probe.as_str()) {
                return Err(format!(
                    "probes: unknown probe {probe:?}; known: {}",
                    PROBES.join(", ")
                ));
            }
        }
        if self.probes.iter().any(|p| p == "consumer_lag") && self.groups.is_empty() {
            return Err("groups: the consumer_lag probe needs at least one group".into());
        }
        if self.probes.iter().any(|p| p == "required_topics") && self.required_topics.is_empty() {
            return Err(
                "required_topics: the required_topics probe needs at least one topic".into(),
            );
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be positive".into());
        }
        Ok(())
    }
}

pub(super) fn factory() -> Box<dyn Factory<dyn Monitor>> {
    typed(|name, p: HealthParams, ctx| {
        let cluster = need(&ctx.cluster, "a cluster")?;
        let mut checker = HealthChecker::new().with_default_timeout(p.timeout);
        for probe in &p.probes {
            checker = match probe.as_str() {
                "broker_connectivity" => {
                    let mut probe = BrokerConnectivityProbe::new(cluster.clone());
                    if let Some(n) = p.expected_brokers {
                        probe = probe.expect_brokers(n);
                    }
                    checker.probe(probe)
                }
                "controller" => checker
                    .probe(ControllerProbe::new(cluster.clone()).with_configs(cluster.clone())),
                "partitions" => checker.probe(PartitionsProbe::new(cluster.clone())),
                "required_topics" => {
                    let mut probe = RequiredTopicsProbe::new(cluster.clone());
                    for topic in &p.required_topics {
                        probe = probe.topic(topic.clone());
                    }
                    checker.probe(probe)
                }
                "consumer_lag" => {
                    checker.probe(ConsumerLagProbe::new(cluster.clone(), p.groups.clone()))
                }
                "dead_letter_depth" => checker.probe(DeadLetterDepthProbe::new(
                    cluster.clone(),
                    DeadLetterTopics::Suffix(p.dlq_suffix.clone()),
                )),
                other => return Err(format!("probes: unknown probe {other:?}")),
            };
        }
        Ok(
            Arc::new(HealthMonitor::new(name, checker).anomalous_at(p.anomalous_at))
                as Arc<dyn Monitor>,
        )
    })
}
