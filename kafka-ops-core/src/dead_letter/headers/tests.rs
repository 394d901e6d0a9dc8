//! The header codec against every format it reads.
#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

fn provenance() -> Provenance {
    Provenance {
        original_topic: "orders".into(),
        original_partition: 3,
        original_offset: 1_234,
        original_timestamp: Some((Timestamp::from_millis(1_700_000_000_000), "create")),
        group: "billing".into(),
        error_class: ErrorClass::Permanent,
        error_message: "invalid amount".into(),
        cause_chain: vec!["invalid amount".into(), "expected a number".into()],
        attempts: 3,
        first_failure: Timestamp::from_millis(1_700_000_001_000),
        last_failure: Timestamp::from_millis(1_700_000_002_000),
        instance_id: "billing-7f9".into(),
        truncated_value: None,
    }
}

fn expected(p: &Provenance) -> DeadLetterInfo {
    DeadLetterInfo {
        format: Some(Format::KafkaOps(1)),
        original_topic: Some(p.original_topic.clone()),
        original_partition: Some(p.original_partition),
        original_offset: Some(p.original_offset),
        original_timestamp: p.original_timestamp.map(|(t, _)| t),
        original_timestamp_type: p.original_timestamp.map(|(_, k)| k.to_string()),
        group: Some(p.group.clone()),
        error_class: Some(p.error_class),
        error_type: None,
        error_message: Some(p.error_message.clone()),
        cause_chain: p.cause_chain.clone(),
        stacktrace: None,
        attempts: Some(p.attempts),
        first_failure: Some(p.first_failure),
        last_failure: Some(p.last_failure),
        instance_id: Some(p.instance_id.clone()),
        truncated_value_size: p.truncated_value.as_ref().map(|(s, _)| *s),
        value_digest: p.truncated_value.as_ref().map(|(_, d)| d.clone()),
        problems: Vec::new(),
    }
}

#[test]
fn encode_then_parse_gives_the_provenance_back_and_keeps_other_headers() {
    let mut headers = Headers::new();
    headers.set("traceparent", b"00-abc".to_vec());
    encode(&mut headers, &provenance());
    assert_eq!(parse(&headers), expected(&provenance()));
    assert_eq!(headers.get_bytes("traceparent"), Some(&b"00-abc"[..]));
}

#[test]
fn a_second_failure_replaces_the_first_provenance() {
    let mut headers = Headers::new();
    encode(&mut headers, &provenance());
    let mut again = provenance();
    again.error_message = "still invalid".into();
    again.cause_chain.clear();
    encode(&mut headers, &again);
    let prefixed = headers.iter().filter(|h| h.key.starts_with(PREFIX)).count();
    assert_eq!(prefixed, 13, "one of each, nothing piled up");
    assert_eq!(parse(&headers), expected(&again));
}

#[test]
fn spring_headers_with_binary_numbers() {
    let mut headers = Headers::new();
    headers.set("kafka_dlt-original-topic", b"payments".to_vec());
    headers.set("kafka_dlt-original-partition", 7_i32.to_be_bytes().to_vec());
    headers.set("kafka_dlt-original-offset", 99_i64.to_be_bytes().to_vec());
    headers.set(
        "kafka_dlt-original-timestamp",
        1_700_000_000_123_i64.to_be_bytes().to_vec(),
    );
    headers.set("kafka_dlt-original-timestamp-type", b"CreateTime".to_vec());
    headers.set("kafka_dlt-original-consumer-group", b"pay".to_vec());
    headers.set(
        "kafka_dlt-exception-fqcn",
        b"org.springframework.kafka.listener.ListenerExecutionFailedException".to_vec(),
    );
    headers.set(
        "kafka_dlt-exception-cause-fqcn",
        b"java.lang.NumberFormatException".to_vec(),
    );
    headers.set(
        "kafka_dlt-exception-message",
        b"For input string: \"x\"".to_vec(),
    );
    headers.set("kafka_dlt-exception-stacktrace", b"at Foo.bar()".to_vec());
    let info = parse(&headers);
    assert_eq!(info.format, Some(Format::Spring));
    assert_eq!(info.original_topic.as_deref(), Some("payments"));
    assert_eq!(info.original_partition, Some(7));
    assert_eq!(info.original_offset, Some(99));
    assert_eq!(
        info.original_timestamp,
        Some(Timestamp::from_millis(1_700_000_000_123))
    );
    assert_eq!(info.original_timestamp_type.as_deref(), Some("create"));
    assert_eq!(info.group.as_deref(), Some("pay"));
    assert_eq!(
        info.cause_chain,
        vec!["java.lang.NumberFormatException".to_string()]
    );
    assert_eq!(
        info.error_message.as_deref(),
        Some("For input string: \"x\"")
    );
    assert!(info.problems.is_empty());
}

