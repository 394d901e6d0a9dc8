//! `kafka-ops health` and `kafka-ops restart-check` end to end against the mock cluster and
//! tansu.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::testkit::{MockKafka, Tansu, TestRecord, unique_name};

mod support;
use support::cli;

#[tokio::test(flavor = "multi_thread")]
async fn health_prints_every_probe_and_fails_on_a_full_dead_letter_topic() {
    let kafka = MockKafka::start(3).unwrap();
    let dlq = format!("{}.dlq", unique_name("orders"));
    kafka.create_topic(&dlq, 1).unwrap();
    let records = (0..150).map(|i| TestRecord::keyed(format!("k{i}"), "v"));
    kafka.produce(&dlq, records).await.unwrap();
    let (code, out, err) = cli(&[
        "health",
        "--bootstrap",
        kafka.bootstrap(),
        "--expected-brokers",
        "3",
        "--topic",
        &format!("{dlq}:1"),
        "--fail-on",
        "warning",
    ])
    .await;
    assert!(err.is_empty(), "{err}");
    for probe in [
        "broker_connectivity",
        "controller",
        "partitions",
        "dead_letter_depth",
        "required_topics",
    ] {
        assert!(out.contains(probe), "{probe} missing:\n{out}");
    }
    assert!(out.contains("3 of 3 brokers up"), "{out}");
    assert!(out.contains("holds 150 records"), "{out}");
    // The mock cluster names no real controller: critical, so exit 2.
    assert_eq!(code, 2, "{out}");

    let (code, out, _) = cli(&["health", "--bootstrap", kafka.bootstrap(), "--json"]).await;
    assert_eq!(code, 0, "no --fail-on, no failing exit");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["probes"][0]["name"], "broker_connectivity");
    assert_eq!(report["probes"][0]["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_of_an_unreachable_cluster_is_critical_and_quick() {
    let started = std::time::Instant::now();
    let (code, out, _) = cli(&[
        "health",
        "--bootstrap",
        "127.0.0.1:1",
        "--timeout",
        "1s",
        "--probe-timeout",
        "3s",
        "--fail-on",
        "critical",
    ])
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cluster unreachable"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_check_refuses_the_controller_with_its_reasons() {
    let tansu = tokio::task::spawn_blocking(Tansu::start)
        .await
        .unwrap()
        .expect("tansu must be installed and start (the README's test command installs it)");
    let topic = unique_name("gate");
    tansu.create_topic(&topic, 1).await.unwrap();
    let (code, out, err) = cli(&["health", "--bootstrap", tansu.bootstrap(), "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let controller = report["probes"][1]["details"]["controller"]
        .as_i64()
        .unwrap();

    let (code, out, err) = cli(&[
        "restart-check",
        "--bootstrap",
        tansu.bootstrap(),
        "--broker",
        &controller.to_string(),
    ])
    .await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("NOT safe to restart"), "{out}");
    assert!(out.contains("the broker is the controller"), "{out}");
    assert!(out.contains(&format!("{topic}/0")), "{out}");

    let (code, _, err) = cli(&[
        "restart-check",
        "--bootstrap",
        "127.0.0.1:1",
        "--timeout",
        "1s",
        "--broker",
        "1",
    ])
    .await;
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach the cluster"), "{err}");
}
