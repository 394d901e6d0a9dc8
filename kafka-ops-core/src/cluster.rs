//! What kafka-ops asks of a cluster, as traits, and the lag collection built on them.
//!
//! [`MetadataQuery`], [`OffsetQuery`] and [`GroupQuery`] speak kafka-ops' own types; the rdkafka
//! implementation is `kafka::KafkaCluster` (feature `kafka`). The functions here
//! ([`group_lag`], [`all_groups_lag`], [`fill_time_lag_from_records`]) only use the traits, so
//! their decisions (discovery fallback, partial results) are unit-tested with mocks and
//! integration-tested against real brokers.
//!
//! Collecting a group's lag costs a constant number of requests per broker, not per partition:
//! committed-offsets requests to the group coordinator (one per batch of partitions), metadata
//! requests, and two batched list-offsets requests (earliest, latest) per partition leader.
//! [`all_groups_lag`] shares the metadata and the end offsets between all groups, so the only
//! requests that grow with the number of groups are the committed-offsets ones (OffsetFetch
//! asks one group at a time).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::class::KafkaCode;
use crate::error::Error;
use crate::lag::GroupLag;
use crate::types::{
    IsolationLevel, ListedOffset, Offset, OffsetSpec, Timestamp, TopicPartition, Watermarks,
};

/// A broker as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
}

/// A partition as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: i32,
    /// Leader broker id; `None` when the partition has no leader.
    pub leader: Option<i32>,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// The error the broker reported for this partition, if any.
    pub error: Option<KafkaCode>,
}

impl PartitionInfo {
    /// Fewer in-sync replicas than replicas.
    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

/// A topic as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: Arc<str>,
    /// Its partitions, sorted by id.
    pub partitions: Vec<PartitionInfo>,
    /// The error the broker reported for this topic, if any.
    pub error: Option<KafkaCode>,
}

impl TopicInfo {
    /// Whether the topic is one of Kafka's own ([`INTERNAL_TOPICS`]). Other names starting
    /// with `__` are user topics (Debezium's `__debezium-heartbeat.*`, for one): their lag and
    /// commits count like any other.
    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&&*self.name)
    }

    /// Its topic-partitions.
    pub fn topic_partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.partitions
            .iter()
            .map(|p| TopicPartition::new(self.name.clone(), p.id))
    }
}

/// The topics Kafka keeps for itself: group offsets, transactions, share groups' state.
pub const INTERNAL_TOPICS: [&str; 3] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
];

/// A cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Brokers the metadata lists (brokers that are down are usually absent).
    pub brokers: Vec<BrokerInfo>,
    /// The controller's broker id, when known.
    pub controller: Option<i32>,
    /// Topics, sorted by name.
    pub topics: Vec<TopicInfo>,
}

impl ClusterMetadata {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| &*t.name == name)
    }

    /// Every partition of every non-internal topic.
    pub fn user_partitions(&self) -> Vec<TopicPartition> {
        self.topics
            .iter()
            .filter(|t| !t.is_internal() && t.error.is_none())
            .flat_map(TopicInfo::topic_partitions)
            .collect()
    }
}

/// Why one partition of a batched request has no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}")]
pub struct PartitionError {
    /// The error code, when there is one.
    pub code: Option<KafkaCode>,
    /// A human explanation.
    pub reason: String,
}

impl PartitionError {
    /// An error from a code.
    pub fn from_code(code: KafkaCode) -> Self {
        PartitionError {
            code: Some(code),
            reason: code.to_string(),
        }
    }
}

/// A per-partition result of a batched request.
pub type PartitionResult<T> = Result<T, PartitionError>;

/// The per-partition results of a batched request, one per partition asked.
pub type PartitionResults<T> = Vec<(TopicPartition, PartitionResult<T>)>;

/// The state of a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GroupState {
    /// The broker did not say.
    #[default]
    Unknown,
    /// Members are (re)joining.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Members are consuming.
    Stable,
    /// The group is being removed.
    Dead,
    /// No members, offsets may remain.
    Empty,
    /// KIP-848 (consumer protocol): the coordinator is computing a new target assignment after
    /// members joined, left or changed their subscription.
    Assigning,
    /// KIP-848 (consumer protocol): members are moving to their target assignment (revoking
    /// what they lose, then taking what they gain).
    Reconciling,
}

impl GroupState {
    /// Whether members are present (offset resets must refuse).
    pub fn has_members(self) -> bool {
        !matches!(
            self,
            GroupState::Empty | GroupState::Dead | GroupState::Unknown
        )
    }

    /// Whether the group is moving partitions between members (either protocol's rebalance).
    pub fn is_rebalancing(self) -> bool {
        matches!(
            self,
            GroupState::PreparingRebalance
                | GroupState::CompletingRebalance
                | GroupState::Assigning
                | GroupState::Reconciling
        )
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            GroupState::Unknown => "Unknown",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Empty => "Empty",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
        };
        f.write_str(name)
    }
}

