//! [`KafkaCluster`]: the rdkafka implementation of the cluster-query traits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::class::KafkaCode;
use crate::cluster::{
    BrokerInfo, ClusterMetadata, ConfigEntries, ConfigQuery, GroupDescription, GroupListing,
    GroupQuery, GroupState, GroupType, MetadataQuery, OffsetQuery, PartitionError, PartitionInfo,
    PartitionResult, PartitionResults, TopicConfigs, TopicInfo,
};
use crate::error::Error;
use crate::ffi;
use crate::kafka::{RangeReader, client_config, group_state, kafka_error, redacted_config};
use crate::types::{
    IsolationLevel, ListedOffset, Offset, OffsetSpec, Timestamp, TopicPartition, Watermarks,
};

/// Default bound on every cluster request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default number of partitions put in one ListOffsets or OffsetFetch request.
///
/// librdkafka matches each partition of those requests and answers against a list by linear
/// search (`rd_kafka_ListOffsets_response_merge`, `rd_kafka_topic_partition_list_get_leaders`,
/// `rd_kafka_handle_OffsetFetch`), so one request over `n` partitions costs O(n²) client CPU:
/// about half a second for 10 000. Requests are therefore capped at this size and all sent at
/// once: a snapshot is one request per partition leader up to 128 partitions per leader, then
/// one more per further 128. On a 3-broker mock cluster, 10 000 partitions take ~240 requests and
/// ~0.1 s, against 20 001 requests and ~2.5 s for a per-partition loop. Raise it with
/// [`KafkaCluster::with_batch_size`] where round trips cost more than client CPU.
pub const DEFAULT_BATCH_SIZE: usize = 128;

struct Shared {
    admin: AdminClient<DefaultClientContext>,
    config: ClientConfig,
    leaders: Mutex<LeaderCache>,
}

/// Partition leaders from the last full metadata answer, used only to group requests by leader
/// (a stale entry costs an extra request, never a wrong answer: librdkafka routes each request
/// by its own leader cache).
#[derive(Default)]
struct LeaderCache {
    fetched: Option<Instant>,
    leaders: HashMap<TopicPartition, Option<i32>>,
}

/// How long leaders from a metadata answer are reused for grouping requests.
const LEADER_CACHE_TTL: Duration = Duration::from_secs(10);

/// What a blocking call needs: the clients and the bound on each request.
struct Inner<'a> {
    admin: &'a AdminClient<DefaultClientContext>,
    config: &'a ClientConfig,
    leaders: &'a Mutex<LeaderCache>,
    timeout: Duration,
    batch_size: usize,
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
    batch_size: usize,
}

impl fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("config", &redacted_config(&self.shared.config))
            .field("timeout", &self.timeout)
            .field("batch_size", &self.batch_size)
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
                leaders: Mutex::new(LeaderCache::default()),
            }),
            timeout: DEFAULT_TIMEOUT,
            batch_size: DEFAULT_BATCH_SIZE,
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

    /// The same client with another cap on partitions per offsets request (see
    /// [`DEFAULT_BATCH_SIZE`]; at least 1).
    pub fn with_batch_size(mut self, partitions: usize) -> Self {
        self.batch_size = partitions.max(1);
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
        let (timeout, batch_size) = (self.timeout, self.batch_size);
        tokio::task::spawn_blocking(move || {
            f(&Inner {
                admin: &shared.admin,
                config: &shared.config,
                leaders: &shared.leaders,
                timeout,
                batch_size,
            })
        })
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
    }
}

