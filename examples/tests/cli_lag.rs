//! `kafka-ops lag` end to end: in-process against the mock cluster and the real cluster, and as a
//! process for exit codes and the unreachable-cluster path.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::{Duration, Instant};

use kafka_ops_core::testkit::{MockKafka, RealKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, TopicPartition};

mod support;
use support::{cli, example_binary};

/// orders: partition 0 has 30 records committed at 10, partition 1 has 20 committed at 20,
/// partition 2 has 5 and no commit.
async fn billing_cluster() -> (MockKafka, String) {
    let kafka = MockKafka::start(3).unwrap();
    kafka.create_topic("orders", 3).unwrap();
    for (p, n) in [(0, 30), (1, 20), (2, 5)] {
        let records = (0..n).map(|i| {
            TestRecord::keyed(format!("k{i}"), "v")
                .to_partition(p)
                .at(1_700_000_000_000 + i * 1000)
        });
        kafka.produce("orders", records).await.unwrap();
    }
    kafka
        .commit(
            "billing",
            &[
                (TopicPartition::new("orders", 0), Offset::new(10).unwrap()),
                (TopicPartition::new("orders", 1), Offset::new(20).unwrap()),
            ],
        )
        .await
        .unwrap();
    let bootstrap = kafka.bootstrap().to_string();
    (kafka, bootstrap)
}

