//! The acknowledged producer against librdkafka's mock cluster: served by its caller, every
//! tracked record is answered once, with where it was stored, or with why it was not; and the
//! partition count it reads from the metadata answers right after a broker stops.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_ops_core::Headers;
use kafka_ops_core::dead_letter::Delivered;
use kafka_ops_core::kafka::{AckedProducer, Outgoing};
use kafka_ops_core::testkit::{MockKafka, unique_name};
use kafka_ops_core::{Error, OwnedRecord};

/// Takes answers until `count` arrived or `limit` passed.
fn answers_of(
    producer: &AckedProducer,
    count: usize,
    limit: Duration,
) -> Vec<(u64, Result<Delivered, Error>)> {
    let deadline = Instant::now() + limit;
    let mut answers = Vec::new();
    while answers.len() < count && Instant::now() < deadline {
        let mut more = Vec::new();
        producer.take_answers(&mut more);
        if more.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        answers.append(&mut more);
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn records_sent_by_a_caller_served_producer_are_each_answered_once_where_stored() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("acked");
    kafka.create_topic(&topic, 4).unwrap();
    let producer = AckedProducer::served_by_caller(&kafka.client_config()).unwrap();
    let mut headers = Headers::new();
    headers.push("h", Some(b"v".as_slice()));
    const RECORDS: u64 = 2_000;
    for tag in 0..RECORDS {
        let value = format!("value-{tag}");
        producer
            .send_tracked(
                Outgoing {
                    topic: &topic,
                    partition: Some((tag % 4) as i32),
                    key: None,
                    value: Some(value.as_bytes()),
                    headers: &headers,
                    timestamp: None,
                },
                tag,
            )
            .unwrap();
    }
    // Nothing serves the answers but the caller: none may be lost before it asks.
    let answers = answers_of(&producer, RECORDS as usize, Duration::from_secs(20));
    assert_eq!(answers.len(), RECORDS as usize);
    let mut stored_at: BTreeMap<u64, Delivered> = BTreeMap::new();
    for (tag, answer) in answers {
        assert!(
            stored_at.insert(tag, answer.unwrap()).is_none(),
            "tag {tag} answered twice"
        );
    }
    assert_eq!(
        stored_at.keys().copied().collect::<Vec<_>>(),
        (0..RECORDS).collect::<Vec<_>>()
    );
    // Each partition holds its records at offsets 0.., in the order they were sent.
    let mut next = [0i64; 4];
    for (tag, delivered) in &stored_at {
        assert_eq!(delivered.partition, (tag % 4) as i32);
        assert_eq!(delivered.offset, next[delivered.partition as usize]);
        next[delivered.partition as usize] += 1;
    }
    producer.flush(Duration::from_secs(5)).unwrap();
    let read: Vec<OwnedRecord> = kafka.read_all(&topic).await.unwrap();
    assert_eq!(read.len(), RECORDS as usize);
    assert!(
        read.iter()
            .all(|r| r.headers.get_bytes("h") == Some(b"v".as_slice()))
    );
}

#[test]
fn an_unreachable_cluster_answers_each_record_with_its_failure() {
    let port = kafka_ops_core::testkit::free_port().unwrap();
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("delivery.timeout.ms", "500");
    let producer = AckedProducer::served_by_caller(&config).unwrap();
    let headers = Headers::new();
    for tag in 0..10 {
        producer
            .send_tracked(
                Outgoing {
                    topic: "nowhere",
                    partition: None,
                    key: Some(b"k".as_slice()),
                    value: None,
                    headers: &headers,
                    timestamp: None,
                },
                tag,
            )
            .unwrap();
    }
    let answers = answers_of(&producer, 10, Duration::from_secs(10));
    assert_eq!(answers.len(), 10);
    for (_, answer) in answers {
        match answer {
            Err(Error::NotAcknowledged { topic, .. }) => assert_eq!(topic, "nowhere"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    // Nothing is left to wait for.
    producer.flush(Duration::from_secs(1)).unwrap();
}

/// Right after a broker stops, the producer's partition count (what the dead-letter sink asks
/// to keep a record's partition) answers within its bound: librdkafka would otherwise keep the
/// request on the stopped broker for up to about a second, and a caller with a shorter bound
/// would go on without the count.
#[tokio::test(flavor = "multi_thread")]
async fn partition_count_answers_within_its_bound_right_after_a_broker_stops() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("orders.dlq");
    kafka.create_topic(&topic, 6).unwrap();
    let producer = AckedProducer::new(&kafka.client_config()).unwrap();
    assert_eq!(
        producer.partition_count(&topic, Duration::from_secs(5)),
        Some(6)
    );
    // Short: librdkafka leaves the stopped broker after about a second on its own (with a
    // bound of 1 s or more the ask answered in every round even without asking twice), so a
    // short bound is what shows whether a caller waits on it.
    let bound = Duration::from_millis(600);
    let mut failures = Vec::new();
    for round in 0..20 {
        let broker = round % 3 + 1;
        kafka.broker_down(broker).unwrap();
        let asked = Instant::now();
        let count = producer.partition_count(&topic, bound);
        if count != Some(6) {
            failures.push(format!(
                "round {round}: {count:?} after {:?}",
                asked.elapsed()
            ));
        }
        kafka.broker_up(broker).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Settled again before the next broker stops.
        assert_eq!(
            producer.partition_count(&topic, Duration::from_secs(5)),
            Some(6)
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
