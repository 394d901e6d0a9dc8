//! Probes over cluster metadata: brokers, controller, partition replication, required topics.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use kafka_ops_core::cluster::{
    ClusterMetadata, ConfigQuery, MetadataQuery, PartitionInfo, TopicInfo,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::control_plane::ControlPlane;
use crate::error::HealthError;
use crate::model::{Check, HealthProbe, ProbeKind, Status};
use kafka_ops_core::Severity;

/// How many partitions a message or detail lists before it says "and N more".
const LISTED: usize = 10;

fn listed(names: &[String]) -> String {
    if names.len() <= LISTED {
        names.join(", ")
    } else {
        format!(
            "{}, and {} more",
            names[..LISTED].join(", "),
            names.len() - LISTED
        )
    }
}

/// Whether `partition` has no working leader: none at all, or one the metadata does not list
/// among its brokers (how a broker that went down looks until leadership moves).
pub fn is_offline(partition: &PartitionInfo, brokers: &BTreeSet<i32>) -> bool {
    partition
        .leader
        .is_none_or(|leader| !brokers.contains(&leader))
}

fn broker_ids(metadata: &ClusterMetadata) -> BTreeSet<i32> {
    metadata.brokers.iter().map(|b| b.id).collect()
}

/// "Check broker status": a metadata round trip (bounded by the checker's timeout), reporting
/// how many brokers answer. Degraded when fewer than expected are listed, unhealthy when the
/// cluster cannot be reached.
#[derive(Clone)]
pub struct BrokerConnectivityProbe {
    cluster: Arc<dyn MetadataQuery>,
    expected_brokers: Option<usize>,
    kind: ProbeKind,
}

impl std::fmt::Debug for BrokerConnectivityProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnectivityProbe")
            .field("expected_brokers", &self.expected_brokers)
            .finish()
    }
}

impl BrokerConnectivityProbe {
    /// A readiness probe of `cluster`.
    pub fn new(cluster: Arc<dyn MetadataQuery>) -> Self {
        BrokerConnectivityProbe {
            cluster,
            expected_brokers: None,
            kind: ProbeKind::Readiness,
        }
    }

    /// Degraded when fewer than `brokers` brokers are listed.
    pub fn expect_brokers(mut self, brokers: usize) -> Self {
        self.expected_brokers = Some(brokers);
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

#[async_trait]
impl HealthProbe for BrokerConnectivityProbe {
    fn name(&self) -> &str {
        "broker_connectivity"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        let metadata = match self.cluster.metadata(&[]).await {
            Ok(metadata) => metadata,
            Err(error) => return Ok(Check::unhealthy(format!("cluster unreachable: {error}"))),
        };
        let up = metadata.brokers.len();
        let ids: Vec<i32> = metadata.brokers.iter().map(|b| b.id).collect();
        let check = match self.expected_brokers {
            _ if up == 0 => Check::unhealthy("the cluster lists no brokers"),
            Some(expected) if up < expected => {
                Check::degraded(format!("{up} of {expected} brokers up"))
            }
            Some(expected) => Check::healthy(format!("{up} of {expected} brokers up")),
            None => Check::healthy(format!("{up} brokers up")),
        };
        let check = match self.expected_brokers {
            Some(expected) => check.with_extent(expected.saturating_sub(up), expected),
            None => check,
        };
        Ok(check
            .with_detail("brokers_up", up)
            .with_detail("broker_ids", ids)
            .with_detail("brokers_expected", self.expected_brokers))
    }
}

/// "Controller present", judged the way the cluster is controlled.
///
/// With [`with_configs`](Self::with_configs) the probe reads one broker's configuration to
/// tell the modes apart (see [`ControlPlane`]). In KRaft combined mode it reports the
/// controller quorum: healthy with every voter up, degraded while a minority is down, unhealthy
/// once the up voters are no majority. With dedicated controllers (invisible to clients) it is
/// healthy while brokers serve metadata. In ZooKeeper mode, or when the mode cannot be read, the
/// metadata must name a controller that is one of the listed brokers.
#[derive(Clone)]
pub struct ControllerProbe {
    cluster: Arc<dyn MetadataQuery>,
    configs: Option<Arc<dyn ConfigQuery>>,
    kind: ProbeKind,
}

impl std::fmt::Debug for ControllerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerProbe")
            .field("reads_configs", &self.configs.is_some())
            .finish()
    }
}

