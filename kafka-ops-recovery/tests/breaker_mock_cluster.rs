//! A downstream outage on a real consumer: the breaker opens, the consumer pauses, nothing is
//! lost, processing resumes when the downstream is back.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_ops_core::Record;
use kafka_ops_core::handler::{HandlerBuilder, handler_fn};
use kafka_ops_core::handler::{HandlerError, Outcome};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_recovery::{
    BackoffPolicy, BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakerLayer, RetryLayer,
    RetryPolicy, SlidingWindow,
};

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn a_downstream_outage_opens_the_breaker_pauses_and_loses_nothing() {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("payments");
    kafka.create_topic(&topic, PARTITIONS).unwrap();
    for p in 0..PARTITIONS {
        let records = (0..PER_PARTITION)
            .map(|i| TestRecord::keyed(format!("k{i}"), format!("{p}:{i}")).to_partition(p));
        kafka.produce(&topic, records).await.unwrap();
    }

    // The downstream is down from the 20th call for 30 seconds.
    let outage = Duration::from_secs(30);
    let down_since: Arc<Mutex<Option<Instant>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let processed: Arc<Mutex<HashMap<(i32, i64), usize>>> = Arc::default();
    let downstream = {
        let (down_since, calls, processed) = (down_since.clone(), calls.clone(), processed.clone());
        handler_fn(move |record: &Record<'_>| {
            let key = (record.partition, record.offset.get());
            let failing = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                let mut since = down_since.lock().unwrap();
                if *calls == 20 {
                    *since = Some(Instant::now());
                }
                since.is_some_and(|at| at.elapsed() < outage)
            };
            if !failing {
                *processed.lock().unwrap().entry(key).or_default() += 1;
            }
            async move {
                if failing {
                    Err(HandlerError::transient("payments API: 503"))
                } else {
                    Ok(Outcome::Processed)
                }
            }
        })
    };

    let handle = DriverHandle::new();
    let breaker = Arc::new(
        CircuitBreaker::new(
            "payments",
            BreakerConfig {
                window: SlidingWindow::Count(10),
                minimum_calls: 5,
                failure_rate_threshold: 50.0,
                open_duration: Duration::from_millis(500),
                half_open_calls: 1,
                ..BreakerConfig::default()
            },
        )
        .unwrap(),
    );
    let saw_pause = Arc::new(AtomicBool::new(false));
    {
        let saw_pause = saw_pause.clone();
        breaker.on_state_change(move |change| {
            if change.to == BreakerState::Open {
                saw_pause.store(true, AtomicOrdering::SeqCst);
            }
        });
    }
    let handler = HandlerBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(BackoffPolicy::constant(
            Duration::from_millis(20),
            2,
        ))))
        .layer(CircuitBreakerLayer::new(
            breaker.clone(),
            Arc::new(handle.clone()),
        ))
        .handler(downstream);
    let driver = Driver::with_handle(
        kafka.consumer_config(&unique_name("g")),
        DriverConfig::new([topic.as_str()]),
        handler,
        handle.clone(),
    );
    let run = tokio::spawn(driver.run());

    let total = PARTITIONS as usize * PER_PARTITION;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut paused_seen = false;
    while processed.lock().unwrap().len() < total {
        assert!(
            Instant::now() < deadline,
            "stuck: {:?}, breaker {:?}",
            handle.stats(),
            breaker.state()
        );
        paused_seen |= handle.is_paused();
        assert!(
            !run.is_finished(),
            "the driver stopped: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        saw_pause.load(AtomicOrdering::SeqCst),
        "the breaker never opened"
    );
    assert!(
        paused_seen,
        "the consumer never paused while the breaker was open"
    );
    // Resumed once the downstream was back.
    let resume_deadline = Instant::now() + Duration::from_secs(10);
    while handle.is_paused() {
        assert!(Instant::now() < resume_deadline, "still paused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    // Every record processed exactly once; the failures were held and run again, never lost.
    let processed = processed.lock().unwrap();
    assert_eq!(processed.len(), total);
    assert!(
        processed.values().all(|n| *n == 1),
        "a record was processed twice"
    );
    assert_eq!(report.stats.processed, total as u64);
    assert!(report.stats.redelivered > 0, "{:?}", report.stats);
    assert_eq!(report.stats.failed, 0);
}

/// The default settings close the breaker after three successful probes. With fewer records
/// held than that when it half-opens, the consumer must fetch again for the probes it lacks,
/// or the breaker stays half-open and the consumer paused for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_open_breaker_fetches_the_records_its_probes_need() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("payments");
    kafka.create_topic(&topic, 1).unwrap();
    let record = |i: usize| TestRecord::keyed(format!("k{i}"), format!("{i}")).to_partition(0);
    kafka.produce(&topic, (0..2).map(record)).await.unwrap();

    // The downstream fails its first two calls, then works.
    let calls = Arc::new(AtomicUsize::new(0));
    let processed: Arc<Mutex<Vec<i64>>> = Arc::default();
    let downstream = {
        let (calls, processed) = (calls.clone(), processed.clone());
        handler_fn(move |record: &Record<'_>| {
            let failing = calls.fetch_add(1, AtomicOrdering::SeqCst) < 2;
            if !failing {
                processed.lock().unwrap().push(record.offset.get());
            }
            async move {
                if failing {
                    Err(HandlerError::transient("payments API: 503"))
                } else {
                    Ok(Outcome::Processed)
                }
            }
        })
    };
    let config = BreakerConfig {
        minimum_calls: 2,
        open_duration: Duration::from_millis(300),
        ..BreakerConfig::default()
    };
    assert_eq!(config.half_open_calls, 3);
    let breaker = Arc::new(CircuitBreaker::new("payments", config).unwrap());
    let handle = DriverHandle::new();
    let handler = HandlerBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(BackoffPolicy::constant(
            Duration::from_millis(10),
            2,
        ))))
        .layer(CircuitBreakerLayer::new(
            breaker.clone(),
            Arc::new(handle.clone()),
        ))
        .handler(downstream);
    let driver = Driver::with_handle(
        kafka.consumer_config(&unique_name("g")),
        DriverConfig::new([topic.as_str()]),
        handler,
        handle.clone(),
    );
    let run = tokio::spawn(driver.run());

    let wait_for = |count: usize| {
        let (processed, handle, breaker) = (processed.clone(), handle.clone(), breaker.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while processed.lock().unwrap().len() < count {
                assert!(
                    Instant::now() < deadline,
                    "stuck at {:?}: breaker {:?}, paused {}, {:?}",
                    processed.lock().unwrap(),
                    breaker.state(),
                    handle.is_paused(),
                    handle.stats()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // The outage opened the breaker; both records came through as probes, one probe short of
    // closing.
    wait_for(2).await;
    assert_eq!(calls.load(AtomicOrdering::SeqCst), 4);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // A record produced now is fetched: it is the last probe.
    kafka.produce(&topic, [record(2)]).await.unwrap();
    wait_for(3).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(!handle.is_paused());
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(*processed.lock().unwrap(), [0, 1, 2]);
    assert_eq!(report.stats.failed, 0);
    // The failure that opened the breaker waited for the open duration; it did not spin at its
    // end (a wait rounded down to zero milliseconds brought it straight back, over and over).
    assert!(report.stats.redelivered <= 3, "{:?}", report.stats);
}
