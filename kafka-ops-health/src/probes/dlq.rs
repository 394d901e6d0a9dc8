//! "DLQ depth > 100 investigate, > 1000 critical".

use std::sync::Arc;

use async_trait::async_trait;
use kafka_ops_core::cluster::ClusterQuery;
use kafka_ops_core::dead_letter::dead_letter_depths;
use serde::{Deserialize, Serialize};

use crate::error::HealthError;
use crate::model::{Check, HealthProbe, ProbeKind};

/// Which topics are dead-letter topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterTopics {
    /// These topics.
    Named(Vec<String>),
    /// Every topic whose name ends with this suffix (`.dlq`, `-dlt`).
    Suffix(String),
}

impl DeadLetterTopics {
    /// Whether `topic` is one of them.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            DeadLetterTopics::Named(names) => names.iter().any(|n| n == topic),
            DeadLetterTopics::Suffix(suffix) => topic.ends_with(suffix.as_str()),
        }
    }
}

impl Default for DeadLetterTopics {
    fn default() -> Self {
        DeadLetterTopics::Suffix(".dlq".into())
    }
}

/// Records waiting in the dead-letter topics: per topic, the records between the log start and
/// the end, or, when a group consumes the dead-letter topics, those it has not committed past.
/// The deepest topic decides: above the warning depth degraded, above the critical depth
/// unhealthy (runbook: 100 and 1 000).
pub struct DeadLetterDepthProbe {
    cluster: Arc<dyn ClusterQuery>,
    topics: DeadLetterTopics,
    group: Option<String>,
    warning_depth: u64,
    critical_depth: u64,
    kind: ProbeKind,
}

impl std::fmt::Debug for DeadLetterDepthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterDepthProbe")
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("warning_depth", &self.warning_depth)
            .field("critical_depth", &self.critical_depth)
            .finish()
    }
}

impl DeadLetterDepthProbe {
    /// An informational probe of the topics `topics` selects, with the runbook's depths.
    pub fn new(cluster: Arc<dyn ClusterQuery>, topics: DeadLetterTopics) -> Self {
        DeadLetterDepthProbe {
            cluster,
            topics,
            group: None,
            warning_depth: 100,
            critical_depth: 1_000,
            kind: ProbeKind::Informational,
        }
    }

    /// Counts only what `group` has not committed past.
    pub fn consumed_by(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Other depths: degraded above `warning`, unhealthy above `critical`.
    pub fn with_depths(mut self, warning: u64, critical: u64) -> Self {
        self.warning_depth = warning;
        self.critical_depth = critical;
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

#[async_trait]
impl HealthProbe for DeadLetterDepthProbe {
    fn name(&self) -> &str {
        "dead_letter_depth"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        if self.warning_depth > self.critical_depth {
            return Err(HealthError::Config(format!(
                "warning depth {} is above critical depth {}",
                self.warning_depth, self.critical_depth
            )));
        }
        let topics: Vec<String> = match &self.topics {
            DeadLetterTopics::Named(names) => names.clone(),
            DeadLetterTopics::Suffix(suffix) => self
                .cluster
                .metadata(&[])
                .await?
                .topics
                .iter()
                .filter(|t| t.error.is_none() && t.name.ends_with(suffix.as_str()))
                .map(|t| t.name.to_string())
                .collect(),
        };
        if topics.is_empty() {
            return Ok(Check::healthy("no dead-letter topics"));
        }
        let found =
            dead_letter_depths(self.cluster.as_ref(), &topics, self.group.as_deref()).await?;
        if found.is_empty() {
            return Ok(Check::healthy("no dead-letter topics"));
        }
        let mut depths: std::collections::BTreeMap<String, u64> = Default::default();
        let mut unknown = Vec::new();
        for (topic, partitions) in &found {
            let total = depths.entry(topic.clone()).or_default();
            for (partition, depth) in partitions {
                match depth {
                    Ok(depth) => *total += depth.depth(),
                    Err(_) => unknown.push(format!("{topic}/{partition}")),
                }
            }
        }
        let (deepest, depth) = depths
            .iter()
            .max_by_key(|(_, depth)| **depth)
            .map_or((String::new(), 0), |(t, d)| (t.clone(), *d));
        let total: u64 = depths.values().sum();
        let summary =
            format!("deepest dead-letter topic {deepest} holds {depth} records ({total} in all)");
        let mut check = if depth > self.critical_depth {
            Check::unhealthy(format!("{summary}, above {}", self.critical_depth))
        } else if depth > self.warning_depth {
            Check::degraded(format!("{summary}, above {}", self.warning_depth))
        } else {
            Check::healthy(summary)
        };
        if !unknown.is_empty() {
            check = if check.status == crate::model::Status::Healthy {
                Check::degraded(format!(
                    "{}; depth unknown for {}",
                    check.message,
                    unknown.join(", ")
                ))
            } else {
                check
            };
        }
        Ok(check
            .with_detail("depths", serde_json::to_value(&depths).unwrap_or_default())
            .with_detail("total", total)
            .with_detail("unknown_partitions", unknown))
    }
}