impl ControllerProbe {
    /// An informational probe of `cluster`.
    pub fn new(cluster: Arc<dyn MetadataQuery>) -> Self {
        ControllerProbe {
            cluster,
            configs: None,
            kind: ProbeKind::Informational,
        }
    }

    /// Reads the broker configuration through `configs` to judge KRaft clusters by their
    /// quorum, not by the random broker their metadata names as controller.
    pub fn with_configs(mut self, configs: Arc<dyn ConfigQuery>) -> Self {
        self.configs = Some(configs);
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

fn judge_kraft(metadata: &ClusterMetadata, plane: &ControlPlane) -> Check {
    let Some(quorum) = plane.quorum(metadata) else {
        return Check::healthy(
            "KRaft: the controllers are not visible to clients; the brokers serve metadata",
        );
    };
    let (voters, up) = (quorum.voters.len(), quorum.up.len());
    let down: Vec<i32> = quorum
        .voters
        .iter()
        .copied()
        .filter(|id| !quorum.up.contains(id))
        .collect();
    let check = if up == voters {
        Check::healthy(format!("KRaft quorum: all {voters} voters up"))
    } else if up >= quorum.majority() {
        Check::degraded(format!(
            "KRaft quorum holds with {up} of {voters} voters; voters {down:?} are down"
        ))
    } else {
        Check::unhealthy(format!(
            "KRaft quorum lost: only {up} of {voters} voters up (voters {down:?} are down)"
        ))
    };
    check
        .with_detail("voters", quorum.voters.clone())
        .with_detail("voters_up", quorum.up.clone())
}

#[async_trait]
impl HealthProbe for ControllerProbe {
    fn name(&self) -> &str {
        "controller"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        let metadata = self.cluster.metadata(&[]).await?;
        let plane = match &self.configs {
            Some(configs) => ControlPlane::discover(configs.as_ref(), &metadata).await,
            None => ControlPlane::Unknown,
        };
        let brokers = broker_ids(&metadata);
        let check = match &plane {
            ControlPlane::KRaft { .. } => judge_kraft(&metadata, &plane),
            ControlPlane::ZooKeeper | ControlPlane::Unknown => match metadata.controller {
                Some(id) if brokers.contains(&id) => Check::healthy(format!(
                    "broker {id} is the controller{}",
                    // In KRaft the metadata names a random live broker.
                    if plane == ControlPlane::Unknown {
                        " the metadata names (the brokers' configuration was not read, so a \
                         KRaft quorum was not checked)"
                    } else {
                        ""
                    }
                )),
                // librdkafka's mock cluster reports 0 here, which names no broker (ids start
                // at 1).
                Some(id) => Check::unhealthy(format!(
                    "the reported controller {id} is not among the brokers {brokers:?}"
                )),
                None => Check::unhealthy("no active controller"),
            },
        };
        Ok(check
            .with_detail("controller", metadata.controller)
            .with_detail(
                "control_plane",
                serde_json::to_value(&plane).unwrap_or(serde_json::Value::Null),
            ))
    }
}

/// The runbook's replication thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationThresholds {
    /// Under-replicated partitions at or above this count are a warning (runbook: any, so 1).
    pub under_replicated_warning: usize,
    /// A share of under-replicated partitions (percent) above which it is critical (runbook: 5).
    pub under_replicated_critical_percent: f64,
    /// Offline partitions at or above this count are critical (runbook: any, so 1).
    pub offline_critical: usize,
}

impl Default for ReplicationThresholds {
    fn default() -> Self {
        ReplicationThresholds {
            under_replicated_warning: 1,
            under_replicated_critical_percent: 5.0,
            offline_critical: 1,
        }
    }
}

/// "Under-replicated partitions > 0 → investigate": counts partitions whose ISR is smaller than
/// their replica set, and offline partitions (no leader, or a leader the metadata does not list
/// among its brokers).
#[derive(Clone)]
pub struct PartitionsProbe {
    cluster: Arc<dyn MetadataQuery>,
    topics: Vec<String>,
    include_internal: bool,
    thresholds: ReplicationThresholds,
    kind: ProbeKind,
}

impl std::fmt::Debug for PartitionsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionsProbe")
            .field("topics", &self.topics)
            .field("thresholds", &self.thresholds)
            .finish()
    }
}

