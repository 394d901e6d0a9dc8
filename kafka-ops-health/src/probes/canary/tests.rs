//! The canary's verdicts on the real cluster, with the faults put between a round's writes and
//! its read: a copy of a canary record (a producer retrying without idempotence writes one),
//! and acknowledged records deleted before they are read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kafka_ops_core::testkit::{RealKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, OwnedRecord, Severity};
use serde_json::json;

use super::{CanaryProbe, RUN_HEADER, SEQUENCE_HEADER};
use crate::model::{HealthProbe, Status};

async fn canary_on_a_new_topic(prefix: &str) -> (RealKafka, String, CanaryProbe) {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name(prefix);
    kafka.create_topic(&topic, 1).await.unwrap();
    let probe = CanaryProbe::new(&kafka.client_config(), topic.clone()).unwrap();
    (kafka, topic, probe)
}

/// The canary record with sequence number `seq` in `topic`, as written.
async fn canary_record(kafka: &RealKafka, topic: &str, seq: u64) -> OwnedRecord {
    let seq = seq.to_string();
    kafka
        .read_all(topic)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.headers.get_str(SEQUENCE_HEADER).unwrap() == Some(seq.as_str()))
        .unwrap_or_else(|| panic!("no canary record {seq} in {topic}"))
}

/// `record` written again by another producer, its key, value and headers unchanged except
/// the run header when `run` names another.
fn copy_of(record: &OwnedRecord, run: Option<&str>) -> TestRecord {
    let mut copy = TestRecord::keyed(
        record.key.as_deref().unwrap().to_vec(),
        record.value.as_deref().unwrap().to_vec(),
    )
    .to_partition(record.partition);
    for header in record.headers.iter() {
        let value = match run {
            Some(run) if header.key == RUN_HEADER => run.as_bytes().to_vec(),
            _ => header.value.as_deref().unwrap().to_vec(),
        };
        copy = copy.header(header.key.to_string(), value);
    }
    copy
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_canary_record_is_a_duplicate() {
    let (kafka, topic, probe) = canary_on_a_new_topic("canary_copy").await;
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.details["duplicated"], json!([]));

    // The second round's middle record is written again, after it and before the read.
    let sent = probe.send().await.unwrap();
    assert_eq!(sent.expected, [3, 4, 5]);
    let original = canary_record(&kafka, &topic, 4).await;
    let written = kafka
        .produce(&topic, [copy_of(&original, None)])
        .await
        .unwrap();
    assert_eq!(
        written[0].1.get(),
        original.offset.get() + 2,
        "after the round"
    );
    let check = probe.read_back(sent).await.unwrap();
    assert_eq!(check.status, Status::Degraded, "{check:?}");
    assert_eq!(check.severity, Severity::Warning);
    assert_eq!(check.message, "1 canary records read twice");
    assert_eq!(check.details["duplicated"], json!([4]));
    assert_eq!(check.details["lost"], json!([]));

    // The same record under another run's id is another canary's, not a duplicate of ours.
    let sent = probe.send().await.unwrap();
    assert_eq!(sent.expected, [6, 7, 8]);
    let original = canary_record(&kafka, &topic, 7).await;
    kafka
        .produce(&topic, [copy_of(&original, Some("another-run"))])
        .await
        .unwrap();
    let check = probe.read_back(sent).await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.details["duplicated"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_records_deleted_before_the_read_are_lost() {
    let (kafka, topic, probe) = canary_on_a_new_topic("canary_loss").await;
    let cluster = kafka.cluster();

    // The round's first record is deleted once acknowledged: that one is lost, and only it.
    let sent = probe.send().await.unwrap();
    assert_eq!(
        (sent.expected.as_slice(), sent.from),
        ([0, 1, 2].as_slice(), 0)
    );
    let low = cluster
        .delete_records(&topic, &[(0, Offset::new(1).unwrap())])
        .await
        .unwrap();
    assert_eq!(low[&0].get(), 1);
    let check = probe.read_back(sent).await.unwrap();
    assert_eq!(check.status, Status::Unhealthy, "{check:?}");
    assert_eq!(check.severity, Severity::Critical);
    assert_eq!(
        check.message,
        "1 of 3 canary records acknowledged but not read back"
    );
    assert_eq!(check.details["lost"], json!([0]));
    assert_eq!(check.details["duplicated"], json!([]));

    // A whole round deleted: every record of it is lost.
    let sent = probe.send().await.unwrap();
    assert_eq!(
        (sent.expected.as_slice(), sent.from),
        ([3, 4, 5].as_slice(), 3)
    );
    cluster
        .delete_records(&topic, &[(0, Offset::new(6).unwrap())])
        .await
        .unwrap();
    let check = probe.read_back(sent).await.unwrap();
    assert_eq!(check.status, Status::Unhealthy, "{check:?}");
    assert_eq!(
        check.message,
        "3 of 3 canary records acknowledged but not read back"
    );
    assert_eq!(check.details["lost"], json!([3, 4, 5]));

    // Nothing deleted: the next round is whole again.
    let check = probe.check().await.unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    assert_eq!(check.details["lost"], json!([]));
}
