//! What the side-by-side benchmarks share; each benchmark is its own target in `benches/`.
// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use kafka_ops_core::testkit::{MockKafka, RealKafka, TestProducer, TestRecord, unique_name};
use rdkafka::ClientConfig;

/// The number in environment variable `name`, or `default` when it is unset or not a number.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The middle of `values` once sorted (the upper middle of an even count).
pub fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

/// A cluster a benchmark runs on: librdkafka's in-process mock cluster, or the real Apache
/// Kafka cluster named by `KAFKA_OPS_KAFKA_BOOTSTRAP` (the README's `scripts/kafka-cluster up`).
#[derive(Debug)]
pub enum BenchCluster {
    /// Three mock brokers in this process.
    Mock(MockKafka),
    /// The real cluster; topics are created under unique names and deleted afterwards.
    Real(RealKafka, std::sync::Mutex<Vec<String>>),
}

impl BenchCluster {
    /// The clusters `KAFKA_OPS_BENCH_CLUSTERS` names (`mock`, `real`, or both, comma-separated);
    /// by default the mock cluster, and the real one when `KAFKA_OPS_KAFKA_BOOTSTRAP` is set.
    /// Says on stdout which it skips and why.
    pub fn chosen(runtime: &tokio::runtime::Runtime) -> Vec<BenchCluster> {
        let real_available = std::env::var_os(kafka_ops_core::testkit::BOOTSTRAP_ENV).is_some();
        let wanted = std::env::var("KAFKA_OPS_BENCH_CLUSTERS").unwrap_or_else(|_| {
            if real_available {
                "mock,real".into()
            } else {
                "mock".into()
            }
        });
        if !real_available && !wanted.contains("real") {
            println!(
                "(the real cluster is not measured: {} is unset; see the README's \"Tests and their cluster\")",
                kafka_ops_core::testkit::BOOTSTRAP_ENV
            );
        }
        wanted
            .split(',')
            .map(str::trim)
            .map(|name| match name {
                "mock" => BenchCluster::Mock(
                    MockKafka::start(3).unwrap_or_else(|e| panic!("mock cluster: {e}")),
                ),
                "real" => BenchCluster::Real(
                    runtime
                        .block_on(RealKafka::shared())
                        .unwrap_or_else(|e| panic!("real cluster: {e}")),
                    std::sync::Mutex::default(),
                ),
                other => panic!("KAFKA_OPS_BENCH_CLUSTERS: unknown cluster {other:?} (mock, real)"),
            })
            .collect()
    }

