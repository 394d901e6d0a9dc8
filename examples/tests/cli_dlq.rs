//! `kafka-ops dlq` end to end on the mock cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::dead_letter::{DeadLetterSink, Envelope};
use kafka_ops_core::handler::HandlerError;
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::testkit::{MockKafka, unique_name};
use kafka_ops_core::{Offset, Record};

mod support;
use support::cli;

/// 20 dead letters from `orders` (3 partitions): 15 "amount N is negative" (permanent), 5
/// timeouts (transient).
async fn dead_letters(kafka: &MockKafka) {
    kafka.create_topic("orders", 3).unwrap();
    kafka.create_topic("orders.dlq", 3).unwrap();
    let sink = KafkaDeadLetterSink::new(&kafka.client_config()).unwrap();
    let envelope = Envelope::new("billing", "billing-1");
    for i in 0..20_i64 {
        let record = Record::new("orders", (i % 3) as i32, Offset::new(i).unwrap())
            .with_key(format!("order-{i}").into_bytes())
            .with_value(b"{}".to_vec());
        let error = if i < 15 {
            HandlerError::permanent(std::io::Error::other(format!("amount {i} is negative")))
        } else {
            HandlerError::transient(std::io::Error::other(format!("timeout after {i} ms")))
        };
        let letter = envelope.build(&record, &error, Some(3)).unwrap();
        sink.send(&letter).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_replay_archive_purge() {
    let kafka = MockKafka::start(1).unwrap();
    dead_letters(&kafka).await;
    let b = kafka.bootstrap().to_string();
    let base = |args: &[&str]| {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--bootstrap", &b, "-t", "orders.dlq"]);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs).await
    };

    // inspect: depth, patterns, sample.
    let (code, out, err) = run(base(&["inspect"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("orders.dlq holds 20 dead letters"), "{out}");
    assert!(
        out.contains("ERROR PATTERNS") && out.contains("amount # is negative"),
        "{out}"
    );
    assert!(
        out.contains("timeout after # ms") && out.contains("orders@"),
        "{out}"
    );
    let (code, out, err) = run(base(&["inspect", "--json", "--sample", "3"])).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["depth"], 20);
    assert_eq!(json["sample"].as_array().unwrap().len(), 3);
    assert_eq!(json["patterns"][0]["count"], 15);

    // replay: a dry run lists and writes nothing.
    let (code, out, err) = run(base(&[
        "replay",
        "--id",
        "r1",
        "--class",
        "permanent",
        "--dry-run",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dry run: nothing written") && out.contains("would write 15"),
        "{out}"
    );
    assert!(kafka.read_all("orders").await.unwrap().is_empty());

    // Not allow-listed: refused with the reason.
    let (code, _, err) = run(base(&["replay", "--id", "r2", "--to", "elsewhere"])).await;
    assert_eq!(code, 3);
    assert!(err.contains("allow-listed"), "{err}");

    // The replay itself, with progress on stderr; then again: nothing to do.
    let (code, out, err) = run(base(&[
        "replay",
        "--id",
        "r1",
        "--class",
        "permanent",
        "--rate",
        "1000",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote 15"), "{out}");
    assert!(err.contains("ETA") && err.contains("100%"), "{err}");
    assert_eq!(kafka.read_all("orders").await.unwrap().len(), 15);
    let (code, out, _) = run(base(&["replay", "--id", "r1", "--class", "permanent"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("already finished"), "{out}");
    let (code, out, _) = run(base(&["replay", "--id", "r3", "--since", "1h", "--json"])).await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["replayed"], 20);

    // archive, then purge (which the mock cluster cannot do: refused, nothing deleted).
    let file = std::env::temp_dir().join(format!("{}.jsonl", unique_name("dlq-archive")));
    let file_arg = file.display().to_string();
    let (code, out, err) = run(base(&["archive", "-o", &file_arg])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("archived 20 records"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 20);
    let (code, _, err) = run(base(&["archive", "-o", &file_arg])).await;
    assert_eq!(code, 3);
    assert!(err.contains("never overwritten"), "{err}");
    std::fs::remove_file(&file).unwrap();

    let (code, _, err) = run(base(&["purge", "--archive", &file_arg, "--confirm", "yes"])).await;
    assert_eq!(code, 3);
    assert!(err.contains("confirm by naming the topic"), "{err}");
    let (code, _, err) = run(base(&[
        "purge",
        "--archive",
        &file_arg,
        "--confirm",
        "orders.dlq",
    ]))
    .await;
    assert_eq!(code, 3);
    assert!(
        err.contains("not supported") && err.contains("nothing was deleted"),
        "{err}"
    );
    assert_eq!(kafka.read_all("orders.dlq").await.unwrap().len(), 20);
    std::fs::remove_file(&file).unwrap();
}
