//! Building dead letters: bytes kept, provenance added, sizes enforced.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::dead_letter::headers::{Format, names, parse};
use crate::{ErrorClass, ManualClock, Offset};

fn envelope() -> Envelope {
    Envelope {
        clock: Arc::new(ManualClock::at(Timestamp::from_millis(5_000))),
        ..Envelope::new("billing", "billing-1")
    }
}

fn record() -> Record<'static> {
    Record::new("orders", 2, Offset::new(41).unwrap())
        .with_key(b"k1".to_vec())
        .with_value(vec![0xff, 0x00, 0xfe])
        .with_header("traceparent", b"00-1".to_vec())
        .with_timestamp(RecordTimestamp::CreateTime(Timestamp::from_millis(1_000)))
}

#[derive(Debug, thiserror::Error)]
#[error("bad amount")]
struct BadAmount(#[source] std::num::ParseIntError);

fn failure() -> HandlerError {
    HandlerError::permanent(BadAmount("x".parse::<i64>().unwrap_err()))
}

#[test]
fn keeps_the_bytes_and_adds_provenance() {
    let letter = envelope().build(&record(), &failure(), Some(4)).unwrap();
    assert_eq!(letter.topic, "orders.dlq");
    assert_eq!(letter.partition, Some(2));
    assert_eq!(letter.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(letter.value.as_deref(), Some(&[0xff, 0x00, 0xfe][..]));
    assert_eq!(letter.timestamp, Some(Timestamp::from_millis(1_000)));
    assert_eq!(letter.headers.get_bytes("traceparent"), Some(&b"00-1"[..]));
    let info = parse(&letter.headers);
    assert_eq!(info.format, Some(Format::KafkaOps(1)));
    assert_eq!(info.original_topic.as_deref(), Some("orders"));
    assert_eq!(
        (info.original_partition, info.original_offset),
        (Some(2), Some(41))
    );
    assert_eq!(info.error_class, Some(ErrorClass::Permanent));
    assert_eq!(info.error_message.as_deref(), Some("bad amount"));
    assert_eq!(
        info.cause_chain,
        vec![
            "bad amount".to_string(),
            "invalid digit found in string".to_string()
        ]
    );
    assert_eq!(info.attempts, Some(1));
    assert_eq!(info.first_failure, Some(Timestamp::from_millis(5_000)));
    assert_eq!(info.group.as_deref(), Some("billing"));
}

#[test]
fn tombstones_and_null_keys_stay_null() {
    let letter = envelope()
        .build(&Record::new("orders", 0, Offset::ZERO), &failure(), None)
        .unwrap();
    assert_eq!(
        (letter.key, letter.value, letter.partition),
        (None, None, None)
    );
}

#[test]
fn partitions_same_when_present_else_by_key() {
    let s = PartitionStrategy::SameOrByKey;
    assert_eq!(s.choose(3, Some(4)), Some(3));
    assert_eq!(s.choose(4, Some(4)), None);
    assert_eq!(s.choose(0, None), None);
    assert_eq!(PartitionStrategy::ByKey.choose(0, Some(4)), None);
    assert_eq!(TopicNaming::spring().target("orders"), "orders-dlt");
    assert_eq!(TopicNaming::Fixed("all.dlq".into()).target("x"), "all.dlq");
    let custom = TopicNaming::Custom(Arc::new(|t: &str| format!("dlq.{t}")));
    assert_eq!(custom.target("orders"), "dlq.orders");
}

#[test]
fn attempts_carried_in_headers_saturate_instead_of_overflowing() {
    let first = envelope().build(&record(), &failure(), None).unwrap();
    let mut again = record();
    again.headers = first.headers.clone();
    again.headers.remove_where(|key| key == names::ATTEMPTS);
    again
        .headers
        .push(names::ATTEMPTS, Some(u32::MAX.to_string().into_bytes()));
    let second = envelope()
        .build(&again, &failure().with_attempts(2), None)
        .unwrap();
    assert_eq!(parse(&second.headers).attempts, Some(u32::MAX));
}

#[test]
fn a_second_failure_keeps_the_first_time_and_adds_attempts() {
    let first = envelope()
        .build(&record(), &failure().with_attempts(3), None)
        .unwrap();
    let mut replayed = record();
    replayed.headers = first.headers.clone();
    let later = Envelope {
        clock: Arc::new(ManualClock::at(Timestamp::from_millis(9_000))),
        ..envelope()
    };
    let second = later
        .build(&replayed, &failure().with_attempts(2), None)
        .unwrap();
    let info = parse(&second.headers);
    assert_eq!(info.attempts, Some(5));
    assert_eq!(info.first_failure, Some(Timestamp::from_millis(5_000)));
    assert_eq!(info.last_failure, Some(Timestamp::from_millis(9_000)));
    assert_eq!(second.headers.get_all(names::GROUP).count(), 1);
}

#[test]
fn the_cause_chain_can_be_turned_off() {
    let quiet = Envelope {
        causes: CausePolicy {
            max_causes: 0,
            max_message_bytes: 4_096,
        },
        ..envelope()
    };
    let letter = quiet.build(&record(), &failure(), None).unwrap();
    assert!(letter.headers.get(names::CAUSE_CHAIN).is_none());
}

#[test]
fn oversize_drops_causes_then_truncates_the_value_then_refuses() {
    let small = Envelope {
        max_record_bytes: 2_000,
        ..envelope()
    };
    // Fits once the cause chain is gone.
    let long_cause = HandlerError::permanent(std::io::Error::other("c".repeat(1_200)));
    let letter = small.build(&record(), &long_cause, None).unwrap();
    assert!(letter.headers.get(names::CAUSE_CHAIN).is_none());
    assert_eq!(letter.truncated_from, None);
    assert!(letter.size() <= 2_000);

    // Needs the value cut: size and digest recorded.
    let big = record().with_value(vec![7_u8; 10_000]);
    let letter = small.build(&big, &failure(), None).unwrap();
    assert_eq!(letter.truncated_from, Some(10_000));
    assert!(letter.size() <= 2_000, "{}", letter.size());
    let info = parse(&letter.headers);
    assert_eq!(info.truncated_value_size, Some(10_000));
    assert_eq!(
        info.value_digest,
        Some(format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(&[7_u8; 10_000])
        ))
    );

    // A key alone over the limit: refused, with the numbers.
    let huge_key = record().with_key(vec![1_u8; 5_000]);
    match small.build(&huge_key, &failure(), None) {
        Err(Error::Oversize {
            size,
            limit,
            offset,
            ..
        }) => {
            assert!(size > limit);
            assert_eq!((limit, offset), (2_000, 41));
        }
        other => panic!("{other:?}"),
    }
}