#[test]
fn spring_retryable_topic_headers_as_spring_kafka_4_1_writes_them() {
    // The dead-letter hop of `@RetryableTopic` (attempts 2, back-off 200 ms), as recorded
    // from Spring Kafka 4.1.2: `kafka_original-*` names, the group under its `kafka_dlt-`
    // name, `BigInteger` timestamps of 6 bytes, and the retry headers repeated.
    let mut headers = Headers::new();
    let push = |headers: &mut Headers<'_>, key: &str, value: &[u8]| {
        headers.push(key.to_string(), Some(value.to_vec()));
    };
    push(&mut headers, "trace-id", b"abc");
    push(&mut headers, "kafka_original-topic", b"invoices");
    push(&mut headers, "kafka_original-partition", &[0, 0, 0, 0]);
    push(&mut headers, "kafka_original-offset", &1_i64.to_be_bytes());
    push(
        &mut headers,
        "kafka_original-timestamp",
        &[0, 0, 0x01, 0xa2, 0x34, 0xbc, 0x61, 0xae],
    );
    push(&mut headers, "kafka_original-timestamp-type", b"CreateTime");
    push(
        &mut headers,
        "kafka_dlt-original-consumer-group",
        b"invoices-svc",
    );
    push(
        &mut headers,
        "retry_topic-original-timestamp",
        &[0x01, 0xa2, 0x34, 0xbc, 0x61, 0xae],
    );
    push(&mut headers, "retry_topic-attempts", &[0, 0, 0, 2]);
    push(
        &mut headers,
        "retry_topic-backoff-timestamp",
        &[0x01, 0xa2, 0x34, 0xbc, 0x68, 0x16],
    );
    push(
        &mut headers,
        "kafka_exception-fqcn",
        b"org.springframework.kafka.listener.ListenerExecutionFailedException",
    );
    push(
        &mut headers,
        "kafka_exception-cause-fqcn",
        b"java.lang.IllegalArgumentException",
    );
    push(
        &mut headers,
        "kafka_exception-message",
        b"Listener failed; poison record: x",
    );
    push(&mut headers, "kafka_exception-stacktrace", b"...");
    push(
        &mut headers,
        "retry_topic-original-timestamp",
        &[0x01, 0xa2, 0x34, 0xbc, 0x61, 0xae],
    );
    push(&mut headers, "retry_topic-attempts", &[0, 0, 0, 3]);
    push(
        &mut headers,
        "retry_topic-backoff-timestamp",
        &[0x01, 0xa2, 0x34, 0xbc, 0x69, 0x68],
    );
    let info = parse(&headers);
    assert_eq!(info.format, Some(Format::Spring));
    assert!(info.problems.is_empty(), "{:?}", info.problems);
    assert_eq!(info.original_topic.as_deref(), Some("invoices"));
    assert_eq!(
        (info.original_partition, info.original_offset),
        (Some(0), Some(1))
    );
    assert_eq!(
        info.original_timestamp,
        Some(Timestamp::from_millis(1_796_181_090_734))
    );
    assert_eq!(info.original_timestamp_type.as_deref(), Some("create"));
    assert_eq!(info.group.as_deref(), Some("invoices-svc"));
    assert_eq!(info.attempts, Some(3));
    assert_eq!(
        info.last_failure,
        Some(Timestamp::from_millis(1_796_181_092_712))
    );
    assert_eq!(
        info.error_type.as_deref(),
        Some("org.springframework.kafka.listener.ListenerExecutionFailedException")
    );
    strip_provenance(&mut headers, Format::Spring);
    assert_eq!(
        headers
            .iter()
            .map(|h| h.key.to_string())
            .collect::<Vec<_>>(),
        ["trace-id"]
    );
}

#[test]
fn a_null_streams_message_is_no_problem() {
    let mut headers = Headers::new();
    headers.push("__streams.errors.topic", Some(b"clicks".to_vec()));
    headers.push(
        "__streams.errors.exception",
        Some(b"java.lang.NullPointerException".to_vec()),
    );
    headers.push("__streams.errors.message", None::<Vec<u8>>);
    let info = parse(&headers);
    assert_eq!(info.error_message, None);
    assert!(info.problems.is_empty(), "{:?}", info.problems);
}

