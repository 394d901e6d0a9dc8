//! The consumer driver against librdkafka's mock cluster: commits, failures, rebalances,
//! backpressure and pause/resume.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::handler::{HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::scheduler::Ordering;
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Error, Offset, Record, TopicPartition};

const PARTITIONS: i32 = 4;
const PER_PARTITION: i64 = 50;

async fn cluster_with_records(topic: &str) -> MockKafka {
    let kafka = MockKafka::start(3).unwrap();
    kafka.create_topic(topic, PARTITIONS).unwrap();
    for p in 0..PARTITIONS {
        let records = (0..PER_PARTITION)
            .map(|i| TestRecord::keyed(format!("k{i}"), format!("{p}:{i}")).to_partition(p));
        kafka.produce(topic, records).await.unwrap();
    }
    kafka
}

async fn committed(kafka: &MockKafka, group: &str, topic: &str) -> BTreeMap<i32, Option<i64>> {
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    kafka
        .cluster()
        .unwrap()
        .committed_offsets(group, &partitions)
        .await
        .unwrap()
        .into_iter()
        .map(|(tp, offset)| (tp.partition, offset.unwrap().map(Offset::get)))
        .collect()
}

/// Every partition committed at its end.
fn all_at_end() -> BTreeMap<i32, Option<i64>> {
    (0..PARTITIONS).map(|p| (p, Some(PER_PARTITION))).collect()
}

async fn assert_all_committed(kafka: &MockKafka, group: &str, topic: &str) {
    assert_eq!(committed(kafka, group, topic).await, all_at_end());
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a driver until `seen` holds `expected` records, then shuts it down.
async fn run_until_seen(
    driver: Driver<impl kafka_ops_core::handler::Handler>,
    seen: Arc<Mutex<HashSet<(i32, i64)>>>,
    expected: usize,
) -> Result<kafka_ops_core::kafka::driver::DriverReport, Error> {
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    wait_until("all records", Duration::from_secs(60), || {
        seen.lock().unwrap().len() >= expected
    })
    .await;
    handle.shutdown();
    run.await.unwrap()
}

fn recording_handler(
    seen: Arc<Mutex<HashSet<(i32, i64)>>>,
) -> impl kafka_ops_core::handler::Handler {
    handler_fn(move |record: &Record<'_>| {
        let seen = seen.clone();
        let key = (record.partition, record.offset.get());
        // Vary the work so records finish out of order.
        let delay = Duration::from_micros(((key.1 * 7919) % 3000) as u64);
        async move {
            tokio::time::sleep(delay).await;
            seen.lock().unwrap().insert(key);
            Ok(Outcome::Processed)
        }
    })
}

/// What a test of one driver needs: the mock cluster with the usual records on a new topic, the
/// group's name, the records the handler saw, and the driver (not started) on that topic.
struct Recorded<H> {
    kafka: MockKafka,
    topic: String,
    group: String,
    seen: Arc<Mutex<HashSet<(i32, i64)>>>,
    driver: Driver<H>,
}

async fn recording_driver(prefix: &str) -> Recorded<impl kafka_ops_core::handler::Handler> {
    let topic = unique_name(prefix);
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        recording_handler(seen.clone()),
    );
    Recorded {
        kafka,
        topic,
        group,
        seen,
        driver,
    }
}

