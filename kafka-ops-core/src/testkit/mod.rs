//! Test support shared by every kafka-ops crate (feature `testkit`).
//!
//! - [`RealKafka`]: a real Apache Kafka cluster — the 3-node KRaft cluster the README's test
//!   command starts with `scripts/kafka-cluster up`, or any cluster named by
//!   `KAFKA_OPS_KAFKA_BOOTSTRAP` — for every admin, cluster and end-to-end path: topics through
//!   the admin API, nodes stopped and started, Kafka's own tools as a cross-check, foreign
//!   systems writing dead letters.
//! - [`MockKafka`]: librdkafka's in-process mock cluster (real TCP sockets on loopback), for
//!   what its fault injection does best — request errors, round-trip delays, a broker down —
//!   and for fast data-path tests; with topic creation, a producer for keyed records with
//!   headers, test-friendly consumer settings, commits of chosen offsets and request counting.
//! - [`TestProducer`], [`TransactionalProducer`], [`Subscriber`]: acknowledged writes,
//!   transactions left open or committed, a group member that only holds its assignment.
//!
//! Test support fails loudly: an unset cluster address, a missing script or a cluster that does
//! not come up is an error the test reports, never a silent skip.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() {
//! use kafka_ops_core::testkit::{MockKafka, TestRecord};
//!
//! let kafka = MockKafka::start(3).unwrap();
//! kafka.create_topic("orders", 4).unwrap();
//! let written = kafka
//!     .produce("orders", (0..10).map(|i| TestRecord::keyed(format!("k{i}"), format!("v{i}"))))
//!     .await
//!     .unwrap();
//! assert_eq!(written.len(), 10);
//! # }
//! ```
//!
//! ## What the mock cluster does not serve
//!
//! ListGroups, DescribeGroups, DescribeConfigs, CreateTopics, DeleteTopics, DeleteRecords and
//! DescribeCluster close the connection; ListOffsets by timestamp answers -1; OffsetFetch for
//! "all partitions" answers empty; its metadata names controller 0, none of its brokers; and it
//! scans a partition's message sets from the start to serve each fetch. Tests of those paths
//! and every number a user would compare with Kafka's own tools run on [`RealKafka`].

mod real;
mod removal;
mod subscriber;
mod transactions;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::error::Error;
use crate::ffi;
use crate::kafka::{KafkaCluster, kafka_error};
use crate::types::{Offset, TopicPartition};

pub use real::{BOOTSTRAP_ENV, RealKafka, SCRIPT_ENV, ToolRow, TopicSpec, parse_group_tool_output};
pub use removal::{DeleteOnce, SMALL_SET};
pub use subscriber::Subscriber;
pub use transactions::TransactionalProducer;

/// A record to produce in a test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRecord {
    /// Key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in order; a `None` value is a null header.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Target partition; `None` lets the partitioner choose (by key).
    pub partition: Option<i32>,
    /// Create-time timestamp in milliseconds; `None` uses the current time.
    pub timestamp: Option<i64>,
}

