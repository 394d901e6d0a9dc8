//! The driver's memory beyond its handlers, on a real Apache Kafka cluster: a lagging consumer
//! whose handlers are stuck must not let librdkafka prefetch a whole backlog per partition.
//! Read from librdkafka's own statistics (`fetchq_size` per partition) through
//! [`DriverStats::prefetched`].
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverStats, Prefetched};
use kafka_ops_core::testkit::{RealKafka, TestRecord, unique_name};
use kafka_ops_core::{Record, TopicPartition};
use rdkafka::ClientConfig;
use tokio::sync::Semaphore;

const PARTITIONS: i32 = 4;
const RECORDS_PER_PARTITION: usize = 2_000;
const RECORD_BYTES: usize = 4 * 1024;
const MIB: u64 = 1024 * 1024;

/// 8 MiB of 4 KiB records on each partition of a new topic.
async fn backlog(kafka: &RealKafka) -> String {
    let topic = unique_name("sensor_readings");
    kafka.create_topic(&topic, PARTITIONS).await.unwrap();
    let value = vec![b'r'; RECORD_BYTES];
    for partition in 0..PARTITIONS {
        kafka
            .produce(
                &topic,
                (0..RECORDS_PER_PARTITION).map(|i| {
                    TestRecord::keyed(format!("k{i}"), value.clone()).to_partition(partition)
                }),
            )
            .await
            .unwrap();
    }
    topic
}

/// Runs a driver whose handlers wait until the end, and returns librdkafka's prefetch once it
/// stopped changing (it stops when every fetch queue is at its bound or holds its whole
/// partition), with the driver's counters at that moment.
async fn prefetch_of_a_stuck_consumer(
    kafka: &RealKafka,
    topic: &str,
    configure: impl FnOnce(&mut ClientConfig),
) -> (Prefetched, DriverStats) {
    let mut consumer = kafka.consumer_config(&unique_name("sensor_aggregator"));
    consumer.set("statistics.interval.ms", "200");
    configure(&mut consumer);
    let gate = Arc::new(Semaphore::new(0));
    let waiting = gate.clone();
    let handler = handler_fn(move |_record: &Record<'_>| {
        let gate = waiting.clone();
        async move {
            // Closed at the end of the test: every handler then finishes.
            let _ = gate.acquire().await;
            Ok(Outcome::Processed)
        }
    });
    let mut config = DriverConfig::new([topic]);
    config.shutdown_timeout = Duration::from_secs(5);
    let driver = Driver::new(consumer, config, handler);
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut unchanged_since) = (None::<Prefetched>, Instant::now());
    let settled = loop {
        let stats = handle.stats();
        let now = Instant::now();
        match &stats.prefetched {
            Some(seen) if seen.bytes > 0 && last.as_ref() == Some(seen) => {
                if now.duration_since(unchanged_since) >= Duration::from_secs(2) {
                    break (seen.clone(), stats);
                }
            }
            seen => {
                last = seen.clone();
                unchanged_since = now;
            }
        }
        assert!(now < deadline, "prefetch never settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gate.close();
    handle.shutdown();
    run.await.unwrap().unwrap();
    settled
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_consumer_prefetches_a_bounded_amount_per_partition_unless_told_otherwise() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = backlog(&kafka).await;

    // The driver's bound: 1 MiB queued per partition before librdkafka stops fetching it; one
    // more fetch of up to `max.partition.fetch.bytes` (1 MiB) can land on top, and a fetch
    // always returns at least one whole record batch.
    let (bounded, stats) = prefetch_of_a_stuck_consumer(&kafka, &topic, |_| {}).await;
    let (fullest, fullest_bytes) = bounded.largest.clone().unwrap();
    assert!(
        fullest_bytes <= 3 * MIB,
        "{fullest} prefetched {fullest_bytes} bytes: {bounded:?}"
    );
    assert!(bounded.bytes <= 3 * MIB * PARTITIONS as u64, "{bounded:?}");
    // Every partition was assigned and is being read: the handlers hold the first records.
    assert_eq!(
        stats.assigned,
        (0..PARTITIONS)
            .map(|p| TopicPartition::new(topic.as_str(), p))
            .collect::<Vec<_>>()
    );
    assert!(stats.in_flight >= PARTITIONS as u64, "{stats:?}");
    assert_eq!(stats.processed, 0);

    // A bound the user sets is kept: librdkafka's own 64 MiB lets each queue take its whole
    // partition, which is also what the check above would have caught without the bound.
    let (unbounded, _) = prefetch_of_a_stuck_consumer(&kafka, &topic, |consumer| {
        consumer.set("queued.max.messages.kbytes", "65536");
    })
    .await;
    let (_, most) = unbounded.largest.clone().unwrap();
    let backlog_bytes = (RECORDS_PER_PARTITION * RECORD_BYTES) as u64;
    assert!(most > backlog_bytes * 3 / 4, "{unbounded:?}");
    assert!(
        unbounded.bytes > 3 * MIB * PARTITIONS as u64,
        "{unbounded:?}"
    );
}
