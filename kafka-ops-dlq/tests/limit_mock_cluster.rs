//! The dead-letter limit against librdkafka's mock cluster: a handler that starts failing every
//! record from some offset on routes records until the limit, then the consumer stops with
//! `DlqError::LimitReached` on the next one; the dead-letter topic holds exactly the routed
//! records and the group's committed offset is right after the last of them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use kafka_ops_core::dead_letter::{Envelope, headers};
use kafka_ops_core::handler::{Disposition, HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Error, ErrorClass, Record};
use kafka_ops_dlq::limit::{DeadLetterLimit, LimitBreach};
use kafka_ops_dlq::{DeadLetterLayer, DlqError};

const RECORDS: i64 = 60;

/// Runs a consumer over a one-partition topic of `RECORDS` records whose handler fails the
/// records `fails` accepts, with the dead-letter layer under `limit`. Returns the run's error,
/// the original offsets found in the dead-letter topic, and the committed offset.
async fn run_until_stopped(
    limit: DeadLetterLimit,
    fails: fn(i64) -> bool,
) -> (Error, Vec<i64>, Option<i64>) {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("orders");
    let group = unique_name("billing");
    kafka.create_topic(&topic, 1).unwrap();
    kafka.create_topic(&format!("{topic}.dlq"), 1).unwrap();
    let records = (0..RECORDS).map(|i| TestRecord::keyed(format!("k{i}"), "order"));
    kafka.produce(&topic, records).await.unwrap();

    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let layer = DeadLetterLayer::new(sink, Envelope::new(&group, "test-instance"))
        .limit(limit)
        .unwrap();
    let handler =
        HandlerBuilder::new()
            .layer(layer)
            .handler(handler_fn(move |record: &Record<'_>| {
                let fail = fails(record.offset.get());
                async move {
                    if fail {
                        Err(HandlerError::permanent(std::io::Error::other(
                            "schema changed: cannot parse the order",
                        )))
                    } else {
                        Ok(Outcome::Processed)
                    }
                }
            }));
    let mut config = DriverConfig::new([topic.as_str()]);
    config.commit_interval = Duration::from_millis(100);
    let driver = Driver::new(kafka.consumer_config(&group), config, handler);
    let run = tokio::time::timeout(Duration::from_secs(60), driver.run())
        .await
        .expect("the consumer stops within a minute");
    let error = run.expect_err("the consumer stops on the limit");

    let mut routed = Vec::new();
    for letter in kafka.read_all(&format!("{topic}.dlq")).await.unwrap() {
        let info = headers::parse(&letter.headers);
        assert_eq!(info.original_topic.as_deref(), Some(topic.as_str()));
        routed.push(info.original_offset.unwrap());
    }
    let committed = kafka.committed(&group, &topic, 1).await.unwrap()[0];
    (error, routed, committed)
}

/// The limit error inside the driver's error, with the offset the driver stopped at.
fn limit_error(error: &Error) -> (i64, &DlqError) {
    let Error::Handler { offset, source, .. } = error else {
        panic!("not a handler error: {error}");
    };
    assert_eq!(source.class(), ErrorClass::Fatal);
    assert_eq!(source.disposition(), Disposition::Stop);
    let limit = source
        .downcast_ref::<DlqError>()
        .expect("a dead-letter error");
    (*offset, limit)
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_every_record_stops_after_the_consecutive_limit() {
    // One isolated failure at 7 (routed; the next record ends the run), then from 20 on every
    // record fails: 20..=24 are routed, 25 is refused.
    let limit = DeadLetterLimit::default().consecutive(5);
    let (error, routed, committed) = run_until_stopped(limit, |o| o == 7 || o >= 20).await;
    let (offset, limit) = limit_error(&error);
    assert_eq!(offset, 25);
    match limit {
        DlqError::LimitReached {
            offset,
            breach: LimitBreach::Consecutive { max: 5 },
            failure,
            ..
        } => {
            assert_eq!(offset.get(), 25);
            assert_eq!(failure.class(), ErrorClass::Permanent);
        }
        other => panic!("not the consecutive limit: {other}"),
    }
    assert_eq!(routed, vec![7, 20, 21, 22, 23, 24]);
    assert_eq!(committed, Some(25), "right after the last routed record");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_every_record_stops_at_the_ratio_limit() {
    // Ten good records, then every record fails. With at most half of the window's records
    // dead-lettered (judged from 10 records on), the record at 10 + k would make k + 1 dead
    // letters among 11 + k records: allowed up to k = 9, refused at k = 10 (11 of 21).
    let limit = DeadLetterLimit::ratio(0.5, Duration::from_secs(600)).min_records(10);
    let (error, routed, committed) = run_until_stopped(limit, |o| o >= 10).await;
    let (offset, limit) = limit_error(&error);
    assert_eq!(offset, 20);
    assert!(
        matches!(
            limit,
            DlqError::LimitReached {
                breach: LimitBreach::Ratio {
                    dead_lettered: 11,
                    records: 21,
                    ..
                },
                ..
            }
        ),
        "{limit}"
    );
    assert_eq!(routed, (10..20).collect::<Vec<_>>());
    assert_eq!(committed, Some(20));
}