async fn processes_everything_and_commits_the_end(ordering: Ordering) {
    let topic = unique_name("orders");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut config = DriverConfig::new([topic.as_str()]);
    config.ordering = ordering;
    config.max_in_flight = 32;
    let driver = Driver::new(
        kafka.consumer_config(&group),
        config,
        recording_handler(seen.clone()),
    );
    let report = run_until_seen(
        driver,
        seen.clone(),
        (PARTITIONS as i64 * PER_PARTITION) as usize,
    )
    .await
    .unwrap();
    assert_eq!(report.stats.processed, 200);
    assert_eq!(report.stats.failed, 0);
    assert_eq!(report.abandoned, 0);
    assert!(report.stats.commits >= 1);
    assert_all_committed(&kafka, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_partition_ordering_processes_everything_and_commits_the_end() {
    processes_everything_and_commits_the_end(Ordering::PerPartition).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unordered_processing_commits_only_contiguous_progress() {
    processes_everything_and_commits_the_end(Ordering::Unordered).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_partition_ordering_keeps_offset_order() {
    let topic = unique_name("ordered");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let order: Arc<Mutex<BTreeMap<i32, Vec<i64>>>> = Arc::default();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let handler = {
        let (order, seen) = (order.clone(), seen.clone());
        handler_fn(move |record: &Record<'_>| {
            let (order, seen) = (order.clone(), seen.clone());
            let (p, o) = (record.partition, record.offset.get());
            async move {
                tokio::time::sleep(Duration::from_micros(((o * 31) % 2000) as u64)).await;
                order.lock().unwrap().entry(p).or_default().push(o);
                seen.lock().unwrap().insert((p, o));
                Ok(Outcome::Processed)
            }
        })
    };
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    run_until_seen(driver, seen, 200).await.unwrap();
    for (partition, offsets) in order.lock().unwrap().iter() {
        let sorted: Vec<i64> = (0..PER_PARTITION).collect();
        assert_eq!(offsets, &sorted, "partition {partition} out of order");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_error_stops_without_committing_past_the_record() {
    let topic = unique_name("failing");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let handler = handler_fn(move |record: &Record<'_>| {
        let poison = record.partition == 1 && record.offset.get() == 7;
        async move {
            if poison {
                Err(HandlerError::permanent("cannot parse order 1/7"))
            } else {
                Ok(Outcome::Processed)
            }
        }
    });
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    let handle = driver.handle();
    let error = tokio::time::timeout(Duration::from_secs(60), driver.run())
        .await
        .expect("the driver stops by itself")
        .unwrap_err();
    match &error {
        Error::Handler {
            partition,
            offset,
            source,
        } => {
            assert_eq!((partition.partition, *offset), (1, 7));
            assert_eq!(
                source.to_string(),
                "permanent error: cannot parse order 1/7"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(handle.stats().failed, 1);
    assert!(!handle.is_running());
    let committed = committed(&kafka, &group, &topic).await;
    // Partition 1 stops exactly at the failed record: it will be redelivered.
    assert_eq!(committed[&1], Some(7));
    for p in [0, 2, 3] {
        assert!(committed[&p].unwrap_or(0) <= PER_PARTITION);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_handler_is_an_error_not_a_lost_record() {
    let topic = unique_name("panics");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let handler = handler_fn(move |record: &Record<'_>| {
        let boom = record.partition == 0 && record.offset.get() == 3;
        async move {
            assert!(!boom, "bug in the handler");
            Ok(Outcome::Processed)
        }
    });
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    let error = tokio::time::timeout(Duration::from_secs(60), driver.run())
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("handler panicked"), "{error}");
    assert_eq!(error.class(), kafka_ops_core::ErrorClass::Fatal);
    assert_eq!(committed(&kafka, &group, &topic).await[&0], Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn backpressure_bounds_what_is_taken_without_pausing() {
    let topic = unique_name("pressure");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (gate, done) = (gate.clone(), done.clone());
        handler_fn(move |_record: &Record<'_>| {
            let (gate, done) = (gate.clone(), done.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                done.fetch_add(1, AtomicOrdering::SeqCst);
                Ok(Outcome::Processed)
            }
        })
    };
    let mut config = DriverConfig::new([topic.as_str()]);
    config.ordering = Ordering::Unordered;
    config.max_in_flight = 8;
    let driver = Driver::new(kafka.consumer_config(&group), config, handler);
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    wait_until(
        "the in-flight bound to fill",
        Duration::from_secs(30),
        || handle.stats().in_flight >= 8,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = handle.stats();
    // At capacity the driver stops taking records (librdkafka's bounded queue keeps the rest)
    // instead of buffering the whole topic, and it does so without pausing the assignment.
    assert_eq!(stats.in_flight, 8, "{stats:?}");
    assert_eq!(stats.polled, 8, "{stats:?}");
    assert!(!stats.paused, "{stats:?}");
    assert!(
        handle.last_poll().unwrap().elapsed() < Duration::from_secs(1),
        "the poll loop stays alive while full"
    );
    gate.add_permits(10_000);
    wait_until("everything to finish", Duration::from_secs(60), || {
        done.load(AtomicOrdering::SeqCst) == 200
    })
    .await;
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.stats.processed, 200);
    assert_eq!(report.stats.polled, 200);
    assert_eq!(
        committed(&kafka, &group, &topic).await[&0],
        Some(PER_PARTITION)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_from_the_handle_stops_consumption_until_resumed() {
    // The cluster stays up until the end of the test.
    let Recorded {
        kafka: _kafka,
        seen,
        driver,
        ..
    } = recording_driver("paused").await;
    let handle = driver.handle();
    handle.pause();
    let run = tokio::spawn(driver.run());
    wait_until("assignment", Duration::from_secs(30), || {
        !handle.stats().assigned.is_empty()
    })
    .await;
    wait_until("pause to apply", Duration::from_secs(10), || {
        handle.is_paused()
    })
    .await;
    let before = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = seen.lock().unwrap().len();
    // The few records fetched before the pause applied may finish; nothing more is read.
    assert_eq!(before, after);
    assert!(
        handle.last_poll().unwrap().elapsed() < Duration::from_secs(1),
        "the poll loop stays alive"
    );
    handle.resume();
    wait_until("all records", Duration::from_secs(60), || {
        seen.lock().unwrap().len() == 200
    })
    .await;
    handle.shutdown();
    run.await.unwrap().unwrap();
}

async fn run_member(
    kafka: &MockKafka,
    group: &str,
    topic: &str,
    seen: Arc<Mutex<Vec<(i32, i64)>>>,
) -> (
    DriverHandle,
    tokio::task::JoinHandle<Result<kafka_ops_core::kafka::driver::DriverReport, Error>>,
) {
    let handler = handler_fn(move |record: &Record<'_>| {
        let seen = seen.clone();
        let key = (record.partition, record.offset.get());
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen.lock().unwrap().push(key);
            Ok(Outcome::Processed)
        }
    });
    let mut config = DriverConfig::new([topic]);
    config.max_in_flight = 4;
    let driver = Driver::new(kafka.consumer_config(group), config, handler);
    let handle = driver.handle();
    (handle, tokio::spawn(driver.run()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_hands_over_without_losing_records() {
    let topic = unique_name("shared");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let (first, first_run) = run_member(&kafka, &group, &topic, seen.clone()).await;
    wait_until("some progress", Duration::from_secs(30), || {
        seen.lock().unwrap().len() >= 20
    })
    .await;
    let (second, second_run) = run_member(&kafka, &group, &topic, seen.clone()).await;
    wait_until(
        "the second member's assignment",
        Duration::from_secs(30),
        || !second.stats().assigned.is_empty(),
    )
    .await;
    let distinct = || {
        seen.lock()
            .unwrap()
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .len()
    };
    wait_until("every record", Duration::from_secs(60), || {
        distinct() == 200
    })
    .await;
    // The first member leaves; the second takes everything over and commits it.
    first.shutdown();
    let first_report = first_run.await.unwrap().unwrap();
    assert!(
        first_report.stats.rebalances >= 2,
        "{:?}",
        first_report.stats
    );
    let end = all_at_end();
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&kafka, &group, &topic).await != end {
        assert!(
            Instant::now() < deadline,
            "offsets never reached the end: {:?}",
            committed(&kafka, &group, &topic).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.shutdown();
    second_run.await.unwrap().unwrap();
    // At least once: every record was handled; redeliveries after a handover are allowed.
    let all: HashSet<(i32, i64)> = seen.lock().unwrap().iter().copied().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(committed(&kafka, &group, &topic).await, end);
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_errors_are_reported_before_connecting() {
    let kafka = MockKafka::start(1).unwrap();
    let handler = handler_fn(|_r: &Record<'_>| async { Ok(Outcome::Processed) });
    let no_group = Driver::new(kafka.client_config(), DriverConfig::new(["t"]), handler);
    assert!(matches!(no_group.run().await, Err(Error::Config(_))));
    let handler = handler_fn(|_r: &Record<'_>| async { Ok(Outcome::Processed) });
    let no_topics = Driver::new(
        kafka.consumer_config("g"),
        DriverConfig::new(Vec::<String>::new()),
        handler,
    );
    assert!(matches!(no_topics.run().await, Err(Error::Config(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_holds_only_its_partition_until_due() {
    use kafka_ops_core::Timestamp;
    use kafka_ops_core::handler::Disposition;
    let topic = unique_name("deferred");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let log: Arc<Mutex<Vec<(i32, i64, Instant)>>> = Arc::default();
    let deferred_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = {
        let (log, deferred_once) = (log.clone(), deferred_once.clone());
        handler_fn(move |record: &Record<'_>| {
            let (log, deferred_once) = (log.clone(), deferred_once.clone());
            let key = (record.partition, record.offset.get());
            async move {
                if key == (0, 5) && !deferred_once.swap(true, AtomicOrdering::SeqCst) {
                    let due = Timestamp::from_system_time(std::time::SystemTime::now())
                        .plus(Duration::from_millis(700));
                    log.lock().unwrap().push((key.0, key.1, Instant::now()));
                    return Err(HandlerError::transient("not due yet")
                        .with_disposition(Disposition::RedeliverAt(due)));
                }
                log.lock().unwrap().push((key.0, key.1, Instant::now()));
                Ok(Outcome::Processed)
            }
        })
    };
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    let distinct = || {
        log.lock()
            .unwrap()
            .iter()
            .map(|(p, o, _)| (*p, *o))
            .collect::<HashSet<_>>()
            .len()
    };
    wait_until("every record", Duration::from_secs(60), || {
        distinct() == 200
    })
    .await;
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.stats.redelivered, 1);
    assert_eq!(report.stats.failed, 0);

    let log = log.lock().unwrap().clone();
    let attempts: Vec<Instant> = log
        .iter()
        .filter(|(p, o, _)| (*p, *o) == (0, 5))
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "offset 0/5 is handled twice: deferred, then due"
    );
    let waited = attempts[1] - attempts[0];
    assert!(
        waited >= Duration::from_millis(600),
        "redelivered after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "redelivered after {waited:?}"
    );
    // Partition 0 kept its order: nothing after offset 5 ran before the redelivery.
    for (p, o, t) in &log {
        if *p == 0 && *o > 5 {
            assert!(*t >= attempts[1], "0/{o} ran before the redelivered 0/5");
        }
    }
    // The other partitions were not held back.
    let last_other = log
        .iter()
        .filter(|(p, _, _)| *p != 0)
        .map(|(_, _, t)| *t)
        .max()
        .unwrap();
    assert!(
        last_other < attempts[1],
        "other partitions waited for partition 0"
    );
    assert_all_committed(&kafka, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skip_disposition_commits_past_the_record() {
    use kafka_ops_core::handler::Disposition;
    let topic = unique_name("skipped");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let handler = {
        let seen = seen.clone();
        handler_fn(move |record: &Record<'_>| {
            let seen = seen.clone();
            let key = (record.partition, record.offset.get());
            async move {
                seen.lock().unwrap().insert(key);
                if key.1 % 10 == 3 {
                    return Err(
                        HandlerError::permanent("unparseable").with_disposition(Disposition::Skip)
                    );
                }
                Ok(Outcome::Processed)
            }
        })
    };
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    let report = run_until_seen(driver, seen, 200).await.unwrap();
    assert_eq!(report.stats.skipped, 20);
    assert_eq!(report.stats.processed, 180);
    assert_all_committed(&kafka, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handle_made_before_the_driver_controls_it() {
    use kafka_ops_core::handler::ConsumerControl;
    let topic = unique_name("prebuilt");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let handle = DriverHandle::new();
    // A layer holds the handle as a ConsumerControl before the driver exists.
    let control: Arc<dyn ConsumerControl> = Arc::new(handle.clone());
    control.pause();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let driver = Driver::with_handle(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        recording_handler(seen.clone()),
        handle.clone(),
    );
    let run = tokio::spawn(driver.run());
    wait_until("the pause to apply", Duration::from_secs(30), || {
        control.is_paused() && !handle.stats().assigned.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen.lock().unwrap().len() < 200);
    control.resume();
    wait_until("every record", Duration::from_secs(60), || {
        seen.lock().unwrap().len() == 200
    })
    .await;
    control.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_run_future_shuts_the_driver_down() {
    let Recorded {
        kafka,
        topic,
        group,
        seen,
        driver,
    } = recording_driver("dropped").await;
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    wait_until("all records", Duration::from_secs(60), || {
        seen.lock().unwrap().len() == 200
    })
    .await;
    assert!(handle.is_running());
    // A test that fails while a driver runs drops its future this way; the poll thread must not
    // outlive it (a dropped runtime would wait for the thread forever).
    run.abort();
    wait_until("the poll loop to stop", Duration::from_secs(30), || {
        !handle.is_running()
    })
    .await;
    assert_all_committed(&kafka, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_synchronous_handlers_still_run_in_parallel() {
    let topic = unique_name("slow");
    let group = unique_name("g");
    let kafka = cluster_with_records(&topic).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (running, most, done) = (running.clone(), most.clone(), done.clone());
        handler_fn(move |_record: &Record<'_>| {
            // Work that never yields: it would hold the poll thread if it ran there.
            let now = running.fetch_add(1, AtomicOrdering::SeqCst) + 1;
            most.fetch_max(now, AtomicOrdering::SeqCst);
            std::thread::sleep(Duration::from_millis(3));
            running.fetch_sub(1, AtomicOrdering::SeqCst);
            done.fetch_add(1, AtomicOrdering::SeqCst);
            async { Ok(Outcome::Processed) }
        })
    };
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler,
    );
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    wait_until("every record", Duration::from_secs(60), || {
        done.load(AtomicOrdering::SeqCst) == 200
    })
    .await;
    assert!(
        handle.last_poll().unwrap().elapsed() < Duration::from_secs(1),
        "the poll loop kept polling"
    );
    handle.shutdown();
    run.await.unwrap().unwrap();
    assert!(
        most.load(AtomicOrdering::SeqCst) >= 2,
        "partitions were handled one at a time"
    );
    assert_all_committed(&kafka, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_fetch_error_on_a_partition_queue_stops_the_driver_with_its_code() {
    let Recorded {
        kafka,
        topic,
        seen,
        driver,
        ..
    } = recording_driver("orders").await;
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    // Once records flow, the partition queues are split off: the next fetches are refused.
    wait_until("the first records", Duration::from_secs(30), || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    kafka.request_errors(
        rdkafka::types::RDKafkaApiKey::Fetch,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );
    let produced = (0..PARTITIONS)
        .map(|p| TestRecord::keyed("late", "late").to_partition(p))
        .collect::<Vec<_>>();
    kafka.produce(&topic, produced).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run).await;
    handle.shutdown();
    let result = outcome.expect("the driver stops by itself").unwrap();
    match result {
        Err(Error::Kafka { code, .. }) => {
            assert_eq!(
                code,
                Some(kafka_ops_core::KafkaCode(29)),
                "TOPIC_AUTHORIZATION_FAILED"
            );
        }
        other => panic!("expected the authorization failure, got {other:?}"),
    }
}