impl PartitionsProbe {
    /// An informational probe over every non-internal topic of `cluster`.
    pub fn new(cluster: Arc<dyn MetadataQuery>) -> Self {
        PartitionsProbe {
            cluster,
            topics: Vec::new(),
            include_internal: false,
            thresholds: ReplicationThresholds::default(),
            kind: ProbeKind::Informational,
        }
    }

    /// Only these topics.
    pub fn topics<T: Into<String>>(mut self, topics: impl IntoIterator<Item = T>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Counts internal topics (`__consumer_offsets`, ...) too.
    pub fn include_internal(mut self, include: bool) -> Self {
        self.include_internal = include;
        self
    }

    /// Other thresholds.
    pub fn with_thresholds(mut self, thresholds: ReplicationThresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }

    fn counted<'m>(&self, metadata: &'m ClusterMetadata) -> impl Iterator<Item = &'m TopicInfo> {
        metadata.topics.iter().filter(|t| {
            t.error.is_none()
                && (self.include_internal || !t.is_internal())
                && (self.topics.is_empty() || self.topics.iter().any(|n| n.as_str() == &*t.name))
        })
    }
}

#[async_trait]
impl HealthProbe for PartitionsProbe {
    fn name(&self) -> &str {
        "partitions"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        let metadata = self.cluster.metadata(&self.topics).await?;
        let brokers = broker_ids(&metadata);
        let (mut total, mut under_replicated, mut offline) = (0usize, Vec::new(), Vec::new());
        for topic in self.counted(&metadata) {
            for partition in &topic.partitions {
                total += 1;
                let name = format!("{}/{}", topic.name, partition.id);
                if is_offline(partition, &brokers) {
                    offline.push(name);
                } else if partition.is_under_replicated() {
                    under_replicated.push(name);
                }
            }
        }
        let percent = if total == 0 {
            0.0
        } else {
            under_replicated.len() as f64 * 100.0 / total as f64
        };
        let t = &self.thresholds;
        let check = if !offline.is_empty() {
            let message = format!("{} offline partitions: {}", offline.len(), listed(&offline));
            if offline.len() >= t.offline_critical {
                Check::unhealthy(message)
            } else {
                Check::degraded(message)
            }
        } else if under_replicated.is_empty() {
            Check::healthy(format!("{total} partitions fully replicated and led"))
        } else {
            let message = format!(
                "{} under-replicated partitions ({percent:.1}%): {}",
                under_replicated.len(),
                listed(&under_replicated)
            );
            if percent > t.under_replicated_critical_percent {
                Check::new(Status::Degraded, Severity::Critical, message)
            } else if under_replicated.len() >= t.under_replicated_warning {
                Check::degraded(message)
            } else {
                Check::healthy(message)
            }
        };
        Ok(check
            .with_extent(offline.len() + under_replicated.len(), total)
            .with_detail("partitions", total)
            .with_detail("under_replicated", under_replicated.len())
            .with_detail("under_replicated_percent", percent)
            .with_detail("offline", offline.len())
            .with_detail(
                "examples",
                json!({
                    "under_replicated": under_replicated.iter().take(LISTED).collect::<Vec<_>>(),
                    "offline": offline.iter().take(LISTED).collect::<Vec<_>>(),
                }),
            ))
    }
}

/// "Expected topics: audit_events, somabrain_events, outbox_events": each required topic exists,
/// with at least its expected partition count when one is given.
#[derive(Clone)]
pub struct RequiredTopicsProbe {
    cluster: Arc<dyn MetadataQuery>,
    required: Vec<(String, Option<usize>)>,
    kind: ProbeKind,
}

impl std::fmt::Debug for RequiredTopicsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequiredTopicsProbe")
            .field("required", &self.required)
            .finish()
    }
}

impl RequiredTopicsProbe {
    /// A readiness probe: a consumer whose topics are missing cannot work.
    pub fn new(cluster: Arc<dyn MetadataQuery>) -> Self {
        RequiredTopicsProbe {
            cluster,
            required: Vec::new(),
            kind: ProbeKind::Readiness,
        }
    }

    /// Requires `topic` to exist.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.required.push((topic.into(), None));
        self
    }

    /// Requires `topic` with at least `partitions` partitions.
    pub fn topic_with_partitions(mut self, topic: impl Into<String>, partitions: usize) -> Self {
        self.required.push((topic.into(), Some(partitions)));
        self
    }

    /// Reports as another kind of probe.
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

#[async_trait]
impl HealthProbe for RequiredTopicsProbe {
    fn name(&self) -> &str {
        "required_topics"
    }

