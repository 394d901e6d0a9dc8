//! A tansu broker process for admin-path tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::error::Error;
use crate::kafka::KafkaCluster;
use crate::testkit::{TestProducer, commit_offsets, free_port};
use crate::types::{Offset, TopicPartition};

/// Environment variable naming the tansu binary to run.
pub const TANSU_BIN_ENV: &str = "KAFKA_OPS_TANSU_BIN";

/// A tansu broker on a free loopback port, stopped when dropped.
///
/// The binary is `$KAFKA_OPS_TANSU_BIN`, else `tansu` on `PATH`, else `$CARGO_HOME/bin/tansu`
/// (the README's test command installs it there). Storage is in memory, so every broker starts
/// empty.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    bootstrap: String,
    log: PathBuf,
}

fn find_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(TANSU_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Config(format!(
                "{TANSU_BIN_ENV}={} is not a file",
                path.display()
            )))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    on_path
        .chain(cargo_home)
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::Config(format!(
                "the tansu broker is not installed: run the README's test command (it runs \
                 `cargo install tansu --locked --features dynostore`) or set {TANSU_BIN_ENV}"
            ))
        })
}

impl Tansu {
    /// Starts a broker and waits (up to 60 s) until it answers a metadata request. Blocking:
    /// call it from `spawn_blocking` inside async tests.
    pub fn start() -> Result<Self, Error> {
        let binary = find_binary()?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("kafka-ops-tansu-{port}.log"));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| Error::Config(format!("cannot share {}: {e}", log.display())))?;
        let child = Command::new(&binary)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| Error::Config(format!("cannot start {}: {e}", binary.display())))?;
        let mut broker = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            log,
        };
        broker.wait_ready(Duration::from_secs(60))?;
        Ok(broker)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| crate::kafka::kafka_error("create admin client", e))?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Config(format!(
                    "tansu exited with {status} before it was ready; see {}",
                    self.log.display()
                )));
            }
            if admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| !m.brokers().is_empty())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: "start tansu",
                    timeout: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Where the broker's output goes.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// A client configuration for this broker.
    pub fn client_config(&self) -> ClientConfig {
        crate::kafka::client_config(&self.bootstrap)
    }

    /// A cluster-query client for this broker with a 10 s bound on each request.
    pub fn cluster(&self) -> Result<KafkaCluster, Error> {
        KafkaCluster::from_config(&self.client_config())
    }

    /// A consumer configuration for `group` with test-friendly settings.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        config
    }

    /// Creates a topic through the admin API (CreateTopics), replication factor 1.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        let cluster = self.cluster()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = cluster
            .admin()
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| crate::kafka::kafka_error("create topics", e))?;
        for result in results {
            result.map_err(|(topic, code)| Error::Broker {
                operation: "create topics",
                code: crate::error::KafkaCode(code as i32),
                message: format!("topic {topic}"),
            })?;
        }
        Ok(())
    }

    /// A producer for this broker.
    pub fn producer(&self) -> Result<TestProducer, Error> {
        TestProducer::new(&self.bootstrap)
    }

    /// Commits `offsets` for `group` without joining it.
    pub async fn commit(
        &self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<(), Error> {
        commit_offsets(&self.consumer_config(group), offsets).await
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
