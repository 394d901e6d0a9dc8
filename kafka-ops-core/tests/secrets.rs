//! Secrets in a client configuration never leave the process: not through `Debug`, error
//! messages, or anything logged through `tracing` while clients are built, used and fail.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kafka_ops_core::cluster::{GroupQuery, MetadataQuery, OffsetQuery};
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::kafka::{client_config, redacted_config};
use kafka_ops_core::testkit::{MockKafka, unique_name};
use kafka_ops_core::{IsolationLevel, Record, TopicPartition};
use rdkafka::ClientConfig;

const SASL_PASSWORD: &str = "sasl-hunter2-do-not-print";
const KEY_PASSWORD: &str = "tls-key-hunter3-do-not-print";

fn secret_config(bootstrap: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", "svc-billing")
        .set("sasl.password", SASL_PASSWORD)
        .set("ssl.key.password", KEY_PASSWORD);
    config
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SASL_PASSWORD) && !text.contains(KEY_PASSWORD),
        "{what} leaks a secret: {text}"
    );
}

/// Everything `tracing` writes during this test binary, at every level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let logs = logs.clone();
            move || SharedWriter(logs.clone())
        };
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(writer)
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn redacted_config_hides_every_secret_and_keeps_the_rest() {
    let config = secret_config("127.0.0.1:1");
    let shown = redacted_config(&config);
    assert_eq!(shown["sasl.password"], "[redacted]");
    assert_eq!(shown["ssl.key.password"], "[redacted]");
    assert_eq!(shown["sasl.username"], "svc-billing");
    assert_clean("redacted_config", &format!("{shown:?}"));
    assert_clean("ClientConfig Debug", &format!("{config:?}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_fails_without_printing_secrets() {
    let logs = captured_logs();
    // Nothing listens on port 1: every call fails, and its error is what a user would print.
    let cluster = KafkaCluster::from_config(&secret_config("127.0.0.1:1"))
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    assert_clean("KafkaCluster Debug", &format!("{cluster:?}"));
    let partitions = [TopicPartition::new("orders", 0)];
    // Whole-call errors and per-partition errors alike, as a user would print them.
    let mut printed = Vec::new();
    match cluster.metadata(&[]).await {
        Ok(metadata) => printed.push(format!("{metadata:?}")),
        Err(error) => printed.push(format!("{error} {error:?}")),
    }
    match cluster
        .watermarks(&partitions, IsolationLevel::ReadUncommitted)
        .await
    {
        Ok(results) => printed.push(format!("{results:?}")),
        Err(error) => printed.push(format!("{error} {error:?}")),
    }
    match cluster.list_groups().await {
        Ok(groups) => printed.push(format!("{groups:?}")),
        Err(error) => printed.push(format!("{error} {error:?}")),
    }
    assert!(
        printed.iter().any(|p| p.contains("127.0.0.1:1")
            || p.to_lowercase().contains("timed out")
            || p.to_lowercase().contains("transport")),
        "the failures say what went wrong: {printed:?}"
    );
    for text in &printed {
        assert_clean("a failed call", text);
    }
    assert_clean("logs", &String::from_utf8_lossy(&logs.lock().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_run_logs_and_reports_without_secrets() {
    let logs = captured_logs();
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("secret");
    kafka.create_topic(&topic, 1).unwrap();
    // The mock cluster speaks plaintext, so the secrets ride along in properties it ignores.
    let mut config = kafka.consumer_config(&unique_name("g"));
    config
        .set("sasl.username", "svc-billing")
        .set("sasl.password", SASL_PASSWORD)
        .set("ssl.key.password", KEY_PASSWORD);
    let driver = Driver::new(
        config.clone(),
        DriverConfig::new([topic.as_str()]),
        handler_fn(|_record: &Record<'_>| async { Ok(Outcome::Processed) }),
    );
    assert_clean("Driver Debug", &format!("{driver:?}"));
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_clean("DriverReport", &format!("{report:?}"));

    // A configuration error names the problem, not the settings.
    config.remove("group.id");
    let error = Driver::new(
        config,
        DriverConfig::new([topic.as_str()]),
        handler_fn(|_record: &Record<'_>| async { Ok(Outcome::Processed) }),
    )
    .run()
    .await
    .unwrap_err();
    assert_clean("driver error", &format!("{error} {error:?}"));
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("partitions assigned"),
        "the driver's logs were captured: {logs}"
    );
    assert_clean("logs", &logs);
}

#[test]
fn a_configuration_error_about_a_secret_does_not_repeat_it() {
    // librdkafka's error for a rejected property carries its value; rdkafka prints it.
    let mut config = client_config("127.0.0.1:1");
    config.set("vault.token.password", SASL_PASSWORD);
    let error = KafkaCluster::from_config(&config).unwrap_err();
    let printed = format!(
        "{error} {error:?} {}",
        std::error::Error::source(&error).unwrap()
    );
    assert!(printed.contains("vault.token.password"), "{printed}");
    assert_clean("configuration error", &printed);
}