#[tokio::test(flavor = "multi_thread")]
async fn table_report_matches_kafka_consumer_groups_describe() {
    let (_kafka, bootstrap) = billing_cluster().await;
    let (code, out, err) = cli(&["lag", "--bootstrap", &bootstrap, "--group", "billing"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "TIME-LAG",
            "STATUS"
        ]
    );
    assert_eq!(&lines[1][..6], ["billing", "orders", "0", "10", "30", "20"]);
    assert_eq!(lines[1][7], "OK");
    assert_eq!(&lines[2][..6], ["billing", "orders", "1", "20", "20", "0"]);
    assert_eq!(lines[2][6], "0s");
    assert_eq!(&lines[3][..6], ["billing", "orders", "2", "-", "5", "-"]);
    assert_eq!(lines[3][7], "NO-COMMIT");
    assert!(out.contains("billing: ok, total lag 20"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_report_has_nulls_for_unknowns() {
    let (_kafka, bootstrap) = billing_cluster().await;
    let (code, out, _) = cli(&[
        "lag",
        "--bootstrap",
        &bootstrap,
        "--group",
        "billing",
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let group = &json["groups"][0];
    assert_eq!(group["group"], "billing");
    assert_eq!(group["status"], "ok");
    assert_eq!(group["total_lag"], 20);
    let partitions = group["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[0]["topic"], "orders");
    assert_eq!(partitions[0]["committed"], 10);
    assert_eq!(partitions[0]["end_offset"], 30);
    assert_eq!(partitions[0]["lag"], 20);
    assert!(partitions[0]["time_lag_ms"].as_u64().unwrap() > 0);
    assert_eq!(partitions[2]["committed"], serde_json::Value::Null);
    assert_eq!(partitions[2]["lag"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_on_maps_severity_to_exit_codes() {
    let (_kafka, bootstrap) = billing_cluster().await;
    // Total lag 20: warning above 10; critical above 100 (not reached) or above 15 (reached).
    let cases: [(&str, Option<&str>, i32); 5] = [
        ("100", None, 0),
        ("100", Some("warning"), 1),
        ("15", Some("warning"), 2),
        ("100", Some("critical"), 0),
        ("15", Some("critical"), 2),
    ];
    for (critical, fail_on, expected) in cases {
        let mut args = vec![
            "lag",
            "--bootstrap",
            bootstrap.as_str(),
            "--group",
            "billing",
        ];
        args.extend(["--warning-lag", "10", "--critical-lag", critical]);
        if let Some(fail_on) = fail_on {
            args.extend(["--fail-on", fail_on]);
        }
        assert_eq!(cli(&args).await.0, expected, "{args:?}");
    }
    // A group without any committed offset (a misspelt name) is a warning, not a pass.
    let (code, out, _) = cli(&[
        "lag",
        "--bootstrap",
        &bootstrap,
        "--group",
        "bilings",
        "--fail-on",
        "warning",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no committed offsets"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbook_script_lag_above_ten_thousand_exits_one() {
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("outbox_events", 1).unwrap();
    kafka
        .produce(
            "outbox_events",
            (0..10_050).map(|i| TestRecord::value(format!("e{i}"))),
        )
        .await
        .unwrap();
    kafka
        .commit(
            "outbox_publisher_group",
            &[(
                TopicPartition::new("outbox_events", 0),
                Offset::new(40).unwrap(),
            )],
        )
        .await
        .unwrap();
    let (code, out, _) = cli(&[
        "lag",
        "--bootstrap",
        kafka.bootstrap(),
        "--group",
        "outbox_publisher_group",
        "--fail-on",
        "warning",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("total lag 10010 > warning threshold 10000"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_reports_burrow_statuses_each_round() {
    let (_kafka, bootstrap) = billing_cluster().await;
    let (code, out, err) = cli(&[
        "lag",
        "--bootstrap",
        &bootstrap,
        "--group",
        "billing",
        "--watch",
        "200ms",
        "--iterations",
        "3",
        "--window",
        "2",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let rounds: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rounds.len(), 3);
    for round in &rounds {
        let group = &round["groups"][0];
        assert_eq!(group["total_lag"], 20);
        // A window of commits exists from the first round on.
        assert!(group["burrow_status"].is_string(), "{group}");
    }
    // The consumer committed nothing while lag exists: by the last round Burrow calls it stopped.
    let last = &rounds[2]["groups"][0];
    assert_eq!(last["partitions"][0]["status"], "STOP", "{last}");
    assert_eq!(last["burrow_status"], "ERR");
    assert_eq!(last["status"], "critical");
    // Time lag comes from the interpolation table in watch mode: the end offset did not move.
    assert_eq!(last["partitions"][1]["time_lag_ms"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_groups_needs_the_admin_api_and_says_so() {
    let (_kafka, bootstrap) = billing_cluster().await;
    let (code, _, err) = cli(&["lag", "--bootstrap", &bootstrap, "--all-groups"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("name the groups with --group"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_groups_on_a_broker_with_the_admin_api() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("events");
    let group = unique_name("audit_processor_group");
    kafka.create_topic(&topic, 1).await.unwrap();
    kafka
        .produce(
            &topic,
            (0..5).map(|i| TestRecord::value(format!("e{i}")).to_partition(0)),
        )
        .await
        .unwrap();
    kafka
        .commit(
            &group,
            &[(
                TopicPartition::new(topic.as_str(), 0),
                Offset::new(1).unwrap(),
            )],
        )
        .await
        .unwrap();
    let (code, out, err) = cli(&[
        "lag",
        "--bootstrap",
        kafka.bootstrap(),
        "--all-groups",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ours: Vec<&serde_json::Value> = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["group"] == group.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{out}");
    assert_eq!(ours[0]["total_lag"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_errors_not_verdicts() {
    let (code, _, err) = cli(&["lag", "--bootstrap", "x:1"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("--group"), "{err}");
    let (code, out, _) = cli(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("lag"));
}

#[test]
fn an_unreachable_cluster_is_a_clear_error_within_the_timeout() {
    let port = kafka_ops_core::testkit::free_port().unwrap();
    let started = Instant::now();
    let output = Command::new(example_binary("kafka-ops"))
        .args(["lag", "--group", "billing", "--timeout", "2s"])
        .env("KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the cluster at 127.0.0.1:"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// The cluster stops answering for longer than a round's requests wait (15 s) during a watch:
/// the rounds it misses are warnings, and the watch goes on once it answers again (it ended at
/// the first failed round before).
#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_outlasts_a_cluster_that_stops_answering_for_a_while() {
    let (kafka, bootstrap) = billing_cluster().await;
    let kafka = std::sync::Arc::new(kafka);
    let outage = {
        let kafka = kafka.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for id in 1..=3 {
                kafka.broker_down(id).unwrap();
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
            for id in 1..=3 {
                kafka.broker_up(id).unwrap();
            }
        })
    };
    let (code, out, err) = cli(&[
        "lag",
        "--bootstrap",
        &bootstrap,
        "--group",
        "billing",
        "--watch",
        "300ms",
        "--iterations",
        "12",
        "--json",
    ])
    .await;
    outage.await.unwrap();
    let rounds: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed = err.matches("lag not read").count();
    assert!(
        failed >= 1,
        "a round failed while the brokers were down: {err}"
    );
    assert_eq!(
        rounds.len() + failed,
        12,
        "every round reported or warned: {err}"
    );
    let last = rounds.last().expect("rounds after the outage");
    assert_eq!(last["groups"][0]["total_lag"], 20, "{last}");
    assert_ne!(code, 3, "{err}");
}
