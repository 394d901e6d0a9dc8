//! [`KafkaCluster`]: the rdkafka implementation of the cluster-query traits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use crate::class::KafkaCode;
use crate::cluster::{
    BrokerInfo, ClusterMetadata, MetadataQuery, PartitionError, PartitionInfo, PartitionResult,
    PartitionResults, TopicInfo,
};
use crate::error::Error;
use crate::ffi;
use crate::kafka::{client_config, group_state, kafka_error, lock, metadata, redacted_config};
use crate::types::{Offset, TopicPartition};
use committed::GroupReaders;

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
    /// A second handle for large ListOffsets calls (see `offsets::send_list_offsets`), made on
    /// first need; `None` when it could not be made.
    second_admin: OnceLock<Option<AdminClient<DefaultClientContext>>>,
    config: ClientConfig,
    leaders: Mutex<LeaderCache>,
    readers: GroupReaders,
    /// Group coordinators learned from descriptions, where they cannot be worked out.
    coordinators: Mutex<HashMap<String, i32>>,
    /// When the cluster last answered that it cannot describe groups.
    describe_unsupported: Mutex<Option<Instant>>,
}

/// Partition leaders from the last full metadata answer, used only to group requests by leader
/// (a stale entry costs an extra request, never a wrong answer: librdkafka routes each request
/// by its own leader cache).
#[derive(Default)]
struct LeaderCache {
    fetched: Option<Instant>,
    leaders: HashMap<TopicPartition, Option<i32>>,
    /// Each broker's address, by id.
    brokers: HashMap<i32, (String, u16)>,
    /// The leader of each partition of `__consumer_offsets`, by partition id: the group
    /// coordinators (empty when the cluster shows no such topic).
    coordinators: Vec<Option<i32>>,
}

/// How long leaders from a metadata answer are reused for grouping requests.
const LEADER_CACHE_TTL: Duration = Duration::from_secs(10);

/// What a blocking call needs: the clients and the bound on each request.
#[derive(Clone, Copy)]
struct Inner<'a> {
    admin: &'a AdminClient<DefaultClientContext>,
    second_admin: &'a OnceLock<Option<AdminClient<DefaultClientContext>>>,
    config: &'a ClientConfig,
    leaders: &'a Mutex<LeaderCache>,
    readers: &'a GroupReaders,
    coordinators: &'a Mutex<HashMap<String, i32>>,
    describe_unsupported: &'a Mutex<Option<Instant>>,
    timeout: Duration,
    batch_size: usize,
}

/// A connection to a cluster for queries and administration.
///
/// Every call is bounded by the configured timeout and runs librdkafka's blocking calls on
/// tokio's blocking pool, never on an async worker. Cheap to clone. A call of 8 or more
/// ListOffsets batches (each at most [`DEFAULT_BATCH_SIZE`] partitions of one leader and one
/// offset spec: a lag snapshot of a few hundred partitions or more) makes a second admin client
/// from the same configuration, once, and sends half of them through it: librdkafka handles all
/// of a client's admin requests on one thread (see [`admin_clients`](Self::admin_clients)).
///
/// Two requests librdkafka cannot make as needed are sent by the client itself, on plaintext
/// listeners only, to the broker the metadata names (client id `kafka-ops`): committed offsets
/// of many groups, one OffsetFetch v8 per group coordinator and call within half the call's
/// bound, and the state of a KIP-848 group. Whatever those cannot answer (TLS or SASL, brokers
/// before Kafka 3.0, a coordinator moving) goes through librdkafka: committed offsets then by a
/// consumer of each group, kept between calls.
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
                second_admin: OnceLock::new(),
                config: config.clone(),
                leaders: Mutex::new(LeaderCache::default()),
                readers: GroupReaders::default(),
                coordinators: Mutex::default(),
                describe_unsupported: Mutex::new(None),
            }),
            timeout: DEFAULT_TIMEOUT,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// A client for `bootstrap` (comma-separated `host:port` list) without security settings.
    pub fn connect(bootstrap: &str) -> Result<Self, Error> {
        Self::from_config(&client_config(bootstrap))
    }

    /// The same client with another bound on each request (the requests an offsets query
    /// sends together, one per leader and spec, share one).
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

    /// How many librdkafka admin clients this handle and its clones hold: 1, or 2 once a large
    /// ListOffsets call made the second (see the type's docs). Each has its own threads and
    /// connections.
    pub fn admin_clients(&self) -> usize {
        1 + usize::from(matches!(self.shared.second_admin.get(), Some(Some(_))))
    }

    /// The underlying rdkafka admin client, for the test kit's topic administration.
    pub(crate) fn admin(&self) -> &AdminClient<DefaultClientContext> {
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
                second_admin: &shared.second_admin,
                config: &shared.config,
                leaders: &shared.leaders,
                readers: &shared.readers,
                coordinators: &shared.coordinators,
                describe_unsupported: &shared.describe_unsupported,
                timeout,
                batch_size,
            })
        })
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
    }
}

