//! Dead letters written by the real foreign systems on a real Apache Kafka cluster — Spring
//! Kafka's `DeadLetterPublishingRecoverer` (both its error-handler and `@RetryableTopic` paths),
//! a Kafka Connect sink with `errors.tolerance=all`, and Kafka Streams' KIP-1034 dead-letter
//! queue (`testing/fixtures`) — inspected for their error class and message, then replayed home
//! with their exact key, value and original headers.
//!
//! Each source topic gets two good records and two poison ones (one with a null key and a
//! binary header); each system dead-letters exactly the poison ones.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::dead_letter::headers;
use kafka_ops_core::dead_letter::headers::{DeadLetterInfo, Format};
use kafka_ops_core::testkit::{RealKafka, TestRecord, TopicSpec, unique_name};
use kafka_ops_core::{Header, Headers, OwnedRecord};
use kafka_ops_dlq::Replay;
use kafka_ops_dlq::inspect::inspect;

/// The source records: offsets 1 and 3 are poison.
fn source_records() -> Vec<TestRecord> {
    vec![
        TestRecord::keyed("k1", r#"{"n":1}"#)
            .header("trace-id", b"good-1".to_vec())
            .to_partition(0),
        TestRecord::keyed("k2", "poison record 2")
            .header("trace-id", b"abc".to_vec())
            .header("tenant", b"acme".to_vec())
            .to_partition(0),
        TestRecord::keyed("k3", r#"{"n":3}"#)
            .header("trace-id", b"good-3".to_vec())
            .to_partition(0),
        TestRecord {
            key: None,
            value: Some(b"poison record 4".to_vec()),
            headers: vec![
                ("trace-id".into(), Some(b"abc".to_vec())),
                ("bin".into(), Some(vec![0xff, 0xfe, 0x01])),
            ],
            partition: Some(0),
            timestamp: None,
        },
    ]
}

/// The headers a record carried at the source.
fn source_headers(offset: i64) -> Vec<(String, Option<Vec<u8>>)> {
    let h = |k: &str, v: &[u8]| (k.to_string(), Some(v.to_vec()));
    match offset {
        1 => vec![h("trace-id", b"abc"), h("tenant", b"acme")],
        3 => vec![h("trace-id", b"abc"), h("bin", &[0xff, 0xfe, 0x01])],
        _ => unreachable!(),
    }
}

fn pairs(headers: &Headers<'_>) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .map(|Header { key, value }| (key.to_string(), value.as_deref().map(<[u8]>::to_vec)))
        .collect()
}

struct Expected {
    format: Format,
    error_type: &'static str,
    message_contains: &'static str,
}

/// Creates the source topic, runs `program` with `args` to fill `dlt`, then checks what
/// `inspect` reads and what `replay` puts back.
async fn dead_letter_then_replay(
    program: &str,
    args: &[&str],
    source: &str,
    dlt: &str,
    expected: &Expected,
) -> Vec<DeadLetterInfo> {
    let kafka = RealKafka::shared().await.unwrap();
    kafka
        .create_topic_with(source, &TopicSpec::replicated(1))
        .await
        .unwrap();
    kafka.produce(source, source_records()).await.unwrap();
    let mut all = vec![
        "--source-topic",
        source,
        "--dlt-topic",
        dlt,
        "--expect",
        "2",
        "--timeout-seconds",
        "90",
    ];
    all.extend_from_slice(args);
    let out = kafka.run_fixture(program, &all).await.unwrap();
    assert_eq!(
        out.get("dead-letters").map(String::as_str),
        Some("2"),
        "{out:?}"
    );

    let found = inspect(&kafka.client_config(), dlt, 10).await.unwrap();
    assert_eq!(found.read, 2);
    let infos: Vec<DeadLetterInfo> = found.sample.iter().map(|(_, i)| i.clone()).collect();
    for ((record, info), offset) in found.sample.iter().zip([1, 3]) {
        assert_eq!(info.format, Some(expected.format), "{info:?}");
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        assert_eq!(info.original_topic.as_deref(), Some(source));
        assert_eq!(info.original_partition, Some(0));
        assert_eq!(info.original_offset, Some(offset));
        assert_eq!(info.error_type.as_deref(), Some(expected.error_type));
        let message = info.error_message.clone().unwrap_or_default();
        assert!(message.contains(expected.message_contains), "{message:?}");
        // The dead letter keeps the key and value bytes and the source's headers first.
        let key = (offset == 1).then(|| b"k2".to_vec());
        assert_eq!(record.key().map(<[u8]>::to_vec), key);
        assert_eq!(
            record.value(),
            Some(format!("poison record {}", offset + 1).as_bytes())
        );
        assert_eq!(pairs(&record.headers)[..2], source_headers(offset)[..]);
    }
    // Patterns name the exception class where there is no kafka-ops error class.
    assert!(
        found
            .patterns
            .iter()
            .any(|p| p.error_type.as_deref() == Some(expected.error_type) && p.count == 2),
        "{:?}",
        found.patterns
    );

    let report = Replay::new(dlt, unique_name("fix"))
        .run(&kafka.client_config())
        .await
        .unwrap();
    assert_eq!(report.replayed, 2, "{report:?}");
    let home: Vec<OwnedRecord> = kafka.read_all(source).await.unwrap();
    assert_eq!(home.len(), 6);
    for (record, offset) in home[4..].iter().zip([1, 3]) {
        let original = &home[usize::try_from(offset).unwrap()];
        assert_eq!(record.key(), original.key());
        assert_eq!(record.value(), original.value());
        let mut kept = record.headers.clone();
        kept.remove_where(|k| k.starts_with("kafka-ops.replay."));
        assert_eq!(
            pairs(&kept),
            source_headers(offset),
            "only the source headers are back"
        );
        assert!(record.headers.get(headers::lineage::REPLAY_ID).is_some());
    }
    infos
}

#[tokio::test(flavor = "multi_thread")]
async fn spring_dead_letter_publishing_recoverer() {
    let source = unique_name("payments");
    let dlt = format!("{source}.DLT");
    let group = unique_name("payments-svc");
    let infos = dead_letter_then_replay(
        "spring",
        &["--group", &group],
        &source,
        &dlt,
        &Expected {
            format: Format::Spring,
            error_type: "org.springframework.kafka.listener.ListenerExecutionFailedException",
            message_contains: "poison record: poison record",
        },
    )
    .await;
    for info in &infos {
        assert_eq!(info.group.as_deref(), Some(group.as_str()));
        assert_eq!(info.cause_chain, ["java.lang.IllegalArgumentException"]);
        assert_eq!(info.original_timestamp_type.as_deref(), Some("create"));
        assert!(info.original_timestamp.is_some());
        assert!(info.stacktrace.as_deref().unwrap().contains("Caused by:"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spring_retryable_topic() {
    let source = unique_name("invoices");
    let dlt = format!("{source}-dlt");
    let group = unique_name("invoices-svc");
    let infos = dead_letter_then_replay(
        "spring",
        &["--mode", "retryable-topic", "--group", &group],
        &source,
        &dlt,
        &Expected {
            format: Format::Spring,
            error_type: "org.springframework.kafka.listener.ListenerExecutionFailedException",
            message_contains: "poison record: poison record",
        },
    )
    .await;
    for info in &infos {
        // kafka_original-* names, the kafka_dlt- group header, and the retry hop's binary
        // attempts and 6-byte back-off time (the last of the repeated ones counts).
        assert_eq!(info.group.as_deref(), Some(group.as_str()));
        assert_eq!(info.attempts, Some(3));
        assert!(info.last_failure.is_some());
        assert_eq!(info.original_timestamp_type.as_deref(), Some("create"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_connect_sink_with_a_dead_letter_queue() {
    let source = unique_name("cdc.orders");
    let dlt = format!("{source}.dlq");
    let connector = unique_name("orders-sink");
    let infos = dead_letter_then_replay(
        "connect",
        &["--connector-name", &connector],
        &source,
        &dlt,
        &Expected {
            format: Format::Connect,
            error_type: "org.apache.kafka.connect.errors.DataException",
            message_contains: "Converting byte[] to Kafka Connect data failed",
        },
    )
    .await;
    for info in &infos {
        assert_eq!(info.group, Some(format!("connect-{connector}")));
        assert_eq!(info.instance_id, Some(format!("{connector}-0")));
        assert_eq!(
            info.cause_chain,
            [
                "VALUE_CONVERTER",
                "org.apache.kafka.connect.json.JsonConverter"
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_streams_dead_letter_queue_for_deserialization_and_processing() {
    for (mode, error_type, message) in [
        (
            "deserialization",
            "org.apache.kafka.common.errors.SerializationException",
            "Unrecognized token 'poison'",
        ),
        (
            "processing",
            "java.lang.IllegalArgumentException",
            "poison record: poison record",
        ),
    ] {
        let source = unique_name("clicks");
        let dlt = format!("{source}.dlq");
        let infos = dead_letter_then_replay(
            "streams",
            &["--mode", mode],
            &source,
            &dlt,
            &Expected {
                format: Format::Streams,
                error_type,
                message_contains: message,
            },
        )
        .await;
        assert!(infos.iter().all(|i| i.stacktrace.is_some()));
    }
}