#[test]
fn connect_streams_and_karafka_headers() {
    let mut connect = Headers::new();
    for (k, v) in [
        ("__connect.errors.topic", "cdc.orders"),
        ("__connect.errors.partition", "2"),
        ("__connect.errors.offset", "4711"),
        ("__connect.errors.connector.name", "pg-sink"),
        ("__connect.errors.task.id", "0"),
        ("__connect.errors.stage", "VALUE_CONVERTER"),
        (
            "__connect.errors.class.name",
            "io.confluent.connect.avro.AvroConverter",
        ),
        (
            "__connect.errors.exception.class.name",
            "org.apache.kafka.connect.errors.DataException",
        ),
        ("__connect.errors.exception.message", "Unknown magic byte!"),
    ] {
        connect.set(k, v.as_bytes().to_vec());
    }
    let info = parse(&connect);
    assert_eq!(info.format, Some(Format::Connect));
    assert_eq!(
        (
            info.original_topic.as_deref(),
            info.original_partition,
            info.original_offset
        ),
        (Some("cdc.orders"), Some(2), Some(4711))
    );
    assert_eq!(info.group.as_deref(), Some("connect-pg-sink"));
    assert_eq!(info.instance_id.as_deref(), Some("pg-sink-0"));
    assert_eq!(info.error_message.as_deref(), Some("Unknown magic byte!"));
    assert_eq!(info.cause_chain.len(), 2);

    let mut streams = Headers::new();
    for (k, v) in [
        ("__streams.errors.topic", "clicks"),
        ("__streams.errors.partition", "0"),
        ("__streams.errors.offset", "12"),
        (
            "__streams.errors.exception",
            "org.apache.kafka.common.errors.SerializationException",
        ),
        ("__streams.errors.message", "Size of data received is not 8"),
    ] {
        streams.set(k, v.as_bytes().to_vec());
    }
    let info = parse(&streams);
    assert_eq!(info.format, Some(Format::Streams));
    assert_eq!(info.original_offset, Some(12));
    assert_eq!(
        info.error_type.as_deref(),
        Some("org.apache.kafka.common.errors.SerializationException")
    );

    let mut karafka = Headers::new();
    for (k, v) in [
        ("source_topic", "events"),
        ("source_partition", "5"),
        ("source_offset", "300"),
        ("source_consumer_group", "app"),
        ("source_attempts", "4"),
    ] {
        karafka.set(k, v.as_bytes().to_vec());
    }
    let info = parse(&karafka);
    assert_eq!(info.format, Some(Format::Karafka));
    assert_eq!(info.original_partition, Some(5));
    assert_eq!(info.attempts, Some(4));
    assert!(info.problems.is_empty());
}

#[test]
fn malformed_headers_give_a_partial_model_and_a_list_of_problems() {
    let mut headers = Headers::new();
    headers.set(names::VERSION, b"9".to_vec());
    headers.set(names::ORIGINAL_TOPIC, vec![b'o', 0xff, b'k']);
    headers.set(names::ORIGINAL_PARTITION, b"three".to_vec());
    headers.set(names::ORIGINAL_OFFSET, b"99999999999".to_vec());
    headers.push(names::GROUP, None::<Vec<u8>>);
    headers.set(names::ERROR_CLASS, b"cosmic".to_vec());
    headers.set(names::CAUSE_CHAIN, b"not json".to_vec());
    headers.set(names::ATTEMPTS, b"-1".to_vec());
    let info = parse(&headers);
    assert_eq!(info.format, Some(Format::KafkaOps(9)));
    assert_eq!(info.original_topic.as_deref(), Some("o\u{fffd}k"));
    assert_eq!(info.original_partition, None);
    assert_eq!(info.original_offset, Some(99_999_999_999));
    assert_eq!(info.group, None);
    assert_eq!(info.error_class, None);
    assert_eq!(info.cause_chain, vec!["not json".to_string()]);
    assert_eq!(info.attempts, None);
    let named: Vec<&str> = info.problems.iter().map(|p| p.header.as_str()).collect();
    assert_eq!(
        named,
        [
            names::VERSION,
            names::ERROR_CLASS,
            names::CAUSE_CHAIN,
            names::ORIGINAL_TOPIC,
            names::ORIGINAL_PARTITION,
            names::GROUP,
            names::ATTEMPTS,
        ]
    );
    // Nothing at all: unknown, no problems.
    let info = parse(&Headers::new());
    assert_eq!(info.format, Some(Format::Unknown));
    assert!(info.problems.is_empty());
}

proptest! {
    #[test]
    fn any_provenance_round_trips(
        topic in "[a-zA-Z0-9._-]{1,40}",
        partition in 0_i32..10_000,
        offset in 0_i64..i64::MAX,
        message in "\\PC{0,200}",
        chain in proptest::collection::vec("\\PC{0,50}", 0..5),
        attempts in 1_u32..1_000,
        first in 0_i64..4_000_000_000_000,
        later in 0_i64..1_000_000,
    ) {
        let p = Provenance {
            original_topic: topic,
            original_partition: partition,
            original_offset: offset,
            original_timestamp: None,
            group: "g".into(),
            error_class: ErrorClass::Transient,
            error_message: message,
            cause_chain: chain,
            attempts,
            first_failure: Timestamp::from_millis(first),
            last_failure: Timestamp::from_millis(first + later),
            instance_id: "i".into(),
            truncated_value: Some((12_345, "ab".into())),
        };
        let mut headers = Headers::new();
        encode(&mut headers, &p);
        prop_assert_eq!(parse(&headers), expected(&p));
    }

    #[test]
    fn arbitrary_header_bytes_never_panic(
        entries in proptest::collection::vec(
            (prop_oneof![
                Just(names::ORIGINAL_PARTITION.to_string()),
                Just(names::ORIGINAL_OFFSET.to_string()),
                Just(names::CAUSE_CHAIN.to_string()),
                Just("kafka_dlt-original-partition".to_string()),
                Just("__connect.errors.offset".to_string()),
                Just("source_partition".to_string()),
                "[a-z_.-]{1,20}",
            ], proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))),
            0..12,
        )
    ) {
        let mut headers = Headers::new();
        for (key, value) in entries {
            headers.push(key, value);
        }
        let _ = parse(&headers);
    }
}
