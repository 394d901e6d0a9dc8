//! [`KafkaCluster`]: the rdkafka implementation of the cluster-query traits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use crate::cluster::{
    BrokerInfo, ClusterMetadata, GroupDescription, GroupListing, GroupQuery, MetadataQuery,
    OffsetQuery, PartitionError, PartitionInfo, PartitionResult, PartitionResults, TopicInfo,
};
use crate::error::{Error, KafkaCode};
use crate::ffi;
use crate::kafka::{client_config, kafka_error, redacted_config};
use crate::types::{
    IsolationLevel, ListedOffset, Offset, OffsetSpec, Timestamp, TopicPartition, Watermarks,
};

/// Default bound on every cluster request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    admin: AdminClient<DefaultClientContext>,
    config: ClientConfig,
}

/// What a blocking call needs: the clients and the bound on each request.
struct Inner<'a> {
    admin: &'a AdminClient<DefaultClientContext>,
    config: &'a ClientConfig,
    timeout: Duration,
}

/// A connection to a cluster for queries and administration.
///
/// Every call is bounded by the configured timeout and runs librdkafka's blocking calls on
/// tokio's blocking pool, never on an async worker. Cheap to clone.
///
/// ```no_run
/// # async fn example() -> Result<(), kafka_ops_core::Error> {
/// use kafka_ops_core::cluster::MetadataQuery;
/// use kafka_ops_core::kafka::KafkaCluster;
///
/// let cluster = KafkaCluster::connect("localhost:9092")?;
/// let metadata = cluster.metadata(&[]).await?;
/// println!("{} brokers, controller {:?}", metadata.brokers.len(), metadata.controller);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaCluster {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("config", &redacted_config(&self.shared.config))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KafkaCluster {
    /// A client for the cluster `config` points at (SASL/TLS settings included).
    pub fn from_config(config: &ClientConfig) -> Result<Self, Error> {
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| kafka_error("create admin client", e))?;
        Ok(KafkaCluster {
            shared: Arc::new(Shared {
                admin,
                config: config.clone(),
            }),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A client for `bootstrap` (comma-separated `host:port` list) without security settings.
    pub fn connect(bootstrap: &str) -> Result<Self, Error> {
        Self::from_config(&client_config(bootstrap))
    }

    /// The same client with another bound on each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bound on each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The underlying rdkafka admin client, for calls kafka-ops does not wrap (create topics, ...).
    pub fn admin(&self) -> &AdminClient<DefaultClientContext> {
        &self.shared.admin
    }

    /// The configuration this client was created from (rdkafka's `Debug` hides its secrets).
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// Runs a blocking librdkafka call on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner<'_>) -> Result<T, Error> + Send + 'static,
    {
        let shared = self.shared.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            f(&Inner {
                admin: &shared.admin,
                config: &shared.config,
                timeout,
            })
        })
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
    }
}