impl TestRecord {
    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        TestRecord {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// A record with only a value (null key).
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        TestRecord {
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sends to a fixed partition.
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the create-time timestamp (milliseconds since the epoch).
    pub fn at(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }
}

/// A request a mock broker received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MockRequest {
    /// The broker that received it.
    pub broker: i32,
    /// Its Kafka API key (2 = ListOffsets, 3 = Metadata, 9 = OffsetFetch, ...).
    pub api_key: i16,
}

/// Kafka API keys used in request-count assertions.
pub mod api {
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// ListOffsets.
    pub const LIST_OFFSETS: i16 = 2;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// OffsetCommit.
    pub const OFFSET_COMMIT: i16 = 8;
    /// OffsetFetch.
    pub const OFFSET_FETCH: i16 = 9;
    /// FindCoordinator.
    pub const FIND_COORDINATOR: i16 = 10;
}

/// An embedded librdkafka mock cluster.
///
/// It is `Send + Sync`: the cluster lives inside a client this value owns, and every fault
/// injection call goes through librdkafka's thread-safe mock API.
pub struct MockKafka {
    // Fields drop in order: the producer must close before `owner` destroys the cluster it
    // talks to, or librdkafka logs connection failures on the way out.
    producer: TestProducer,
    bootstrap: String,
    brokers: i32,
    owner: BaseProducer,
}

impl std::fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKafka")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers on loopback, with a 100 ms initial rebalance delay
    /// (the mock's default is 3 s).
    pub fn start(brokers: i32) -> Result<Self, Error> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .map_err(|e| kafka_error("start mock cluster", e))?;
        let bootstrap = {
            let mock = owner.client().mock_cluster().ok_or_else(|| Error::Kafka {
                operation: "start mock cluster",
                code: None,
                source: "the client did not create a mock cluster".into(),
            })?;
            mock.bootstrap_servers()
        };
        ffi::mock::set_initial_rebalance_delay(owner.client(), Duration::from_millis(100));
        let producer = TestProducer::new(&bootstrap)?;
        Ok(MockKafka {
            owner,
            producer,
            bootstrap,
            brokers,
        })
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Number of brokers.
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    /// rdkafka's fault-injection API for this cluster, borrowed.
    pub fn mock(&self) -> MockCluster<'_, rdkafka::producer::DefaultProducerContext> {
        // The owner client was created with `test.mock.num.brokers`, so it always has one.
        #[allow(clippy::expect_used)]
        self.owner
            .client()
            .mock_cluster()
            .expect("the owner client holds the mock cluster")
    }

    /// A client configuration for this cluster.
    pub fn client_config(&self) -> ClientConfig {
        crate::kafka::client_config(&self.bootstrap)
    }

    /// A consumer configuration for `group` with test-friendly settings: earliest offsets, short
    /// session timeout, no auto-commit.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        classic_consumer_config(&self.bootstrap, group)
    }

    /// A cluster-query client for this cluster with a 5 s bound on each request.
    pub fn cluster(&self) -> Result<KafkaCluster, Error> {
        Ok(KafkaCluster::from_config(&self.client_config())?.with_timeout(Duration::from_secs(5)))
    }

    /// Creates a topic with `partitions` partitions, replicated on every broker (up to 3).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        let replication = self.brokers.clamp(1, 3);
        self.mock()
            .create_topic(name, partitions, replication)
            .map_err(|e| kafka_error("create topic", e))
    }

    /// Produces `records` to `topic` and waits for every acknowledgement. Returns
    /// `(partition, offset)` per record, in order.
    pub async fn produce(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = TestRecord>,
    ) -> Result<Vec<(i32, Offset)>, Error> {
        self.producer.produce(topic, records).await
    }

    /// The test producer.
    pub fn producer(&self) -> &TestProducer {
        &self.producer
    }

    /// `group`'s committed offsets on partitions `0..partitions` of `topic` (`None`: none).
    pub async fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<Option<i64>>, Error> {
        committed(&self.cluster()?, group, topic, partitions).await
    }

    /// Every record of `topic` now, partition by partition, in offset order.
    pub async fn read_all(&self, topic: &str) -> Result<Vec<crate::OwnedRecord>, Error> {
        read_all(self.client_config(), topic).await
    }

    /// Commits `offsets` for `group` without joining it (as an admin tool would).
    pub async fn commit(
        &self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<(), Error> {
        crate::kafka::commit_group_offsets(&self.consumer_config(group), offsets).await
    }

    /// Takes broker `id` down (its connections are closed and it refuses new ones).
    pub fn broker_down(&self, id: i32) -> Result<(), Error> {
        self.mock()
            .broker_down(id)
            .map_err(|e| kafka_error("broker down", e))
    }

    /// Brings broker `id` back up.
    pub fn broker_up(&self, id: i32) -> Result<(), Error> {
        self.mock()
            .broker_up(id)
            .map_err(|e| kafka_error("broker up", e))
    }

    /// Makes the next requests of `api` fail with `errors`, one per request, in order.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.mock().request_errors(api, errors);
    }

    /// Delays every response of broker `id` by `delay`.
    pub fn broker_round_trip_time(&self, id: i32, delay: Duration) -> Result<(), Error> {
        self.mock()
            .broker_round_trip_time(id, delay)
            .map_err(|e| kafka_error("broker round-trip time", e))
    }

    /// Starts recording the requests brokers receive (see [`requests`](Self::requests)).
    pub fn track_requests(&self) {
        ffi::mock::start_request_tracking(self.owner.client());
        ffi::mock::clear_requests(self.owner.client());
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        ffi::mock::clear_requests(self.owner.client());
    }

    /// The requests recorded since [`track_requests`](Self::track_requests), in arrival order.
    pub fn requests(&self) -> Vec<MockRequest> {
        ffi::mock::requests(self.owner.client())
            .into_iter()
            .map(|(broker, api_key)| MockRequest { broker, api_key })
            .collect()
    }

    /// How many recorded requests had API key `api_key`.
    pub fn count_requests(&self, api_key: i16) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.api_key == api_key)
            .count()
    }
}

/// A classic-protocol consumer configuration for `group` on `bootstrap` with test-friendly
/// settings: earliest offsets, a short session, no auto-commit, quick metadata refreshes.
fn classic_consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = crate::kafka::client_config(bootstrap);
    config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000");
    config
}

