//! A poison record end to end, through the self-healing engine configured from YAML: the
//! consumer stops on a record its handler cannot process; the `poison_record` monitor names it;
//! `skip_poison_record` dead-letters it in the dead-letter layer's own format, commits past it and
//! starts the consumer again, which carries on after it. Then `dlq inspect`
//! reads the dead letter like any other, and after the fix a replay puts it back home where the
//! consumer processes it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_ops_core::dead_letter::headers::Format;
use kafka_ops_core::handler::{ConsumerControl, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::testkit::{RealKafka, TestRecord, unique_name};
use kafka_ops_core::{ErrorClass, Record};
use kafka_ops_dlq::Replay;
use kafka_ops_dlq::inspect::inspect;
use kafka_ops_recovery::actions::RestartFuture;
use kafka_ops_recovery::{BuildContext, Registry, SelfHealingConfig};

const CONFIG: &str = r#"
engine:
  interval: 1s
  grace_checks: 1
  grace_period: 0s
  cooldown: 1s
  retry: { initial_delay: 100ms, multiplier: 2.0, max_delay: 1s, max_attempts: 3 }
monitors:
  - { name: billing, type: poison_record }
playbooks:
  - matches: "poison_record"
    actions: [{ type: skip_poison_record, restart: true }]
notifiers: [{ type: log }]
"#;

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skipped_poison_record_is_inspected_and_replayed_home() {
    // The real cluster: it lets a tool commit for a group once its members left (librdkafka's
    // mock cluster never forgets a group's generation and refuses such commits).
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("orders");
    let dlq = format!("{topic}.dlq");
    kafka.create_topic(&topic, 1).await.unwrap();
    kafka.create_topic(&dlq, 1).await.unwrap();
    let records = (0..10).map(|i| {
        let value = if i == 4 {
            "amount=x".to_string()
        } else {
            format!("amount={i}")
        };
        TestRecord::keyed(format!("k{i}"), value)
            .header("trace-id", format!("t{i}"))
            .to_partition(0)
    });
    kafka.produce(&topic, records).await.unwrap();
    let group = unique_name("billing");

    // The service: amounts must be numbers, until the fix is deployed.
    let fixed = Arc::new(AtomicBool::new(false));
    let processed = Arc::new(AtomicU64::new(0));
    let handler = {
        let (fixed, processed) = (fixed.clone(), processed.clone());
        Arc::new(handler_fn(move |record: &Record<'_>| {
            let (fixed, processed) = (fixed.clone(), processed.clone());
            let value = record
                .value_str()
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_string();
            async move {
                let amount = value.trim_start_matches("amount=");
                if amount.parse::<u64>().is_err() && !fixed.load(Ordering::SeqCst) {
                    return Err(HandlerError::permanent(std::io::Error::other(format!(
                        "amount {amount:?} is not a number"
                    ))));
                }
                processed.fetch_add(1, Ordering::SeqCst);
                Ok(Outcome::Processed)
            }
        }))
    };
    let handle = DriverHandle::new();
    let start = {
        let (config, topic, handle) =
            (kafka.consumer_config(&group), topic.clone(), handle.clone());
        let mut driver_config = DriverConfig::new([topic.as_str()]);
        driver_config.commit_interval = Duration::from_millis(100);
        move || -> RestartFuture {
            let driver = Driver::with_handle(
                config.clone(),
                driver_config.clone(),
                handler.clone(),
                handle.clone(),
            );
            Box::pin(async move {
                tokio::spawn(async move {
                    if let Err(error) = driver.run().await {
                        tracing::info!(%error, "consumer stopped");
                    }
                });
                Ok(())
            })
        }
    };
    start().await.unwrap();

    // It stops on offset 4, having committed what came before.
    wait_until("the consumer to stop on the poison record", || {
        handle.stopped_on().is_some()
    })
    .await;
    let stopped = handle.stopped_on().unwrap();
    assert_eq!((stopped.partition.partition, stopped.offset.get()), (0, 4));
    assert_eq!(stopped.class, ErrorClass::Permanent);
    assert_eq!(processed.load(Ordering::SeqCst), 4);

    // The engine, from YAML, skips it and restarts the consumer.
    let config = SelfHealingConfig::from_yaml(CONFIG).unwrap();
    let restart: Arc<dyn Fn() -> RestartFuture + Send + Sync> = Arc::new(start);
    let engine = Registry::with_builtins()
        .build(
            &config,
            BuildContext {
                client_config: Some(kafka.client_config()),
                consumer: Some(Arc::new(handle.clone()) as Arc<dyn ConsumerControl>),
                restart: Some(restart),
                ..BuildContext::default()
            },
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed.load(Ordering::SeqCst) < 9 {
        assert!(
            Instant::now() < deadline,
            "not recovered: {:?}",
            handle.stats()
        );
        engine.tick().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until("the group to commit the end", || {
        handle.stats().commits > 0 && handle.stopped_on().is_none()
    })
    .await;

    // The dead letter reads like one the dead-letter layer wrote.
    let found = inspect(&kafka.client_config(), &dlq, 10).await.unwrap();
    assert_eq!(found.read, 1);
    let (record, info) = &found.sample[0];
    assert_eq!(info.format, Some(Format::KafkaOps(1)));
    assert_eq!(info.original_topic.as_deref(), Some(topic.as_str()));
    assert_eq!(
        (info.original_partition, info.original_offset),
        (Some(0), Some(4))
    );
    assert_eq!(info.group.as_deref(), Some(group.as_str()));
    assert_eq!(info.error_class, Some(ErrorClass::Permanent));
    assert_eq!(
        info.error_message.as_deref(),
        Some("amount \"x\" is not a number")
    );
    assert_eq!(info.instance_id.as_deref(), Some("kafka-ops-self-healing"));
    assert_eq!(record.key(), Some(&b"k4"[..]));
    assert_eq!(record.headers.get_str("trace-id").unwrap(), Some("t4"));

    // The fix is deployed; the replay puts it back home and the consumer takes it.
    fixed.store(true, Ordering::SeqCst);
    let report = Replay::new(dlq.as_str(), unique_name("fix"))
        .run(&kafka.client_config())
        .await
        .unwrap();
    assert_eq!(report.replayed, 1);
    wait_until("the replayed record to be processed", || {
        processed.load(Ordering::SeqCst) == 10
    })
    .await;
    let home = kafka.read_all(&topic).await.unwrap();
    assert_eq!(home.len(), 11);
    let back = &home[10];
    assert_eq!(back.key(), Some(&b"k4"[..]));
    assert_eq!(back.value(), Some(&b"amount=x"[..]));
    assert_eq!(back.headers.get_str("trace-id").unwrap(), Some("t4"));
    assert!(
        back.headers
            .iter()
            .all(|h| !h.key.starts_with("kafka-ops.dlt."))
    );
    handle.shutdown();
}