fn metadata_of(inner: &Inner<'_>, topics: &[String]) -> Result<ClusterMetadata, Error> {
    let client = inner.admin.inner();
    let timeout = inner.timeout;
    // Always one request for every topic, filtered here: asking for a named topic can make a
    // broker with auto-creation enabled create it, which a monitoring call must never do.
    let fetched = [fetch_metadata(client, None, timeout)?];
    let wanted: BTreeSet<&str> = topics.iter().map(String::as_str).collect();
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
            if !wanted.is_empty() && !wanted.contains(topic.name()) {
                continue;
            }
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
    let metadata = ClusterMetadata {
        brokers: brokers.into_values().collect(),
        controller: ffi::controller_id(client, timeout),
        topics: topics_out.into_values().collect(),
    };
    if wanted.is_empty() {
        let mut cache = inner.leaders.lock().unwrap_or_else(PoisonError::into_inner);
        cache.leaders = metadata
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (TopicPartition::new(t.name.clone(), p.id), p.leader))
            })
            .collect();
        cache.fetched = Some(Instant::now());
    }
    Ok(metadata)
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

/// Splits `partitions` into request-sized groups that each have one leader, so every group is one
/// request to one broker (partitions without a known leader form their own groups; librdkafka
/// answers them with per-partition errors).
fn leader_chunks(
    inner: &Inner<'_>,
    partitions: &[TopicPartition],
) -> Result<Vec<Vec<TopicPartition>>, Error> {
    if partitions.len() <= inner.batch_size {
        // One request per leader already: librdkafka fans a single call out by leader.
        return Ok(vec![partitions.to_vec()]);
    }
    let fresh = |cache: &LeaderCache| {
        cache
            .fetched
            .is_some_and(|at| at.elapsed() < LEADER_CACHE_TTL)
            && partitions.iter().all(|tp| cache.leaders.contains_key(tp))
    };
    if !fresh(&inner.leaders.lock().unwrap_or_else(PoisonError::into_inner)) {
        metadata_of(inner, &[])?;
    }
    let cache = inner.leaders.lock().unwrap_or_else(PoisonError::into_inner);
    let mut by_leader: BTreeMap<Option<i32>, Vec<TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        by_leader
            .entry(cache.leaders.get(tp).copied().flatten())
            .or_default()
            .push(tp.clone());
    }
    Ok(by_leader
        .into_values()
        .flat_map(|group| {
            group
                .chunks(inner.batch_size)
                .map(<[TopicPartition]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect())
}

fn no_answer() -> PartitionError {
    PartitionError {
        code: None,
        reason: "no answer for this partition".into(),
    }
}

/// Adds one batch's answers to `into`; when the whole batch failed, every partition of it gets
/// that error, so one unreachable leader marks only its own partitions unknown.
fn merge_batch<'a, T>(
    into: &mut HashMap<TopicPartition, PartitionResult<T>>,
    batch: impl Iterator<Item = &'a TopicPartition>,
    result: Result<PartitionResults<T>, Error>,
) {
    match result {
        Ok(answers) => into.extend(answers),
        Err(error) => {
            let failure = PartitionError {
                code: error.code(),
                reason: error.to_string(),
            };
            for tp in batch {
                into.insert(tp.clone(), Err(failure.clone()));
            }
        }
    }
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
            let mut batches = Vec::new();
            for chunk in leader_chunks(inner, &partitions)? {
                for spec in [OffsetSpec::Earliest, OffsetSpec::Latest] {
                    batches.push(
                        chunk
                            .iter()
                            .map(|tp| (tp.clone(), spec))
                            .collect::<Vec<_>>(),
                    );
                }
            }
            let results =
                ffi::list_offsets(inner.admin.inner(), &batches, isolation, inner.timeout)?;
            let mut low = HashMap::new();
            let mut high = HashMap::new();
            for (batch, answers) in batches.iter().zip(results) {
                let target = match batch.first() {
                    Some((_, OffsetSpec::Earliest)) => &mut low,
                    _ => &mut high,
                };
                merge_batch(target, batch.iter().map(|(tp, _)| tp), answers);
            }
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
            let partitions: Vec<TopicPartition> =
                queries.iter().map(|(tp, _)| tp.clone()).collect();
            let specs: HashMap<TopicPartition, OffsetSpec> = queries.into_iter().collect();
            let batches: Vec<Vec<(TopicPartition, OffsetSpec)>> =
                leader_chunks(inner, &partitions)?
                    .into_iter()
                    .map(|chunk| {
                        chunk
                            .into_iter()
                            .filter_map(|tp| specs.get(&tp).map(|spec| (tp, *spec)))
                            .collect()
                    })
                    .collect();
            let results =
                ffi::list_offsets(inner.admin.inner(), &batches, isolation, inner.timeout)?;
            let mut answers = HashMap::with_capacity(partitions.len());
            for (batch, result) in batches.iter().zip(results) {
                merge_batch(&mut answers, batch.iter().map(|(tp, _)| tp), result);
            }
            Ok(partitions
                .into_iter()
                .map(|tp| {
                    let answer = answers.remove(&tp).unwrap_or_else(|| Err(no_answer()));
                    (tp, answer)
                })
                .collect())
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
            let batches: Vec<Vec<TopicPartition>> = partitions
                .chunks(inner.batch_size)
                .map(<[TopicPartition]>::to_vec)
                .collect();
            let results = ffi::list_consumer_group_offsets(
                inner.admin.inner(),
                &group,
                Some(&batches),
                inner.timeout,
            )?;
            let mut answers = HashMap::with_capacity(partitions.len());
            for (batch, result) in batches.iter().zip(results) {
                merge_batch(&mut answers, batch.iter(), result);
            }
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

/// Reads the first record at or after each position (any record, committed or not: the time
/// a consumer of either isolation waits on), fetching a little per partition.
fn read_timestamps(
    inner: &Inner<'_>,
    positions: &[(TopicPartition, Offset)],
) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let mut config = inner.config.clone();
    config
        .set("isolation.level", "read_uncommitted")
        .set("max.partition.fetch.bytes", "4096")
        .set("queued.max.messages.kbytes", "1024");
    RangeReader::with_group(&config, "kafka-ops-timestamp-reader")?
        .first_record_timestamps(positions, inner.timeout)
}

fn config_entries(resource: &rdkafka::admin::ConfigResource) -> ConfigEntries {
    resource
        .entries
        .iter()
        .map(|entry| {
            let value = if entry.is_sensitive {
                None
            } else {
                entry.value.clone()
            };
            (entry.name.clone(), value)
        })
        .collect()
}

impl KafkaCluster {
    async fn describe_configs(
        &self,
        operation: &'static str,
        resources: &[ResourceSpecifier<'_>],
    ) -> Result<Vec<rdkafka::admin::ConfigResourceResult>, Error> {
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        match tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.shared.admin.describe_configs(resources, &options),
        )
        .await
        {
            Ok(result) => result.map_err(|e| {
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::UnsupportedFeature)
                ) {
                    Error::Unsupported {
                        operation,
                        reason: e.to_string(),
                    }
                } else {
                    kafka_error(operation, e)
                }
            }),
            Err(_) => Err(Error::Timeout {
                operation,
                timeout: self.timeout,
            }),
        }
    }
}