fn metadata_of(inner: &Inner<'_>, topics: &[String]) -> Result<ClusterMetadata, Error> {
    let client = inner.admin.inner();
    let timeout = inner.timeout;
    let fetched = if topics.is_empty() {
        vec![fetch_metadata(client, None, timeout)?]
    } else {
        topics
            .iter()
            .map(|t| fetch_metadata(client, Some(t), timeout))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut brokers = BTreeMap::new();
    let mut topics_out = BTreeMap::new();
    for metadata in &fetched {
        for broker in metadata.brokers() {
            brokers.insert(
                broker.id(),
                BrokerInfo {
                    id: broker.id(),
                    host: broker.host().to_string(),
                    port: u16::try_from(broker.port()).unwrap_or(0),
                },
            );
        }
        for topic in metadata.topics() {
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions()
                .iter()
                .map(|p| PartitionInfo {
                    id: p.id(),
                    leader: (p.leader() >= 0).then(|| p.leader()),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                    error: p.error().map(|e| KafkaCode(e as i32)),
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            topics_out.insert(
                topic.name().to_string(),
                TopicInfo {
                    name: topic.name().into(),
                    partitions,
                    error: topic.error().map(|e| KafkaCode(e as i32)),
                },
            );
        }
    }
    Ok(ClusterMetadata {
        brokers: brokers.into_values().collect(),
        controller: ffi::controller_id(client, timeout),
        topics: topics_out.into_values().collect(),
    })
}

fn fetch_metadata(
    client: &rdkafka::client::Client<DefaultClientContext>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<rdkafka::metadata::Metadata, Error> {
    client.fetch_metadata(topic, timeout).map_err(|e| {
        if matches!(
            e.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)
        ) {
            Error::Timeout {
                operation: "fetch metadata",
                timeout,
            }
        } else {
            kafka_error("fetch metadata", e)
        }
    })
}

/// Deduplicates while keeping the first occurrence's order.
fn unique<T: Clone + Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

#[async_trait]
impl MetadataQuery for KafkaCluster {
    async fn metadata(&self, topics: &[String]) -> Result<ClusterMetadata, Error> {
        let topics = topics.to_vec();
        self.blocking(move |inner| metadata_of(inner, &topics))
            .await
    }
}

#[async_trait]
impl OffsetQuery for KafkaCluster {
    async fn watermarks(
        &self,
        partitions: &[TopicPartition],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<Watermarks>, Error> {
        let partitions = unique(partitions.iter().cloned());
        self.blocking(move |inner| {
            let client = inner.admin.inner();
            let query =
                |spec| -> Result<HashMap<TopicPartition, PartitionResult<ListedOffset>>, Error> {
                    let queries: Vec<(TopicPartition, OffsetSpec)> =
                        partitions.iter().map(|tp| (tp.clone(), spec)).collect();
                    Ok(
                        ffi::list_offsets(client, &queries, isolation, inner.timeout)?
                            .into_iter()
                            .collect(),
                    )
                };
            let low = query(OffsetSpec::Earliest)?;
            let high = query(OffsetSpec::Latest)?;
            Ok(partitions
                .iter()
                .map(|tp| {
                    let answer = match (low.get(tp), high.get(tp)) {
                        (Some(Ok(low)), Some(Ok(high))) => match (low.offset, high.offset) {
                            (Some(low), Some(high)) => Ok(Watermarks { low, high }),
                            _ => Err(PartitionError {
                                code: None,
                                reason: "broker returned no offset".into(),
                            }),
                        },
                        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e.clone()),
                        _ => Err(PartitionError {
                            code: None,
                            reason: "no answer for this partition".into(),
                        }),
                    };
                    (tp.clone(), answer)
                })
                .collect())
        })
        .await
    }

    async fn list_offsets(
        &self,
        queries: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<ListedOffset>, Error> {
        let queries = unique(
            queries
                .iter()
                .cloned()
                .map(|(tp, spec)| (tp, SpecKey(spec))),
        );
        let queries: Vec<(TopicPartition, OffsetSpec)> = queries
            .into_iter()
            .map(|(tp, SpecKey(spec))| (tp, spec))
            .collect();
        self.blocking(move |inner| {
            ffi::list_offsets(inner.admin.inner(), &queries, isolation, inner.timeout)
        })
        .await
    }

    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<PartitionResults<Option<Offset>>, Error> {
        let group = group.to_string();
        let partitions = unique(partitions.iter().cloned());
        self.blocking(move |inner| {
            let answers: HashMap<TopicPartition, PartitionResult<Option<Offset>>> =
                ffi::list_consumer_group_offsets(
                    inner.admin.inner(),
                    &group,
                    Some(&partitions),
                    inner.timeout,
                )?
                .into_iter()
                .collect();
            Ok(partitions
                .into_iter()
                .map(|tp| {
                    let answer = answers.get(&tp).cloned().unwrap_or(Err(PartitionError {
                        code: None,
                        reason: "no answer for this partition".into(),
                    }));
                    (tp, answer)
                })
                .collect())
        })
        .await
    }

    async fn record_timestamps(
        &self,
        positions: &[(TopicPartition, Offset)],
    ) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error> {
        let positions = unique(positions.iter().cloned());
        self.blocking(move |inner| read_timestamps(inner, &positions))
            .await
    }
}

/// `OffsetSpec` has no `Ord`; this orders it for deduplication.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SpecKey(OffsetSpec);

impl SpecKey {
    fn rank(&self) -> (u8, i64) {
        match self.0 {
            OffsetSpec::Earliest => (0, 0),
            OffsetSpec::Latest => (1, 0),
            OffsetSpec::MaxTimestamp => (2, 0),
            OffsetSpec::AtTime(t) => (3, t.as_millis()),
        }
    }
}

impl PartialOrd for SpecKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpecKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Reads the first record at or after each position with a short-lived, group-less consumer.
fn read_timestamps(
    inner: &Inner<'_>,
    positions: &[(TopicPartition, Offset)],
) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let mut config = inner.config.clone();
    config
        .set("group.id", "kafka-ops-timestamp-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("max.partition.fetch.bytes", "4096")
        .set("queued.max.messages.kbytes", "1024");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| kafka_error("create timestamp reader", e))?;
    let mut assignment = TopicPartitionList::with_capacity(positions.len());
    for (tp, offset) in positions {
        assignment
            .add_partition_offset(
                &tp.topic,
                tp.partition,
                rdkafka::Offset::Offset(offset.get()),
            )
            .map_err(|e| kafka_error("assign timestamp reader", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka_error("assign timestamp reader", e))?;
    let mut found: HashMap<TopicPartition, Option<Timestamp>> = HashMap::new();
    let deadline = Instant::now() + inner.timeout;
    while found.len() < positions.len() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match consumer.poll(deadline - now) {
            Some(Ok(message)) => {
                let tp = TopicPartition::new(message.topic(), message.partition());
                found
                    .entry(tp)
                    .or_insert_with(|| message.timestamp().to_millis().map(Timestamp::from_millis));
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "timestamp reader poll error");
            }
            None => {}
        }
    }
    Ok(positions
        .iter()
        .map(|(tp, _)| (tp.clone(), found.get(tp).copied().flatten()))
        .collect())
}

#[async_trait]
impl GroupQuery for KafkaCluster {
    async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        self.blocking(|inner| {
            let (listings, errors) = ffi::list_consumer_groups(inner.admin.inner(), inner.timeout)?;
            // A listing with errors from some brokers misses their groups: report, never guess.
            if let Some((code, message)) = errors.into_iter().next() {
                return Err(if code == KafkaCode::UNSUPPORTED_FEATURE {
                    Error::Unsupported {
                        operation: "list consumer groups",
                        reason: message,
                    }
                } else {
                    Error::Broker {
                        operation: "list consumer groups",
                        code,
                        message,
                    }
                });
            }
            let mut listings = listings;
            listings.sort_by(|a, b| a.group.cmp(&b.group));
            Ok(listings)
        })
        .await
    }

    async fn describe_groups(&self, groups: &[String]) -> Result<Vec<GroupDescription>, Error> {
        let groups = groups.to_vec();
        self.blocking(move |inner| {
            ffi::describe_consumer_groups(inner.admin.inner(), &groups, inner.timeout)
        })
        .await
    }

    async fn group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, PartitionResult<Offset>>, Error> {
        let group = group.to_string();
        self.blocking(move |inner| {
            let answers =
                ffi::list_consumer_group_offsets(inner.admin.inner(), &group, None, inner.timeout)?;
            Ok(answers
                .into_iter()
                .filter_map(|(tp, answer)| match answer {
                    Ok(Some(offset)) => Some((tp, Ok(offset))),
                    Ok(None) => None,
                    Err(e) => Some((tp, Err(e))),
                })
                .collect())
        })
        .await
    }
}
