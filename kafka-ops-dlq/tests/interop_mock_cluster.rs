//! Dead-letter topics other tools filled — Spring Kafka, Kafka Connect, Kafka Streams, Karafka
//! — inspected and replayed on librdkafka's mock cluster; a damaged record gives a partial
//! model, never a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::dead_letter::headers;
use kafka_ops_core::dead_letter::headers::Format;
use kafka_ops_core::testkit::{MockKafka, TestRecord};
use kafka_ops_dlq::inspect::inspect;
use kafka_ops_dlq::{Replay, Selection};

fn spring(partition: i32, offset: i64) -> TestRecord {
    TestRecord::keyed("spring-key", "spring-value")
        .header("traceparent", b"00-spring".to_vec())
        .header("kafka_dlt-original-topic", b"payments".to_vec())
        .header(
            "kafka_dlt-original-partition",
            partition.to_be_bytes().to_vec(),
        )
        .header("kafka_dlt-original-offset", offset.to_be_bytes().to_vec())
        .header(
            "kafka_dlt-original-consumer-group",
            b"payments-svc".to_vec(),
        )
        .header(
            "kafka_dlt-exception-fqcn",
            b"java.lang.NumberFormatException".to_vec(),
        )
        .header(
            "kafka_dlt-exception-message",
            b"For input string: \"x1\"".to_vec(),
        )
}

fn connect() -> TestRecord {
    TestRecord::keyed("connect-key", "connect-value")
        .header("traceparent", b"00-connect".to_vec())
        .header("__connect.errors.topic", b"payments".to_vec())
        .header("__connect.errors.partition", b"0".to_vec())
        .header("__connect.errors.offset", b"17".to_vec())
        .header("__connect.errors.connector.name", b"jdbc-sink".to_vec())
        .header("__connect.errors.task.id", b"0".to_vec())
        .header("__connect.errors.stage", b"VALUE_CONVERTER".to_vec())
        .header(
            "__connect.errors.exception.class.name",
            b"org.apache.kafka.connect.errors.DataException".to_vec(),
        )
        .header(
            "__connect.errors.exception.message",
            b"Converting byte[] to Kafka Connect data failed".to_vec(),
        )
}

fn streams() -> TestRecord {
    TestRecord::keyed("streams-key", "streams-value")
        .header("traceparent", b"00-streams".to_vec())
        .header("__streams.errors.topic", b"payments".to_vec())
        .header("__streams.errors.partition", b"1".to_vec())
        .header("__streams.errors.offset", b"5".to_vec())
        .header(
            "__streams.errors.exception",
            b"org.apache.kafka.common.errors.SerializationException".to_vec(),
        )
        .header(
            "__streams.errors.message",
            b"Size of data received is not 8".to_vec(),
        )
}

fn karafka() -> TestRecord {
    TestRecord::keyed("karafka-key", "karafka-value")
        .header("traceparent", b"00-karafka".to_vec())
        .header("source_topic", b"payments".to_vec())
        .header("source_partition", b"0".to_vec())
        .header("source_offset", b"3".to_vec())
        .header("source_consumer_group", b"payments-rb".to_vec())
}

/// Spring headers with a 3-byte partition and a message that is not UTF-8.
fn damaged() -> TestRecord {
    TestRecord::keyed("damaged-key", "damaged-value")
        .header("kafka_dlt-original-topic", b"payments".to_vec())
        .header("kafka_dlt-original-partition", vec![0, 0, 1])
        .header("kafka_dlt-original-offset", 8_i64.to_be_bytes().to_vec())
        .header("kafka_dlt-exception-message", vec![0xff, 0xfe, b'!'])
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_dead_letters_are_inspected_and_replayed_home() {
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("payments", 2).unwrap();
    kafka.create_topic("mixed.dlq", 1).unwrap();
    kafka
        .produce(
            "mixed.dlq",
            [spring(1, 42), connect(), streams(), karafka(), damaged()],
        )
        .await
        .unwrap();

    let found = inspect(&kafka.client_config(), "mixed.dlq", 5)
        .await
        .unwrap();
    assert_eq!(found.read, 5);
    let formats: Vec<Option<Format>> = found.sample.iter().map(|(_, info)| info.format).collect();
    assert_eq!(
        formats,
        [
            Some(Format::Spring),
            Some(Format::Connect),
            Some(Format::Streams),
            Some(Format::Karafka),
            Some(Format::Spring)
        ]
    );
    let infos: Vec<_> = found.sample.iter().map(|(_, info)| info.clone()).collect();
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.original_partition, i.original_offset))
            .collect::<Vec<_>>(),
        [
            (Some(1), Some(42)),
            (Some(0), Some(17)),
            (Some(1), Some(5)),
            (Some(0), Some(3)),
            (None, Some(8))
        ]
    );
    assert!(
        infos
            .iter()
            .all(|i| i.original_topic.as_deref() == Some("payments"))
    );
    assert_eq!(
        infos[0].error_type.as_deref(),
        Some("java.lang.NumberFormatException")
    );
    assert_eq!(infos[1].group.as_deref(), Some("connect-jdbc-sink"));
    // The damaged record: what could be read, and a list of what could not.
    let problems: Vec<&str> = infos[4]
        .problems
        .iter()
        .map(|p| p.header.as_str())
        .collect();
    assert_eq!(
        problems,
        [
            "kafka_dlt-exception-message",
            "kafka_dlt-original-partition"
        ]
    );
    assert_eq!(infos[4].error_message.as_deref(), Some("\u{fffd}\u{fffd}!"));
    // Patterns are grouped by the exception type where there is no kafka-ops class.
    assert!(
        found
            .patterns
            .iter()
            .any(|p| p.error_type.as_deref()
                == Some("org.apache.kafka.connect.errors.DataException"))
    );

    let report = Replay::new("mixed.dlq", "foreign")
        .select(Selection {
            original_topic: Some("payments".into()),
            ..Selection::default()
        })
        .run(&kafka.client_config())
        .await
        .unwrap();
    assert_eq!(report.replayed, 5);
    let mut home = kafka.read_all("payments").await.unwrap();
    home.sort_by_key(|r| r.key().map(<[u8]>::to_vec));
    let placed: Vec<(String, i32)> = home
        .iter()
        .map(|r| (r.key_str().unwrap().unwrap().to_string(), r.partition))
        .collect();
    assert_eq!(placed.len(), 5);
    // Original partitions kept; the damaged one (partition unreadable) goes by key.
    for (key, partition) in &placed {
        match key.as_str() {
            "spring-key" | "streams-key" => assert_eq!(*partition, 1),
            "connect-key" | "karafka-key" => assert_eq!(*partition, 0),
            _ => {}
        }
    }
    for record in &home {
        let names: Vec<&str> = record.headers.iter().map(|h| h.key.as_ref()).collect();
        assert!(
            names.iter().all(|n| !n.starts_with("kafka_dlt-")
                && !n.starts_with("__connect.errors.")
                && !n.starts_with("__streams.errors.")
                && !n.starts_with("source_")),
            "foreign provenance stripped: {names:?}"
        );
        assert!(names.contains(&headers::lineage::REPLAY_ID));
        if record.key_str().unwrap() != Some("damaged-key") {
            assert!(
                names.contains(&"traceparent"),
                "application headers kept: {names:?}"
            );
        }
    }
}