impl Inner<'_> {
    /// The second admin handle, made from the same configuration on first use.
    fn second_admin(&self) -> Option<&AdminClient<DefaultClientContext>> {
        self.second_admin
            .get_or_init(|| match self.config.create() {
                Ok(admin) => Some(admin),
                Err(error) => {
                    tracing::debug!(%error, "no second admin handle; large calls stay on one");
                    None
                }
            })
            .as_ref()
    }

    /// Each of `groups`' committed offsets of `partitions`, in their order, one answer per
    /// group, the whole call bounded by the client's timeout: asked of the groups'
    /// coordinators many groups a request (see [`offset_fetch`]) within half the bound, then
    /// what that could not answer through a consumer per group (see [`committed`]).
    fn committed(
        &self,
        groups: &[String],
        partitions: &[TopicPartition],
    ) -> Vec<Result<PartitionResults<Option<Offset>>, Error>> {
        if partitions.is_empty() {
            return groups.iter().map(|_| Ok(Vec::new())).collect();
        }
        let started = Instant::now();
        let mut answers: Vec<Option<Result<_, Error>>> = groups.iter().map(|_| None).collect();
        if let Some(locate) = self.coordinator_locator() {
            let deadline = crate::kafka::deadline_after(started, self.timeout / 2);
            let direct = offset_fetch::committed_at_coordinators(
                groups,
                partitions,
                locate,
                deadline,
                offset_fetch::MAX_ENTRIES,
            );
            for (slot, answer) in answers.iter_mut().zip(direct) {
                *slot = answer.map(Ok);
            }
        }
        let rest: Vec<String> = groups
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(group, _)| group.clone())
            .collect();
        if !rest.is_empty() {
            let left = self.timeout.saturating_sub(started.elapsed());
            let mut through_consumers = self
                .readers
                .committed(self.config, &rest, partitions, self.batch_size, left)
                .into_iter();
            for slot in answers.iter_mut().filter(|answer| answer.is_none()) {
                *slot = through_consumers.next();
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(no_group_answer())))
            .collect()
    }

    /// Where each group's coordinator listens, from the cached metadata (read again when
    /// older than [`LEADER_CACHE_TTL`]); `None` where groups cannot be asked directly: a
    /// secured listener, metadata that shows no `__consumer_offsets` (librdkafka's mock
    /// cluster), or no metadata. A coordinator that moved since is found out by its answer.
    fn coordinator_locator(&self) -> Option<impl Fn(&str) -> Option<offset_fetch::Coordinator>> {
        if !group_state::is_plaintext(self.config.get("security.protocol")) {
            return None;
        }
        let fresh = lock(self.leaders)
            .fetched
            .is_some_and(|at| at.elapsed() < LEADER_CACHE_TTL);
        // Half the bound at most, as for the requests that follow: the consumers' path keeps
        // the rest.
        let within_half = Inner {
            timeout: self.timeout / 2,
            ..*self
        };
        if !fresh && let Err(error) = metadata_of(&within_half, &[]) {
            tracing::debug!(%error, "no metadata; committed offsets go through consumers");
            return None;
        }
        let cache = lock(self.leaders);
        if cache.coordinators.is_empty() {
            return None;
        }
        let (coordinators, brokers) = (cache.coordinators.clone(), cache.brokers.clone());
        Some(move |group: &str| {
            let id = coordinator::coordinator_of(group, &coordinators)?;
            brokers.get(&id).cloned()
        })
    }
}

/// What a group gets when neither path answered it (not expected: the consumers' path answers
/// every group it is given).
fn no_group_answer() -> Error {
    Error::Kafka {
        operation: "read committed offsets",
        code: None,
        source: "no answer for the group".into(),
    }
}

fn metadata_of(inner: &Inner<'_>, topics: &[String]) -> Result<ClusterMetadata, Error> {
    let client = inner.admin.inner();
    let timeout = inner.timeout;
    let started = Instant::now();
    // One request for every topic (see `metadata::all_topics`), filtered here.
    let fetched = [metadata::all_topics(client, timeout)?];
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
        // librdkafka waits for a controller only when the answer named none; that wait gets
        // what is left of the call's bound, not a bound of its own.
        controller: ffi::controller_id(client, timeout.saturating_sub(started.elapsed())),
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
        cache.brokers = metadata
            .brokers
            .iter()
            .map(|b| (b.id, (b.host.clone(), b.port)))
            .collect();
        cache.coordinators = metadata
            .topics
            .iter()
            .find(|t| &*t.name == coordinator::GROUP_OFFSETS_TOPIC && t.error.is_none())
            .map(|t| {
                coordinator::leaders_by_partition(
                    t.partitions.len(),
                    t.partitions
                        .iter()
                        .map(|p| (p.id, p.leader.filter(|_| p.error.is_none()))),
                )
            })
            .unwrap_or_default();
        cache.fetched = Some(Instant::now());
    }
    Ok(metadata)
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

mod committed;
mod configs;
mod coordinator;
mod groups;
mod offset_fetch;
mod offsets;
mod records;
