//! Dead-letter routing against librdkafka's mock cluster: the driver commits a poison record's
//! offset only after its dead letter was acknowledged, through failing Produce requests and
//! with the dead-letter topic's leader down.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::Record;
use kafka_ops_core::dead_letter::headers::Format;
use kafka_ops_core::dead_letter::{Envelope, headers};
use kafka_ops_core::handler::{HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_dlq::DeadLetterLayer;
use kafka_ops_dlq::inspect::inspect;
use rdkafka::types::RDKafkaRespErr;

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 100;

fn is_poison(offset: i64) -> bool {
    offset % 10 == 3
}

/// A topic of 3 × 100 records; those at offsets ending in 3 are poison.
async fn source(kafka: &MockKafka, topic: &str) -> BTreeSet<(i32, i64)> {
    kafka.create_topic(topic, PARTITIONS).unwrap();
    let mut poison = BTreeSet::new();
    for p in 0..PARTITIONS {
        let records = (0..PER_PARTITION).map(|i| {
            let value = if is_poison(i) { "poison" } else { "ok" };
            TestRecord::keyed(format!("k{i}"), value).to_partition(p)
        });
        kafka.produce(topic, records).await.unwrap();
        poison.extend((0..PER_PARTITION).filter(|i| is_poison(*i)).map(|i| (p, i)));
    }
    poison
}

fn start(
    kafka: &MockKafka,
    topic: &str,
    group: &str,
    sink_config: rdkafka::ClientConfig,
) -> (DriverHandle, tokio::task::JoinHandle<()>) {
    let sink = Arc::new(KafkaDeadLetterSink::new(&sink_config).unwrap());
    let layer = DeadLetterLayer::new(sink, Envelope::new(group, "test-instance"))
        .retry_after(Duration::from_millis(200));
    let handler = HandlerBuilder::new()
        .layer(layer)
        .handler(handler_fn(|record: &Record<'_>| {
            let poison = record.value() == Some(&b"poison"[..]);
            async move {
                if poison {
                    Err(HandlerError::permanent(std::io::Error::other(
                        "cannot parse the order",
                    )))
                } else {
                    Ok(Outcome::Processed)
                }
            }
        }));
    let mut config = DriverConfig::new([topic]);
    config.commit_interval = Duration::from_millis(100);
    let driver = Driver::new(kafka.consumer_config(group), config, handler);
    let handle = driver.handle();
    let run = tokio::spawn(async move {
        driver.run().await.unwrap();
    });
    (handle, run)
}

async fn committed(kafka: &MockKafka, group: &str, topic: &str) -> Vec<Option<i64>> {
    kafka.committed(group, topic, PARTITIONS).await.unwrap()
}