#[async_trait]
impl ConfigQuery for KafkaCluster {
    async fn topic_configs(&self, topics: &[String]) -> Result<TopicConfigs, Error> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let resources: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(t.as_str()))
            .collect();
        let answers = self
            .describe_configs("describe topic configs", &resources)
            .await?;
        let mut by_topic: HashMap<String, Result<ConfigEntries, PartitionError>> = HashMap::new();
        for (topic, answer) in topics.iter().zip(answers) {
            let entry = match answer {
                Ok(resource) => Ok(config_entries(&resource)),
                Err(code) => Err(PartitionError::from_code(KafkaCode(code as i32))),
            };
            by_topic.insert(topic.clone(), entry);
        }
        Ok(topics
            .iter()
            .map(|t| {
                let answer = by_topic.remove(t).unwrap_or_else(|| Err(no_answer()));
                (t.clone(), answer)
            })
            .collect())
    }

    async fn broker_config(&self, id: i32) -> Result<ConfigEntries, Error> {
        // librdkafka sends a broker resource to that broker, one broker per request.
        let answers = self
            .describe_configs("describe broker config", &[ResourceSpecifier::Broker(id)])
            .await?;
        match answers.into_iter().next() {
            Some(Ok(resource)) => Ok(config_entries(&resource)),
            Some(Err(code)) => Err(Error::Broker {
                operation: "describe broker config",
                code: KafkaCode(code as i32),
                message: format!("broker {id}"),
            }),
            None => Err(Error::Broker {
                operation: "describe broker config",
                code: KafkaCode(-1),
                message: format!("no answer for broker {id}"),
            }),
        }
    }
}