/// Which rebalance protocol a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GroupType {
    /// The broker did not say (brokers before Kafka 3.8, or a mock).
    #[default]
    Unknown,
    /// The classic protocol: join/sync rounds, client-side assignment.
    Classic,
    /// KIP-848's consumer protocol (`group.protocol=consumer`): broker-side assignment,
    /// incremental rebalances.
    Consumer,
}

impl fmt::Display for GroupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupType::Unknown => "unknown",
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        })
    }
}

/// A group as the list-groups call reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListing {
    /// Group id.
    pub group: String,
    /// State.
    pub state: GroupState,
    /// A "simple" group: offsets committed without group membership (no subscription).
    pub is_simple: bool,
    /// Its rebalance protocol.
    #[serde(default)]
    pub group_type: GroupType,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The member id the coordinator assigned.
    pub member_id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's host.
    pub host: String,
    /// Static membership id (`group.instance.id`), if set.
    pub instance_id: Option<String>,
    /// Partitions assigned to it.
    pub assignment: Vec<TopicPartition>,
    /// KIP-848 groups: the partitions the coordinator wants it to own (`None` for classic
    /// groups, where the broker does not know a target).
    #[serde(default)]
    pub target_assignment: Option<Vec<TopicPartition>>,
}

/// A group as the describe-groups call reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// State.
    pub state: GroupState,
    /// Its rebalance protocol.
    #[serde(default)]
    pub group_type: GroupType,
    /// The partition assignor in use.
    pub assignor: String,
    /// Coordinator broker id.
    pub coordinator: Option<i32>,
    /// Members.
    pub members: Vec<GroupMember>,
    /// The error the broker reported for this group, if any.
    pub error: Option<PartitionError>,
}

/// Cluster metadata.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait MetadataQuery: Send + Sync {
    /// Metadata for `topics`, or for every topic when `topics` is empty.
    async fn metadata(&self, topics: &[String]) -> Result<ClusterMetadata, Error>;
}

/// Offsets of partitions and of groups.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait OffsetQuery: Send + Sync {
    /// Low and high watermarks (or LSO for `ReadCommitted`) of many partitions, batched per
    /// leader. Each partition gets its own result: one unreachable leader does not fail the rest.
    async fn watermarks(
        &self,
        partitions: &[TopicPartition],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<Watermarks>, Error>;

    /// Offsets by spec (earliest, latest, by time), batched per leader.
    async fn list_offsets(
        &self,
        queries: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<ListedOffset>, Error>;

    /// A group's committed offsets for the given partitions (`None`: never committed). One
    /// request to the group coordinator; works on every broker that serves OffsetFetch.
    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<PartitionResults<Option<Offset>>, Error>;

    /// The timestamp of the record at each position, or of the first after it where offsets
    /// hold no record (compacted away, a transaction marker, removed from the log: the record
    /// a consumer there reads next). `None`: no record up to the end, or it carries no
    /// timestamp. Reads one record per partition, batched per leader.
    async fn record_timestamps(
        &self,
        positions: &[(TopicPartition, Offset)],
    ) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error>;

    /// [`committed_offsets`](Self::committed_offsets) of the same partitions for each of
    /// `groups`, one answer per group in the order asked; a group whose offsets cannot be read
    /// gets its own error. The default asks group after group; an implementation that can send
    /// the groups' requests together should.
    async fn groups_committed_offsets(
        &self,
        groups: &[String],
        partitions: &[TopicPartition],
    ) -> Result<PerGroup<PartitionResults<Option<Offset>>>, Error> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            out.push((
                group.clone(),
                self.committed_offsets(group, partitions).await,
            ));
        }
        Ok(out)
    }
}

/// One answer per group, in the order the groups were asked: a failing group fails alone.
pub type PerGroup<T> = Vec<(String, Result<T, Error>)>;

/// Every committed offset of a group, by partition (or why one could not be read).
pub type GroupOffsetMap = BTreeMap<TopicPartition, PartitionResult<Offset>>;

/// Consumer-group administration (needs the admin APIs; some brokers and mocks lack them).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait GroupQuery: Send + Sync {
    /// Every consumer group.
    async fn list_groups(&self) -> Result<Vec<GroupListing>, Error>;

    /// Describes the named groups.
    async fn describe_groups(&self, groups: &[String]) -> Result<Vec<GroupDescription>, Error>;

    /// Every committed offset of a group. Returns [`Error::Unsupported`] where the broker cannot
    /// list a group's offsets without being told the partitions.
    async fn group_offsets(&self, group: &str) -> Result<GroupOffsetMap, Error>;

    /// [`group_offsets`](Self::group_offsets) of each of `groups`, one answer per group in the
    /// order asked; a group whose offsets cannot be read gets its own error. The default asks
    /// group after group; an implementation that can send the groups' requests together should.
    async fn groups_offsets(&self, groups: &[String]) -> Result<PerGroup<GroupOffsetMap>, Error> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            out.push((group.clone(), self.group_offsets(group).await));
        }
        Ok(out)
    }
}