/// Records with everything a copy must keep: non-UTF-8 key and value bytes, repeated headers
/// (one non-UTF-8), a tombstone, an empty value, a null header, an explicit timestamp — on
/// partitions 0, 1 and 2.
pub fn awkward_records() -> Vec<TestRecord> {
    vec![
        TestRecord::keyed(vec![0xff, 0x00, 0xfe], vec![0xc3, 0x28])
            .header("h", vec![0x80])
            .header("h", b"again".to_vec())
            .to_partition(0)
            .at(1_700_000_000_000),
        TestRecord {
            value: None,
            key: Some(b"deleted".to_vec()),
            partition: Some(1),
            ..TestRecord::default()
        },
        TestRecord::value(Vec::new()).to_partition(2),
        TestRecord {
            headers: vec![("null".into(), None)],
            value: Some(b"v".to_vec()),
            partition: Some(2),
            ..TestRecord::default()
        },
    ]
}

/// A producer that waits for every acknowledgement, for writing test data: the adapter's
/// [`AckedProducer`](crate::kafka::AckedProducer) with a 10 s delivery timeout.
pub struct TestProducer {
    producer: crate::kafka::AckedProducer,
}

impl std::fmt::Debug for TestProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestProducer")
    }
}

impl TestProducer {
    /// A producer for `bootstrap` (10 s delivery timeout, no lingering).
    pub fn new(bootstrap: &str) -> Result<Self, Error> {
        Self::with_linger(bootstrap, Duration::ZERO)
    }

    /// A producer that waits up to `linger` to fill a batch: bulk loads write few, large
    /// message sets, as a busy producer does (the mock cluster scans a partition's message
    /// sets to serve a fetch, so many small ones slow every reader down).
    pub fn with_linger(bootstrap: &str, linger: Duration) -> Result<Self, Error> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("delivery.timeout.ms", "10000")
            .set("linger.ms", linger.as_millis().to_string())
            .set("batch.num.messages", "10000");
        Ok(TestProducer {
            producer: crate::kafka::AckedProducer::new(&config)?,
        })
    }

    /// Produces `records` to `topic` and waits for every acknowledgement. Returns
    /// `(partition, offset)` per record, in order.
    pub async fn produce(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = TestRecord>,
    ) -> Result<Vec<(i32, Offset)>, Error> {
        let mut pending = Vec::new();
        for record in records {
            let headers: crate::Headers<'_> = record
                .headers
                .iter()
                .map(|(key, value)| crate::Header {
                    key: key.as_str().into(),
                    value: value.as_deref().map(Into::into),
                })
                .collect();
            pending.push(self.producer.send(crate::kafka::Outgoing {
                topic,
                partition: record.partition,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &headers,
                timestamp: record.timestamp.map(crate::Timestamp::from_millis),
            })?);
        }
        let mut written = Vec::with_capacity(pending.len());
        for delivery in pending {
            let delivered = delivery.await?;
            written.push((delivered.partition, Offset::new(delivered.offset)?));
        }
        Ok(written)
    }

    /// Waits until everything produced so far is acknowledged.
    pub fn flush(&self) -> Result<(), Error> {
        self.producer.flush(Duration::from_secs(10))
    }
}

/// `group`'s committed offsets on partitions `0..partitions` of `topic` (`None`: none), from
/// any cluster (the mock cluster, the real one).
pub async fn committed<Q: crate::cluster::OffsetQuery>(
    cluster: &Q,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<i64>>, Error> {
    let partitions: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    cluster
        .committed_offsets(group, &partitions)
        .await?
        .into_iter()
        .map(|(tp, offset)| {
            offset
                .map(|o| o.map(Offset::get))
                .map_err(|e| Error::Config(format!("committed offset of {tp}: {}", e.reason)))
        })
        .collect()
}

/// Every record of `topic` up to its end when called, partition by partition, in offset order,
/// read with the adapter's [`RangeReader`](crate::kafka::RangeReader) through `client_config`.
pub async fn read_all(
    client_config: ClientConfig,
    topic: &str,
) -> Result<Vec<crate::OwnedRecord>, Error> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        crate::kafka::RangeReader::with_group(&client_config, &unique_name("read-all"))?
            .read_topic(&topic)
    })
    .await
    .map_err(|e| Error::Task(Box::new(e)))?
}

/// A command running the ignored test `name` of the current test binary, alone, in a new
/// process: for tests that kill a consumer (`kill -9`, `abort`) and start it again. The
/// caller adds its environment and stdio.
pub fn test_process(name: &str) -> Result<std::process::Command, Error> {
    let binary = std::env::current_exe()
        .map_err(|e| Error::Config(format!("cannot find the test binary: {e}")))?;
    let mut command = std::process::Command::new(binary);
    command.args([name, "--exact", "--ignored", "--nocapture"]);
    Ok(command)
}

/// A loopback port nothing listens on now: for a server to start on, or for a broker that is
/// not there.
pub fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Config(format!("no free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Config(format!("no free loopback port: {e}")))
}

/// The threads this process has now, as Linux's `/proc/self/status` counts them; `None` where
/// that cannot be read. For tests and benchmarks of how many clients a call holds.
pub fn process_threads() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// A unique name for a test resource (topic, group), so tests sharing a broker do not collide.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{pid}-{nanos:x}-{n}")
}
