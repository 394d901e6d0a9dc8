//! `kafka-ops exporter` as a process: scraped while a group commits on the real cluster, pointed
//! at an address where no broker listens, and stopped with SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::Duration;

use kafka_ops_core::testkit::{RealKafka, TestRecord, free_port, unique_name};
use kafka_ops_core::{Offset, TopicPartition};

mod support;
use support::example_binary;
use support::exporter::{Exporter, value};

fn partition_series(name: &str, group: &str, topic: &str, partition: i32) -> String {
    format!(r#"{name}{{group="{group}",topic="{topic}",partition="{partition}"}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn scrapes_follow_a_group_as_it_commits_and_sigterm_stops_it_named_or_not() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("exported");
    let group = unique_name("exported_group");
    let dlq = format!("{topic}.dlq");
    kafka.create_topic(&topic, 2).await.unwrap();
    kafka.create_topic(&dlq, 1).await.unwrap();
    let produce = |partition: i32, n: usize| {
        (0..n).map(move |i| TestRecord::value(format!("r{i}")).to_partition(partition))
    };
    kafka.produce(&topic, produce(0, 10)).await.unwrap();
    kafka.produce(&topic, produce(1, 4)).await.unwrap();
    kafka.produce(&dlq, produce(0, 2)).await.unwrap();
    let p0 = TopicPartition::new(topic.as_str(), 0);
    let p1 = TopicPartition::new(topic.as_str(), 1);
    kafka
        .commit(&group, &[(p0.clone(), Offset::new(3).unwrap())])
        .await
        .unwrap();

    let exporter = Exporter::start(&[
        "--bootstrap",
        kafka.bootstrap(),
        "--group",
        &group,
        "--dlq-topic",
        &dlq,
        "--dlq-suffix",
        "",
    ]);
    assert_eq!(exporter.get("/livez").await.0, 200);
    let current = |p| partition_series("kafka_consumergroup_current_offset", &group, &topic, p);
    let lag = |p| partition_series("kafka_consumergroup_lag", &group, &topic, p);
    let latest =
        |p: i32| format!(r#"kafka_partition_latest_offset{{topic="{topic}",partition="{p}"}}"#);
    let sum = format!(r#"kafka_consumergroup_total_lag{{group="{group}"}}"#);

    let text = exporter
        .scrape_until("the first commit", |t| value(t, &current(0)).is_some())
        .await;
    assert_eq!(value(&text, &current(0)), Some(3.0));
    assert_eq!(value(&text, &lag(0)), Some(7.0));
    assert_eq!(value(&text, &latest(0)), Some(10.0));
    // Partition 1 was never committed: its end offset is there, its lag is not.
    assert_eq!(value(&text, &latest(1)), Some(4.0));
    assert_eq!(value(&text, &current(1)), None);
    assert_eq!(value(&text, &lag(1)), None);
    assert_eq!(value(&text, &sum), Some(7.0));
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_dead_letter_depth{{topic="{dlq}"}}"#)
        ),
        Some(2.0)
    );
    assert_eq!(value(&text, "kafka_ops_exporter_up"), Some(1.0));
    assert_eq!(exporter.get("/readyz").await.0, 200);

    // The consumer moves on: more records arrive, it commits further on both partitions.
    kafka.produce(&topic, produce(0, 5)).await.unwrap();
    kafka
        .commit(
            &group,
            &[
                (p0.clone(), Offset::new(12).unwrap()),
                (p1.clone(), Offset::new(4).unwrap()),
            ],
        )
        .await
        .unwrap();
    let text = exporter
        .scrape_until("the second commit", |t| value(t, &current(0)) == Some(12.0))
        .await;
    assert_eq!(value(&text, &lag(0)), Some(3.0));
    assert_eq!(value(&text, &latest(0)), Some(15.0));
    assert_eq!(value(&text, &current(1)), Some(4.0));
    assert_eq!(value(&text, &lag(1)), Some(0.0));
    assert_eq!(value(&text, &sum), Some(3.0));
    // Caught up on partition 1: zero seconds behind, however idle it is.
    assert_eq!(
        value(
            &text,
            &partition_series("kafka_consumergroup_lag_seconds", &group, &topic, 1)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_ops_exporter_group_up{{group="{group}"}}"#)
        ),
        Some(1.0)
    );
    assert!(value(&text, "kafka_ops_exporter_polls_total").unwrap() >= 2.0);

    let status = exporter.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");

    // Without --group, every group the cluster lists is exported, this one among them.
    let all = Exporter::start(&["--bootstrap", kafka.bootstrap(), "--timeout", "20s"]);
    let text = all
        .scrape_until("the group among all", |t| value(t, &current(0)).is_some())
        .await;
    assert_eq!(value(&text, &current(0)), Some(12.0));
    assert_eq!(value(&text, &lag(0)), Some(3.0));
    assert_eq!(value(&text, &sum), Some(3.0));
    assert_eq!(all.terminate().code(), Some(0));
    kafka.delete_topics(&[&topic, &dlq]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn time_lag_comes_from_the_record_when_asked() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("exported_stamped");
    let group = unique_name("exported_stamped_group");
    kafka.create_topic(&topic, 1).await.unwrap();
    // Five records stamped an hour ago, a second apart; the group is at the third.
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    kafka
        .produce(
            &topic,
            (0..5).map(|i| {
                TestRecord::value(format!("r{i}"))
                    .to_partition(0)
                    .at(hour_ago + i * 1_000)
            }),
        )
        .await
        .unwrap();
    kafka
        .commit(
            &group,
            &[(
                TopicPartition::new(topic.as_str(), 0),
                Offset::new(2).unwrap(),
            )],
        )
        .await
        .unwrap();
    let seconds = partition_series("kafka_consumergroup_lag_seconds", &group, &topic, 0);
    let polls = "kafka_ops_exporter_polls_total";

    let stamped = Exporter::start(&[
        "--bootstrap",
        kafka.bootstrap(),
        "--group",
        &group,
        "--time-lag-from-records",
    ]);
    let text = stamped
        .scrape_until("a time lag", |t| value(t, &seconds).is_some())
        .await;
    // The record at offset 2 is stamped an hour ago plus 2 s: 3 598 s behind, plus the time
    // the test took so far.
    let behind = value(&text, &seconds).unwrap();
    assert!((3_598.0..3_598.0 + 60.0).contains(&behind), "{behind}");
    assert_eq!(stamped.terminate().code(), Some(0));

    // Without the flag the end offset never moved while it watched: nothing to interpolate.
    let interpolated = Exporter::start(&["--bootstrap", kafka.bootstrap(), "--group", &group]);
    let text = interpolated
        .scrape_until("three polls", |t| value(t, polls).is_some_and(|n| n >= 3.0))
        .await;
    assert_eq!(
        value(
            &text,
            &partition_series("kafka_consumergroup_lag", &group, &topic, 0)
        ),
        Some(3.0)
    );
    assert_eq!(value(&text, &seconds), None);
    assert_eq!(interpolated.terminate().code(), Some(0));
    kafka.delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_is_served_stale_and_not_ready() {
    let port = free_port().unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let exporter = Exporter::start(&["--bootstrap", &bootstrap, "--timeout", "1s"]);
    // Alive, serving, but not ready: no poll has succeeded.
    assert_eq!(exporter.get("/livez").await.0, 200);
    let text = exporter
        .scrape_until("a failed poll", |t| {
            value(t, r#"kafka_ops_exporter_poll_errors_total{stage="lag"}"#)
                .is_some_and(|n| n >= 1.0)
        })
        .await;
    assert_eq!(value(&text, "kafka_ops_exporter_up"), Some(0.0));
    assert_eq!(value(&text, "kafka_ops_exporter_groups"), Some(0.0));
    let (status, body) = exporter.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: no successful poll for"),
        "{body}"
    );
    let before = value(&text, "kafka_ops_exporter_staleness_seconds").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = value(
        &exporter.metrics().await,
        "kafka_ops_exporter_staleness_seconds",
    )
    .unwrap();
    assert!(after >= before + 1.5, "{before} → {after}");
    assert_eq!(exporter.terminate().code(), Some(0));
}

#[test]
fn bad_settings_are_refused_before_serving() {
    let port = free_port().unwrap();
    for (args, message) in [
        (vec!["--interval", "10ms"], "--interval must be at least 1s"),
        (vec!["--window", "1"], "burrow window must hold at least 2"),
        (
            vec!["--history-points", "1"],
            "--history-points must be at least 2",
        ),
    ] {
        let output = Command::new(example_binary("kafka-ops"))
            .args(["exporter", "--bootstrap", &format!("127.0.0.1:{port}")])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
