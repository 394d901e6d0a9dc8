//! Selection, partitioning and the note protocol, without a cluster.
#![allow(clippy::unwrap_used)]
use kafka_ops_core::{Offset, RecordTimestamp};

use super::partitioner::{murmur2, target_partition};
use super::*;
use kafka_ops_core::OwnedRecord;
use kafka_ops_core::dead_letter::headers;

use crate::inspect::fingerprint;

#[test]
fn murmur2_matches_kafkas_partitioner() {
    // Values from the Java client's `Utils.murmur2` test vectors and its partitioner.
    assert_eq!(murmur2(b"21") as i32, -973_932_308);
    assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
    assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
    assert_eq!(
        murmur2(b"a-little-bit-longer-string") as i32,
        -1_486_304_829
    );
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
        -58_897_971
    );
    assert_eq!(murmur2(b"abc") as i32, 479_470_107);
}

fn letter(offset: i64) -> OwnedRecord {
    Record::new("orders.dlq", 0, Offset::new(offset).unwrap())
        .with_key(b"k".to_vec())
        .with_value(b"v".to_vec())
        .with_timestamp(RecordTimestamp::CreateTime(Timestamp::from_millis(5_000)))
}

use kafka_ops_core::Record;

fn info() -> DeadLetterInfo {
    DeadLetterInfo {
        format: Some(headers::Format::KafkaOps(1)),
        original_topic: Some("orders".into()),
        original_partition: Some(4),
        error_class: Some(ErrorClass::Permanent),
        error_message: Some("amount 12 is negative".into()),
        last_failure: Some(Timestamp::from_millis(2_000)),
        ..DeadLetterInfo::default()
    }
}

#[test]
fn every_criterion_must_hold() {
    let record = letter(1).with_header("tenant", b"acme".to_vec());
    let all = Selection::default();
    assert!(all.matches(&record, &info()));
    let by = |selection: Selection| selection.matches(&record, &info());
    assert!(by(Selection {
        original_topic: Some("orders".into()),
        error_class: Some(ErrorClass::Permanent),
        fingerprint: Some(fingerprint("amount 99 is negative")),
        since: Some(Timestamp::from_millis(2_000)),
        until: Some(Timestamp::from_millis(2_001)),
        header: Some(HeaderMatch::parse("tenant=acme")),
    }));
    assert!(!by(Selection {
        original_topic: Some("refunds".into()),
        ..Selection::default()
    }));
    assert!(!by(Selection {
        error_class: Some(ErrorClass::Transient),
        ..Selection::default()
    }));
    assert!(!by(Selection {
        fingerprint: Some(fingerprint("unknown currency")),
        ..Selection::default()
    }));
    assert!(!by(Selection {
        since: Some(Timestamp::from_millis(2_001)),
        ..Selection::default()
    }));
    assert!(!by(Selection {
        until: Some(Timestamp::from_millis(2_000)),
        ..Selection::default()
    }));
    assert!(!by(Selection {
        header: Some(HeaderMatch::parse("tenant=other")),
        ..Selection::default()
    }));
    assert!(by(Selection {
        header: Some(HeaderMatch::parse("tenant")),
        ..Selection::default()
    }));
    // Without a failure time the dead letter's own timestamp is used.
    let no_time = DeadLetterInfo {
        last_failure: None,
        ..info()
    };
    assert!(
        Selection {
            since: Some(Timestamp::from_millis(5_000)),
            ..Selection::default()
        }
        .matches(&record, &no_time)
    );
}

/// Karafka's headers carry no error message: inspect shows such records under the
/// fingerprint of its `<no message>` stand-in, and that fingerprint selects them.
#[test]
fn the_fingerprint_inspect_shows_for_a_letter_without_a_message_selects_it() {
    let record = letter(1);
    let karafka = DeadLetterInfo {
        format: Some(headers::Format::Karafka),
        error_class: None,
        error_message: None,
        ..info()
    };
    let mut patterns = crate::inspect::Patterns::default();
    patterns.add_info(&karafka, None);
    let shown = patterns.into_sorted().remove(0).fingerprint;
    let by_shown = Selection {
        fingerprint: Some(shown),
        ..Selection::default()
    };
    assert!(by_shown.matches(&record, &karafka));
    // It is that pattern's alone: a letter with a message does not match it.
    assert!(!by_shown.matches(&record, &info()));
}

#[test]
fn target_partition_keeps_the_original_else_hashes_the_key() {
    assert_eq!(target_partition(&letter(1), &info(), 6), 4);
    let elsewhere = DeadLetterInfo {
        original_partition: Some(9),
        ..info()
    };
    let by_key = target_partition(&letter(1), &elsewhere, 6);
    assert_eq!(by_key, ((murmur2(b"k") & 0x7fff_ffff) % 6) as i32);
    let keyless = Record::new("orders.dlq", 0, Offset::new(7).unwrap());
    assert_eq!(target_partition(&keyless, &elsewhere, 6), 1);
}

#[test]
fn destinations_are_guarded() {
    let into_itself = Replay::new("orders.dlq", "r1")
        .to(Destination::Topic("orders.dlq".into()))
        .allow("orders.dlq");
    assert!(matches!(into_itself.validate(), Err(DlqError::Refused(_))));
    let not_allowed = Replay::new("orders.dlq", "r1").to(Destination::Topic("audit".into()));
    assert!(matches!(not_allowed.validate(), Err(DlqError::Refused(_))));
    let allowed = not_allowed.allow("audit");
    assert!(allowed.validate().is_ok());
    assert!(Replay::new("orders.dlq", "").validate().is_err());
    assert!(
        Replay::new("orders.dlq", "r1")
            .rate_limit(0.0, 1)
            .validate()
            .is_err()
    );
}

#[test]
fn progress_rate_and_eta() {
    let progress = ReplayProgress {
        scanned: 50,
        total: 150,
        replayed: 40,
        elapsed: Duration::from_secs(5),
    };
    assert!((progress.rate() - 10.0).abs() < 1e-9);
    assert_eq!(progress.eta(), Some(Duration::from_secs(10)));
}
