//! `kafka-ops offsets` end to end on the mock cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, TopicPartition};

mod support;
use support::{cli, example_binary};

async fn committed(kafka: &MockKafka, group: &str, topic: &str) -> Vec<Option<i64>> {
    kafka.committed(group, topic, 2).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_export_import_and_wait_drain() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("orders");
    kafka.create_topic(&topic, 2).unwrap();
    for p in 0..2 {
        kafka
            .produce(
                &topic,
                (0..10).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(p)),
            )
            .await
            .unwrap();
    }
    let group = unique_name("billing");
    let at = |o| Offset::new(o).unwrap();
    kafka
        .commit(
            &group,
            &[
                (TopicPartition::new(topic.as_str(), 0), at(4)),
                (TopicPartition::new(topic.as_str(), 1), at(10)),
            ],
        )
        .await
        .unwrap();
    let b = kafka.bootstrap().to_string();

    // A dry run shows the plan and changes nothing.
    let (code, out, err) = cli(&[
        "offsets",
        "reset",
        "--bootstrap",
        &b,
        "-g",
        &group,
        "-t",
        &topic,
        "--to",
        "shift:-2",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("BEFORE") && out.contains("dry run: nothing changed"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][2..5], ["0", "4", "2"], "{out}");
    assert_eq!(rows[1][2..5], ["1", "10", "8"], "{out}");
    assert_eq!(
        committed(&kafka, &group, &topic).await,
        vec![Some(4), Some(10)]
    );

    // Executing needs to know the group is idle; the mock cluster cannot say.
    let (code, _, err) = cli(&[
        "offsets",
        "reset",
        "--bootstrap",
        &b,
        "-g",
        &group,
        "-t",
        &topic,
        "--to",
        "shift:-2",
        "--execute",
    ])
    .await;
    assert_eq!(code, 3);
    assert!(err.contains("cannot tell whether group"), "{err}");
    let (code, out, err) = cli(&[
        "offsets",
        "reset",
        "--bootstrap",
        &b,
        "-g",
        &group,
        "--partition",
        &format!("{topic}:1"),
        "--to",
        "earliest",
        "--execute",
        "--allow-unverified-membership",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("reset 1 partitions of {group}")),
        "{out}"
    );
    assert_eq!(
        committed(&kafka, &group, &topic).await,
        vec![Some(4), Some(0)]
    );

    // Backup, then restore into a new group.
    let file = std::env::temp_dir().join(format!("{}.json", unique_name("offsets")));
    let (code, _, err) = cli(&[
        "offsets",
        "export",
        "--bootstrap",
        &b,
        "-g",
        &group,
        "--output",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 2 offsets"), "{err}");
    let copy = unique_name("billing-copy");
    let (code, out, err) = cli(&[
        "offsets",
        "import",
        "--bootstrap",
        &b,
        "--input",
        file.to_str().unwrap(),
        "-g",
        &copy,
        "--execute",
        "--allow-unverified-membership",
        "--json",
    ])
    .await;
    std::fs::remove_file(&file).ok();
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["executed"], true);
    assert_eq!(
        committed(&kafka, &copy, &topic).await,
        vec![Some(4), Some(0)]
    );

    // 16 records behind and nobody consuming: the wait gives up with exit 1.
    let (code, out, err) = cli(&[
        "offsets",
        "wait-drain",
        "--bootstrap",
        &b,
        "-g",
        &copy,
        "--wait",
        "1s",
        "--interval",
        "300ms",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("lag 16"), "{out}");
    assert!(err.contains("still lags by 16"), "{err}");
    // Each check is printed as it happens, not once the wait is over.
    let mut waiting = Command::new(example_binary("kafka-ops"))
        .args(["offsets", "wait-drain", "--bootstrap", &b, "-g", &copy])
        .args(["--wait", "120s", "--interval", "300ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = waiting.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    waiting.kill().unwrap();
    waiting.wait().unwrap();
    let first = first.expect("a progress line while the wait goes on");
    assert!(first.contains("lag 16"), "{first}");
    // Caught up: done at once.
    let (code, out, _) = cli(&[
        "offsets",
        "reset",
        "--bootstrap",
        &b,
        "-g",
        &copy,
        "-t",
        &topic,
        "--to",
        "latest",
        "--execute",
        "--allow-unverified-membership",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&[
        "offsets",
        "wait-drain",
        "--bootstrap",
        &b,
        "-g",
        &copy,
        "--wait",
        "5s",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("drained after"), "{out}");
}
