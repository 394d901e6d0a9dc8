//! Retry tiers against librdkafka's mock cluster: transient failures climb the tiers, each tier
//! record runs no earlier than its due time (and not much later), a record that keeps failing
//! ends in the original topic's dead-letter topic with its original coordinates, and
//! permanent failures go there directly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_ops_core::dead_letter::retry::{self, names};
use kafka_ops_core::dead_letter::{Envelope, headers};
use kafka_ops_core::handler::{HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Clock, Record, SystemClock, Timestamp};
use kafka_ops_dlq::DeadLetterLayer;
use kafka_ops_dlq::{RetryTiers, RetryTopicLayer};

/// One call of the handler: the record's key, its topic, when it ran, and its due time.
#[derive(Debug, Clone)]
struct Call {
    key: String,
    topic: String,
    at: Timestamp,
    due: Option<Timestamp>,
}

#[tokio::test(flavor = "multi_thread")]
async fn tiers_honour_due_times_and_end_in_the_dead_letter_topic() {
    let kafka = MockKafka::start(3).unwrap();
    let tiers = RetryTiers::new([Duration::from_secs(1), Duration::from_secs(2)]).unwrap();
    kafka.create_topic("orders", 3).unwrap();
    for topic in tiers.topics("orders") {
        kafka.create_topic(&topic, 3).unwrap();
    }
    kafka.create_topic("orders.dlq", 3).unwrap();
    let mut records = Vec::new();
    for i in 0..8 {
        for kind in ["ok", "flaky", "broken", "bad"] {
            records.push(TestRecord::keyed(format!("{kind}-{i}"), "v").to_partition(i % 3));
        }
    }
    let produced = kafka.produce("orders", records).await.unwrap();

    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let group = unique_name("retry");
    let handler = HandlerBuilder::new()
        .layer(DeadLetterLayer::new(
            sink.clone(),
            Envelope::new(&group, "instance-1"),
        ))
        .layer(RetryTopicLayer::new(tiers.clone(), sink))
        .handler(handler_fn({
            let calls = calls.clone();
            let seen = seen.clone();
            move |record: &Record<'_>| {
                let key = record.key_str().unwrap().unwrap().to_string();
                let due = record
                    .headers
                    .get_str(names::DUE)
                    .unwrap()
                    .map(|d| Timestamp::from_millis(d.parse().unwrap()));
                calls.lock().unwrap().push(Call {
                    key: key.clone(),
                    topic: record.topic.to_string(),
                    at: SystemClock.wall(),
                    due,
                });
                let tries = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(key.clone()).or_default();
                    *n += 1;
                    *n
                };
                async move {
                    let fail = |m: &str| std::io::Error::other(m.to_string());
                    match key.split('-').next().unwrap() {
                        "flaky" if tries == 1 => Err(HandlerError::transient(fail("busy"))),
                        "broken" => Err(HandlerError::transient(fail("downstream timeout"))),
                        "bad" => Err(HandlerError::permanent(fail("bad amount"))),
                        _ => Ok(Outcome::Processed),
                    }
                }
            }
        }));
    let mut topics = vec!["orders".to_string()];
    topics.extend(tiers.topics("orders"));
    let mut config = DriverConfig::new(topics);
    config.commit_interval = Duration::from_millis(100);
    let driver = Driver::new(kafka.consumer_config(&group), config, handler);
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());

    // 8 broken records reach the dead-letter topic after 1 s + 2 s of tiers, 8 bad ones at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = kafka.read_all("orders.dlq").await.unwrap();
        if letters.len() >= 16 || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Everything is committed on the source and on both tiers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut done = true;
        for topic in ["orders", "orders.retry.0", "orders.retry.1"] {
            let ends: Vec<Option<i64>> =
                kafka
                    .read_all(topic)
                    .await
                    .unwrap()
                    .iter()
                    .fold(vec![None; 3], |mut ends, r| {
                        ends[r.partition as usize] = Some(r.offset.get() + 1);
                        ends
                    });
            let committed = kafka.committed(&group, topic, 3).await.unwrap();
            done &= ends
                .iter()
                .zip(&committed)
                .all(|(end, c)| end.is_none() || end == c);
        }
        if done || Instant::now() > deadline {
            assert!(done, "every topic committed to its end");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown();
    run.await.unwrap().unwrap();

    assert_eq!(letters.len(), 16, "8 broken + 8 bad");
    let origin: HashMap<String, (i32, i64)> = produced
        .iter()
        .enumerate()
        .map(|(n, (p, o))| {
            let kind = ["ok", "flaky", "broken", "bad"][n % 4];
            (format!("{kind}-{}", n / 4), (*p, o.get()))
        })
        .collect();
    for letter in &letters {
        let key = letter.key_str().unwrap().unwrap();
        let info = headers::parse(&letter.headers);
        let (partition, offset) = origin[key];
        assert_eq!(info.original_topic.as_deref(), Some("orders"), "{key}");
        assert_eq!(info.original_partition, Some(partition), "{key}");
        assert_eq!(info.original_offset, Some(offset), "{key}");
        assert_eq!(letter.partition, partition, "{key}: same partition");
        assert!(
            letter
                .headers
                .iter()
                .all(|h| !h.key.starts_with(retry::PREFIX)),
            "{key}: retry headers summed up in the provenance"
        );
        let expected_attempts = if key.starts_with("broken") { 3 } else { 1 };
        assert_eq!(info.attempts, Some(expected_attempts), "{key}");
        if key.starts_with("broken") {
            let (first, last) = (info.first_failure.unwrap(), info.last_failure.unwrap());
            let spent = last.as_millis() - first.as_millis();
            assert!(spent >= 3_000, "{key}: 1 s + 2 s of tiers, took {spent} ms");
        }
    }

    let calls = calls.lock().unwrap().clone();
    let count = |prefix: &str| calls.iter().filter(|c| c.key.starts_with(prefix)).count();
    assert_eq!(count("ok-"), 8, "once each");
    assert_eq!(count("flaky-"), 16, "failed once, succeeded at tier 0");
    assert_eq!(count("broken-"), 24, "source, tier 0, tier 1");
    assert_eq!(count("bad-"), 8, "no tiers for permanent failures");
    let mut late = Vec::new();
    for call in calls.iter().filter(|c| c.topic != "orders") {
        let due = call.due.expect("tier records carry their due time");
        assert!(
            call.at >= due,
            "{} ran {} ms before it was due on {}",
            call.key,
            due.as_millis() - call.at.as_millis(),
            call.topic
        );
        late.push(call.at.as_millis() - due.as_millis());
    }
    late.sort_unstable();
    println!(
        "tier calls: {}; lateness after due, median {} ms, max {} ms",
        late.len(),
        late[late.len() / 2],
        late[late.len() - 1]
    );
    assert!(
        *late.last().unwrap() < 1_500,
        "no tier record ran more than 1.5 s late: {late:?}"
    );
}