/// Per-group errors that go away on their own: the coordinator is moving or loading (after a
/// broker restart, for instance). librdkafka returns them as they are; they are retried here
/// within the request bound.
fn is_coordinator_moving(error: &PartitionError) -> bool {
    error.code.is_some_and(|code| {
        [
            KafkaCode::NOT_COORDINATOR,
            KafkaCode::COORDINATOR_NOT_AVAILABLE,
            KafkaCode::COORDINATOR_LOAD_IN_PROGRESS,
        ]
        .contains(&code)
    })
}

/// Describes `groups`, retrying groups whose coordinator is moving, and gives KIP-848 groups
/// the state librdkafka cannot name (see [`group_state`](crate::kafka::group_state)).
fn describe_groups(inner: &Inner<'_>, groups: &[String]) -> Result<Vec<GroupDescription>, Error> {
    let deadline = Instant::now() + inner.timeout;
    let mut answers: BTreeMap<String, ffi::DescribedGroup> = BTreeMap::new();
    let mut asking: Vec<String> = unique(groups.iter().cloned());
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let described = ffi::describe_consumer_groups(
            inner.admin.inner(),
            &asking,
            remaining.max(Duration::from_millis(100)),
        )?;
        asking.clear();
        for group in described {
            let retry = group
                .description
                .error
                .as_ref()
                .is_some_and(is_coordinator_moving);
            if retry {
                asking.push(group.description.group.clone());
            }
            answers.insert(group.description.group.clone(), group);
        }
        if asking.is_empty() || Instant::now() + Duration::from_millis(200) >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let plaintext = group_state::is_plaintext(inner.config.get("security.protocol"));
    Ok(groups
        .iter()
        .filter_map(|name| answers.remove(name))
        .map(|described| {
            let mut description = described.description;
            if description.state == GroupState::Unknown
                && description.group_type == GroupType::Consumer
                && description.error.is_none()
            {
                let coordinator = described
                    .coordinator_address
                    .as_ref()
                    .map(|(host, port)| (host.as_str(), *port));
                let (state, source) = group_state::resolve(
                    &description.group,
                    coordinator,
                    plaintext,
                    &description.members,
                    inner.timeout.min(Duration::from_secs(5)),
                );
                tracing::debug!(group = %description.group, %state, ?source, "consumer-protocol group state");
                description.state = state;
            }
            description
        })
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
            // librdkafka lists KIP-848 groups that are assigning or reconciling as unknown:
            // describe those to name their state.
            let unnamed: Vec<String> = listings
                .iter()
                .filter(|l| l.state == GroupState::Unknown && l.group_type == GroupType::Consumer)
                .map(|l| l.group.clone())
                .collect();
            if !unnamed.is_empty() {
                let states: HashMap<String, GroupState> = describe_groups(inner, &unnamed)?
                    .into_iter()
                    .map(|d| (d.group, d.state))
                    .collect();
                for listing in &mut listings {
                    if let Some(state) = states.get(&listing.group) {
                        listing.state = *state;
                    }
                }
            }
            Ok(listings)
        })
        .await
    }

    async fn describe_groups(&self, groups: &[String]) -> Result<Vec<GroupDescription>, Error> {
        let groups = groups.to_vec();
        self.blocking(move |inner| describe_groups(inner, &groups))
            .await
    }

    async fn group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, PartitionResult<Offset>>, Error> {
        let group = group.to_string();
        self.blocking(move |inner| {
            let answers =
                ffi::list_consumer_group_offsets(inner.admin.inner(), &group, None, inner.timeout)?
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| Ok(Vec::new()))?;
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