/// A resource's configuration: every entry the broker returns, by name (a sensitive entry's
/// value is absent: brokers never send it).
pub type ConfigEntries = BTreeMap<String, Option<String>>;

/// Each topic's configuration, or why it could not be read.
pub type TopicConfigs = Vec<(String, Result<ConfigEntries, PartitionError>)>;

/// Resource configuration (DescribeConfigs; librdkafka's mock cluster does not serve it).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ConfigQuery: Send + Sync {
    /// The configuration of each topic (`min.insync.replicas`, `cleanup.policy`, ...), defaults
    /// resolved. Each topic gets its own result: one the broker refused to describe (not
    /// authorized, or no such topic) is an error, never an empty configuration.
    async fn topic_configs(&self, topics: &[String]) -> Result<TopicConfigs, Error>;

    /// The configuration of broker `id` (`process.roles`, `controller.quorum.voters`, ...); an
    /// error when the broker refused to describe it.
    async fn broker_config(&self, id: i32) -> Result<ConfigEntries, Error>;
}

/// Everything the lag collector needs.
pub trait ClusterQuery: MetadataQuery + OffsetQuery + GroupQuery {}
impl<T: MetadataQuery + OffsetQuery + GroupQuery + ?Sized> ClusterQuery for T {}

/// Options for [`group_lag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LagOptions {
    /// Which end offset lag is measured against.
    pub isolation: IsolationLevel,
}

/// How a group's partitions were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// The cluster client listed the group's committed offsets
    /// ([`GroupQuery::groups_offsets`]).
    GroupOffsets,
    /// The broker could not list them; the committed offsets of every partition in the metadata
    /// were asked instead.
    MetadataScan,
}

/// The timestamp of the record at each position (positions without a readable record are left
/// out). Any number of positions per partition: [`OffsetQuery::record_timestamps`] answers one
/// per partition, so they are asked in rounds — round `k` holds the `k`-th distinct position of
/// each partition — as many rounds as the most positions asked of one partition.
pub async fn timestamps_at<Q: OffsetQuery + ?Sized>(
    cluster: &Q,
    positions: &[(TopicPartition, Offset)],
) -> Result<HashMap<(TopicPartition, Offset), Timestamp>, Error> {
    let mut by_partition: BTreeMap<&TopicPartition, std::collections::BTreeSet<Offset>> =
        BTreeMap::new();
    for (tp, offset) in positions {
        by_partition.entry(tp).or_default().insert(*offset);
    }
    let mut stamps = HashMap::new();
    for round in 0.. {
        let asked: Vec<(TopicPartition, Offset)> = by_partition
            .iter()
            .filter_map(|(tp, offsets)| offsets.iter().nth(round).map(|o| ((*tp).clone(), *o)))
            .collect();
        if asked.is_empty() {
            break;
        }
        let answers = cluster.record_timestamps(&asked).await?;
        for ((tp, offset), (_, stamp)) in asked.into_iter().zip(answers) {
            if let Some(stamp) = stamp {
                stamps.insert((tp, offset), stamp);
            }
        }
    }
    Ok(stamps)
}

/// Fills each row's time lag from the timestamp of the record at its committed offset:
/// `taken_at − timestamp`, and zero for partitions without lag. Rows whose record cannot be read
/// keep `None`.
pub async fn fill_time_lag_from_records<Q: OffsetQuery + ?Sized>(
    cluster: &Q,
    lag: &mut GroupLag,
) -> Result<(), Error> {
    fill_time_lag_of_groups(cluster, std::slice::from_mut(lag)).await
}

/// [`fill_time_lag_from_records`] for many groups at once: the records are read together (see
/// [`timestamps_at`]), not group by group.
pub async fn fill_time_lag_of_groups<Q: OffsetQuery + ?Sized>(
    cluster: &Q,
    lags: &mut [GroupLag],
) -> Result<(), Error> {
    let position = |row: &crate::lag::PartitionLag| {
        row.committed
            .filter(|_| row.lag.is_some_and(|l| l > 0))
            .map(|c| (row.topic_partition(), c.max(row.log_start.unwrap_or(c))))
    };
    let positions: Vec<(TopicPartition, Offset)> = lags
        .iter()
        .flat_map(|lag| lag.partitions.iter().filter_map(position))
        .collect();
    let stamps = timestamps_at(cluster, &positions).await?;
    for lag in lags {
        let taken_at = lag.taken_at;
        for row in &mut lag.partitions {
            match row.lag {
                Some(0) => row.time_lag = Some(std::time::Duration::ZERO),
                Some(_) => {
                    if let Some(at) = position(row).and_then(|p| stamps.get(&p)) {
                        row.time_lag = Some(taken_at.saturating_since(*at));
                    }
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "mock"))]
mod mock;
mod pass;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "mock"))]
pub use mock::MockClusterQuery;
pub use pass::{AllGroupsLag, GroupFailure, all_groups_lag, group_lag, groups_lag};