    /// `mock cluster` or `real cluster`, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            BenchCluster::Mock(_) => "3-broker mock cluster",
            BenchCluster::Real(..) => "3-node Apache Kafka cluster",
        }
    }

    /// The `bootstrap.servers` value.
    pub fn bootstrap(&self) -> &str {
        match self {
            BenchCluster::Mock(kafka) => kafka.bootstrap(),
            BenchCluster::Real(kafka, _) => kafka.bootstrap(),
        }
    }

    /// A client configuration.
    pub fn client_config(&self) -> ClientConfig {
        match self {
            BenchCluster::Mock(kafka) => kafka.client_config(),
            BenchCluster::Real(kafka, _) => kafka.client_config(),
        }
    }

    /// A consumer configuration for `group` (earliest offsets, no auto-commit).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        match self {
            BenchCluster::Mock(kafka) => kafka.consumer_config(group),
            BenchCluster::Real(kafka, _) => kafka.consumer_config(group),
        }
    }

    /// A cluster-query client of this cluster.
    pub fn cluster(&self) -> kafka_ops_core::kafka::KafkaCluster {
        match self {
            BenchCluster::Mock(kafka) => kafka.cluster().unwrap_or_else(|e| panic!("client: {e}")),
            BenchCluster::Real(kafka, _) => kafka.cluster(),
        }
    }

    /// Commits `offsets` for `group` without joining it; panics on failure.
    pub fn commit(
        &self,
        runtime: &tokio::runtime::Runtime,
        group: &str,
        offsets: &[(kafka_ops_core::TopicPartition, kafka_ops_core::Offset)],
    ) {
        runtime
            .block_on(kafka_ops_core::kafka::commit_group_offsets(
                &self.consumer_config(group),
                offsets,
            ))
            .unwrap_or_else(|e| panic!("commit for {group}: {e}"));
    }

    /// Creates a topic of `partitions` partitions and returns its name: `name` itself on the
    /// mock cluster, a unique name beginning with `name` on the real one (which other runs
    /// share), to be deleted by [`clean_up`](Self::clean_up).
    pub fn topic(&self, runtime: &tokio::runtime::Runtime, name: &str, partitions: i32) -> String {
        let name = match self {
            BenchCluster::Mock(_) => name.to_string(),
            BenchCluster::Real(..) => unique_name(name),
        };
        self.exact_topic(runtime, &name, partitions);
        name
    }

    /// Creates the topic `name` (on the real cluster replicated three times with
    /// `min.insync.replicas=2`, and deleted by [`clean_up`](Self::clean_up)).
    pub fn exact_topic(&self, runtime: &tokio::runtime::Runtime, name: &str, partitions: i32) {
        match self {
            BenchCluster::Mock(kafka) => kafka
                .create_topic(name, partitions)
                .unwrap_or_else(|e| panic!("topic {name}: {e}")),
            BenchCluster::Real(kafka, created) => {
                runtime
                    .block_on(kafka.create_topic(name, partitions))
                    .unwrap_or_else(|e| panic!("topic {name}: {e}"));
                created
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(name.to_string());
            }
        }
    }

    /// Deletes the topics this cluster value created (the real cluster's; the mock cluster
    /// goes with the process).
    pub fn clean_up(&self, runtime: &tokio::runtime::Runtime) {
        if let BenchCluster::Real(kafka, created) = self {
            let topics = std::mem::take(
                &mut *created
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(error) = runtime.block_on(kafka.delete_topics(&names)) {
                println!("(could not delete the benchmark's topics: {error})");
            }
        }
    }
}

/// Writes `records` records to `topic`, record `i` being `record(i)`, in batches of 50 000 so
/// the producer's queue never fills, lingering so the broker gets large message sets;
/// panics on any failure (a benchmark cannot go on).
pub fn fill(
    runtime: &tokio::runtime::Runtime,
    cluster: &BenchCluster,
    topic: &str,
    records: u64,
    record: impl Fn(u64) -> TestRecord,
) {
    const BATCH: u64 = 50_000;
    let producer =
        TestProducer::with_linger(cluster.bootstrap(), std::time::Duration::from_millis(50))
            .unwrap_or_else(|error| panic!("a producer for {topic}: {error}"));
    runtime.block_on(async {
        let mut sent = 0;
        while sent < records {
            let n = BATCH.min(records - sent);
            if let Err(error) = producer.produce(topic, (sent..sent + n).map(&record)).await {
                panic!("filling {topic}: {error}");
            }
            sent += n;
        }
    });
}

/// The CPU time in a `/proc/<pid>/stat` document: fields `user` and `system` after the command
/// name (which is in parentheses and may hold spaces), in clock ticks of 10 ms.
fn stat_cpu(stat: &str, user_field: usize) -> std::time::Duration {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    std::time::Duration::from_millis((field(user_field) + field(user_field + 1)) * 10)
}

/// This process's user + system CPU time so far (Linux: `/proc/self/stat`). On the real
/// cluster it excludes the brokers, which run in their own processes.
pub fn cpu_time() -> std::time::Duration {
    stat_cpu(
        &std::fs::read_to_string("/proc/self/stat").unwrap_or_default(),
        11,
    )
}

/// The CPU time of this process's finished and waited-for children (a `kcat` pipe's).
pub fn children_cpu_time() -> std::time::Duration {
    stat_cpu(
        &std::fs::read_to_string("/proc/self/stat").unwrap_or_default(),
        13,
    )
}

/// The CPU time so far of the Apache Kafka brokers running on this machine (processes whose
/// command line names Kafka's main class, `kafka.Kafka`), or `None` when none runs here.
pub fn local_brokers_cpu_time() -> Option<std::time::Duration> {
    let mut total = None;
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let is_broker = std::fs::read(process.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka"));
        if is_broker && let Ok(stat) = std::fs::read_to_string(process.path().join("stat")) {
            *total.get_or_insert(std::time::Duration::ZERO) += stat_cpu(&stat, 11);
        }
    }
    total
}