    fn kind(&self) -> ProbeKind {
        self.kind
    }

    async fn check(&self) -> Result<Check, HealthError> {
        if self.required.is_empty() {
            return Err(HealthError::Config("no required topics given".into()));
        }
        // Ask for every topic: asking for missing ones by name could create them where
        // auto-creation is on.
        let metadata = self.cluster.metadata(&[]).await?;
        let (mut missing, mut short) = (Vec::new(), Vec::new());
        for (name, expected) in &self.required {
            match metadata.topic(name).filter(|t| t.error.is_none()) {
                None => missing.push(name.clone()),
                Some(topic) => {
                    if let Some(expected) = expected
                        && topic.partitions.len() < *expected
                    {
                        short.push(format!(
                            "{name} has {} partitions, expected {expected}",
                            topic.partitions.len()
                        ));
                    }
                }
            }
        }
        let check = if !missing.is_empty() {
            Check::unhealthy(format!("missing topics: {}", missing.join(", ")))
        } else if !short.is_empty() {
            Check::degraded(short.join("; "))
        } else {
            Check::healthy(format!("all {} required topics exist", self.required.len()))
        };
        Ok(check
            .with_detail("missing", missing)
            .with_detail("too_few_partitions", short))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::cluster::{BrokerInfo, MockMetadataQuery};

    /// `partitions` partitions on brokers 1..=3, the first `under` of them with one replica
    /// out of sync.
    fn cluster(partitions: i32, under: i32) -> Arc<dyn MetadataQuery> {
        let metadata = ClusterMetadata {
            brokers: (1..=3)
                .map(|id| BrokerInfo {
                    id,
                    host: "b".into(),
                    port: 9092,
                })
                .collect(),
            controller: Some(1),
            topics: vec![TopicInfo {
                name: "orders".into(),
                partitions: (0..partitions)
                    .map(|id| PartitionInfo {
                        id,
                        leader: Some(1 + id % 3),
                        replicas: vec![1, 2, 3],
                        isr: if id < under {
                            vec![1, 2]
                        } else {
                            vec![1, 2, 3]
                        },
                        error: None,
                    })
                    .collect(),
                error: None,
            }],
        };
        let mut mock = MockMetadataQuery::new();
        mock.expect_metadata()
            .returning(move |_| Ok(metadata.clone()));
        Arc::new(mock)
    }

    #[tokio::test]
    async fn under_replication_is_a_warning_then_critical_above_five_percent() {
        let check = PartitionsProbe::new(cluster(100, 0)).check().await.unwrap();
        assert_eq!(
            (check.status, check.severity),
            (Status::Healthy, Severity::Info)
        );

        let check = PartitionsProbe::new(cluster(100, 5)).check().await.unwrap();
        assert_eq!(
            (check.status, check.severity),
            (Status::Degraded, Severity::Warning)
        );
        assert_eq!(
            check.message,
            "5 under-replicated partitions (5.0%): orders/0, orders/1, orders/2, orders/3, orders/4"
        );

        let check = PartitionsProbe::new(cluster(100, 6)).check().await.unwrap();
        assert_eq!(
            (check.status, check.severity),
            (Status::Degraded, Severity::Critical)
        );
        assert_eq!(check.details["under_replicated"], 6);

        let lenient = ReplicationThresholds {
            under_replicated_warning: 10,
            under_replicated_critical_percent: 50.0,
            offline_critical: 1,
        };
        let check = PartitionsProbe::new(cluster(100, 6))
            .with_thresholds(lenient)
            .check()
            .await
            .unwrap();
        assert_eq!(check.status, Status::Healthy);
    }

    #[tokio::test]
    async fn long_lists_are_cut() {
        let check = PartitionsProbe::new(cluster(100, 12))
            .check()
            .await
            .unwrap();
        assert!(
            check.message.ends_with("orders/9, and 2 more"),
            "{}",
            check.message
        );
    }

    #[test]
    fn a_leader_missing_from_the_brokers_is_offline() {
        let brokers: BTreeSet<i32> = [1, 2].into();
        let mut partition = PartitionInfo {
            id: 0,
            leader: Some(3),
            replicas: vec![3],
            isr: vec![3],
            error: None,
        };
        assert!(is_offline(&partition, &brokers));
        partition.leader = None;
        assert!(is_offline(&partition, &brokers));
        partition.leader = Some(2);
        assert!(!is_offline(&partition, &brokers));
    }
}
