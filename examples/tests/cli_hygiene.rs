//! `kafka-ops hygiene` end to end on the real cluster (in-process, and the built binary for the
//! exit code), and its refusal of bad arguments and an unreachable cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::Duration;

use kafka_ops_core::testkit::{RealKafka, Subscriber, TestRecord, unique_name};
use kafka_ops_core::{Offset, Timestamp, TopicPartition};

mod support;
use support::{cli, example_binary};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_millis() -> i64 {
    Timestamp::from_system_time(std::time::SystemTime::now()).as_millis()
}

/// A topic with 4 records two days old and a 2-record dead-letter topic; `stale` committed at
/// the end (inactive, safe to delete), `live` has a member and no commit.
async fn fixture(kafka: &RealKafka) -> (String, String, String, String, Subscriber) {
    let topic = unique_name("invoices");
    let dlq = format!("{topic}.dlq");
    let stale = unique_name("invoice_archiver_group");
    let live = unique_name("invoice_reader_group");
    kafka.create_topic(&topic, 1).await.unwrap();
    kafka.create_topic(&dlq, 1).await.unwrap();
    let base = now_millis() - 2 * DAY_MS;
    let old = (0..4).map(|i| {
        TestRecord::value(format!("i{i}"))
            .to_partition(0)
            .at(base + i)
    });
    kafka.produce(&topic, old).await.unwrap();
    let letters = (0..2).map(|i| TestRecord::value(format!("d{i}")).to_partition(0));
    kafka.produce(&dlq, letters).await.unwrap();
    kafka
        .commit(
            &stale,
            &[(
                TopicPartition::new(topic.as_str(), 0),
                Offset::new(4).unwrap(),
            )],
        )
        .await
        .unwrap();
    let member = Subscriber::join(&kafka.consumer_config(&live), &topic).unwrap();
    member.wait_assigned(Duration::from_secs(30)).unwrap();
    (topic, dlq, stale, live, member)
}

#[tokio::test(flavor = "multi_thread")]
async fn hygiene_reports_groups_topics_and_leaders_as_json_and_table() {
    let kafka = RealKafka::shared().await.unwrap();
    let (topic, dlq, stale, live, member) = fixture(&kafka).await;
    let args = [
        "hygiene",
        "--bootstrap",
        kafka.bootstrap(),
        "--inactive-after",
        "1day",
        "--idle-after",
        "1day",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (code, out, err) = cli(&json_args).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let group = |name: &str| {
        json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
    };
    let stale_json = group(&stale);
    assert_eq!(stale_json["inactive"], true);
    assert_eq!(stale_json["safe_to_delete"], true);
    assert_eq!(stale_json["members"], 0);
    assert_eq!(stale_json["total_lag"], 0);
    assert_eq!(stale_json["partitions"][0]["committed"], 4);
    let live_json = group(&live);
    assert_eq!(live_json["inactive"], false);
    assert_eq!(live_json["safe_to_delete"], false);
    assert_eq!(live_json["members"], 1);
    let topic_json = |name: &str| {
        json["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(topic_json(&topic)["idle"], true);
    assert_eq!(topic_json(&topic)["records"], 4);
    assert_eq!(topic_json(&dlq)["idle"], false);
    assert_eq!(topic_json(&dlq)["dead_letter_depth"], 2);
    let brokers: Vec<i64> = json["leadership"]["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["broker"].as_i64().unwrap())
        .collect();
    assert_eq!(brokers, [1, 2, 3]);
    assert_ne!(json["severity"], "info");

    // The table: one row per group and topic, the leaders per broker, and a summary.
    let (code, out, err) = cli(&args).await;
    assert_eq!(code, 0, "{err}");
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // GROUP STATE MEMBERS COMMITTED LAG LAST-CONSUMED INACTIVE SAFE-TO-DELETE REASON
    let stale_row = row(&stale);
    assert_eq!(stale_row[..5], [&stale, "Empty", "0", "1/1", "0"]);
    assert!(stale_row[5].starts_with("2d"), "{stale_row:?}");
    assert_eq!(stale_row[6..9], ["ago", "yes", "yes"]);
    assert_eq!(row(&live)[..5], [&live, "Stable", "1", "0/1", "0"]);
    assert_eq!(row(&live)[6..9], ["no", "no", "1"]);
    // TOPIC PARTITIONS RECORDS NEWEST-RECORD IDLE DLQ-DEPTH
    let dlq_row = row(&dlq);
    assert_eq!(dlq_row[1..3], ["1", "2"]);
    assert_eq!(dlq_row[4..], ["ago", "no", "2"]);
    let topic_row = row(&topic);
    assert_eq!(topic_row[1..3], ["1", "4"]);
    assert!(topic_row[3].starts_with("2d"), "{topic_row:?}");
    assert_eq!(topic_row[4..], ["ago", "yes", "-"]);
    assert!(out.lines().any(|l| l.starts_with("BROKER")), "{out}");
    assert!(out.contains("leader skew: "), "{out}");
    assert!(
        out.contains("hygiene: warning") || out.contains("hygiene: critical"),
        "{out}"
    );

    // --fail-on warning: the built binary exits with the severity its own summary names (others'
    // tests share the cluster, so it is read from the same run); our inactive group makes it at
    // least a warning.
    let output = Command::new(example_binary("kafka-ops"))
        .args(args)
        .args(["--fail-on", "warning"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    let summary = printed
        .lines()
        .find(|l| l.starts_with("hygiene: "))
        .unwrap_or_else(|| panic!("no summary: {printed}"));
    let expected = if summary.starts_with("hygiene: critical") {
        2
    } else {
        assert!(summary.starts_with("hygiene: warning"), "{summary}");
        1
    };
    assert_eq!(
        output.status.code(),
        Some(expected),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(member);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_and_an_unreachable_cluster_are_errors() {
    let (code, _, err) = cli(&["hygiene", "--bootstrap", "x:1", "--idle-after", "soon"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("--idle-after"), "{err}");
    let port = kafka_ops_core::testkit::free_port().unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let (code, _, err) = cli(&["hygiene", "--bootstrap", &bootstrap, "--timeout", "2s"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach the cluster"), "{err}");
}