async fn wait_for_end(kafka: &MockKafka, group: &str, topic: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let end = vec![Some(PER_PARTITION); PARTITIONS as usize];
    while committed(kafka, group, topic).await != end {
        assert!(
            Instant::now() < deadline,
            "the group never committed the end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every poison record is in the dead-letter topic exactly once, with its provenance.
async fn assert_dead_lettered(
    kafka: &MockKafka,
    topic: &str,
    group: &str,
    poison: &BTreeSet<(i32, i64)>,
) {
    let letters = kafka.read_all(&format!("{topic}.dlq")).await.unwrap();
    let mut seen = BTreeSet::new();
    for letter in &letters {
        let info = headers::parse(&letter.headers);
        assert_eq!(info.format, Some(Format::KafkaOps(1)));
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        assert_eq!(info.original_topic.as_deref(), Some(topic));
        assert_eq!(info.group.as_deref(), Some(group));
        assert_eq!(
            info.error_message.as_deref(),
            Some("cannot parse the order")
        );
        assert_eq!(letter.value(), Some(&b"poison"[..]));
        let origin = (
            info.original_partition.unwrap(),
            info.original_offset.unwrap(),
        );
        assert_eq!(letter.key(), Some(format!("k{}", origin.1).as_bytes()));
        // Same partition as the source (the topic was created with as many).
        assert_eq!(letter.partition, origin.0);
        assert!(seen.insert(origin), "{origin:?} dead-lettered twice");
    }
    assert_eq!(
        &seen, poison,
        "dead-lettered records differ from the poison ones"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_produce_requests_lose_nothing_and_duplicate_nothing() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("orders");
    let group = unique_name("billing");
    let poison = source(&kafka, &topic).await;
    kafka
        .create_topic(&format!("{topic}.dlq"), PARTITIONS)
        .unwrap();
    // The first Produce requests fail with retriable errors; the idempotent producer retries.
    kafka.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ],
    );
    let (handle, run) = start(&kafka, &topic, &group, kafka.client_config());
    wait_for_end(&kafka, &group, &topic, Duration::from_secs(60)).await;
    handle.shutdown();
    run.await.unwrap();
    assert_dead_lettered(&kafka, &topic, &group, &poison).await;

    // Inspecting the dead-letter topic finds them all, as one pattern.
    let inspection = inspect(&kafka.client_config(), &format!("{topic}.dlq"), 5)
        .await
        .unwrap();
    assert_eq!(inspection.depth, poison.len() as u64);
    assert_eq!(inspection.read, poison.len() as u64);
    assert_eq!(inspection.partitions.len(), PARTITIONS as usize);
    assert_eq!(inspection.sample.len(), 5);
    assert_eq!(inspection.patterns.len(), 1);
    let pattern = &inspection.patterns[0];
    assert_eq!(pattern.count, poison.len() as u64);
    assert_eq!(
        pattern.error_class,
        Some(kafka_ops_core::ErrorClass::Permanent)
    );
    assert_eq!(pattern.example, "cannot parse the order");
    assert_eq!(pattern.original_topics, vec![topic.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn inspecting_a_missing_topic_or_an_unreachable_cluster_is_a_typed_error() {
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("present", 1).unwrap();
    let empty = inspect(&kafka.client_config(), "present", 3).await.unwrap();
    assert_eq!((empty.depth, empty.read, empty.patterns.len()), (0, 0, 0));
    let mut unreachable = kafka_ops_core::kafka::client_config("127.0.0.1:1");
    unreachable.set("socket.connection.setup.timeout.ms", "1000");
    assert!(inspect(&unreachable, "orders.dlq", 3).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_dead_letter_leader_down_the_source_offset_waits() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("orders");
    let group = unique_name("billing");
    let dlq = format!("{topic}.dlq");
    let poison = source(&kafka, &topic).await;
    kafka.create_topic(&dlq, PARTITIONS).unwrap();
    // Source partitions and the group on broker 1, every dead-letter partition on broker 3.
    let mock = kafka.mock();
    for p in 0..PARTITIONS {
        mock.partition_leader(&topic, p, Some(1)).unwrap();
        mock.partition_leader(&dlq, p, Some(3)).unwrap();
    }
    mock.coordinator(rdkafka::mocking::MockCoordinator::Group(group.clone()), 1)
        .unwrap();
    kafka.broker_down(3).unwrap();

    // Short delivery timeout: each attempt fails fast and the record comes back.
    let mut sink_config = kafka.client_config();
    sink_config.set("delivery.timeout.ms", "1500");
    let (handle, run) = start(&kafka, &topic, &group, sink_config);

    // During the outage nothing at or past the first poison record of a partition commits.
    let outage_end = Instant::now() + Duration::from_secs(6);
    let mut saw_progress = false;
    while Instant::now() < outage_end {
        for offset in committed(&kafka, &group, &topic)
            .await
            .into_iter()
            .flatten()
        {
            assert!(
                offset <= 3,
                "committed {offset} past an unwritten dead letter"
            );
            saw_progress |= offset == 3;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        saw_progress,
        "the records before the poison one were committed"
    );

    kafka.broker_up(3).unwrap();
    wait_for_end(&kafka, &group, &topic, Duration::from_secs(90)).await;
    handle.shutdown();
    run.await.unwrap();
    assert_dead_lettered(&kafka, &topic, &group, &poison).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_dead_letters_are_truncated_or_stop_the_consumer_uncommitted() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("orders");
    let group = unique_name("billing");
    kafka.create_topic(&topic, 1).unwrap();
    kafka.create_topic(&format!("{topic}.dlq"), 1).unwrap();
    kafka
        .produce(
            &topic,
            [
                TestRecord::keyed("small", "poison"),
                TestRecord::keyed("big-value", vec![7_u8; 60_000]),
                TestRecord::keyed(vec![b'k'; 15_000], "poison"),
                TestRecord::keyed("after", "fine"),
            ],
        )
        .await
        .unwrap();
    // The producer refuses records over 10 000 bytes.
    let mut sink_config = kafka.client_config();
    sink_config.set("message.max.bytes", "10000");
    let sink = Arc::new(KafkaDeadLetterSink::new(&sink_config).unwrap());
    let handler = HandlerBuilder::new()
        .layer(DeadLetterLayer::new(
            sink,
            Envelope::new(&group, "test-instance"),
        ))
        .handler(handler_fn(|record: &Record<'_>| {
            let fine = record.value() == Some(&b"fine"[..]);
            async move {
                if fine {
                    Ok(Outcome::Processed)
                } else {
                    Err(HandlerError::permanent(std::io::Error::other(
                        "cannot parse the order",
                    )))
                }
            }
        }));
    let mut config = DriverConfig::new([topic.as_str()]);
    config.commit_interval = Duration::from_millis(100);
    let report = Driver::new(kafka.consumer_config(&group), config, handler)
        .run()
        .await;
    let error = report.unwrap_err().to_string();
    assert!(error.contains("after truncation"), "{error}");

    let letters = kafka.read_all(&format!("{topic}.dlq")).await.unwrap();
    assert_eq!(letters.len(), 2, "the small one and the truncated one");
    assert_eq!(letters[0].value(), Some(&b"poison"[..]));
    let truncated = &letters[1];
    let info = headers::parse(&truncated.headers);
    assert_eq!(info.truncated_value_size, Some(60_000));
    assert_eq!(
        info.value_digest.as_deref(),
        Some(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&[7_u8; 60_000])).as_str())
    );
    let kept = truncated.value().unwrap();
    assert!(!kept.is_empty() && kept.len() < 10_000 && kept.iter().all(|b| *b == 7));
    // The record that could not be written is where the group stands: nothing was lost.
    assert_eq!(
        kafka.committed(&group, &topic, 1).await.unwrap(),
        vec![Some(2)]
    );
}
