//! The range reader's saved positions against librdkafka's mock cluster, where a broker's
//! per-partition error can be had on demand (it answers an OffsetFetch for a partition it does
//! not have with `UNKNOWN_TOPIC_OR_PARTITION`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::kafka::RangeReader;
use kafka_ops_core::testkit::{MockKafka, unique_name};
use kafka_ops_core::{KafkaCode, Offset};

/// A partition answered with an error fails the read of saved positions: left out, it read as
/// "never saved", and a resumed replay started it over or, past the others, skipped it.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_position_answered_with_an_error_fails_the_read() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("saved");
    kafka.create_topic(&topic, 2).unwrap();
    let (config, name) = (kafka.client_config(), topic.clone());
    tokio::task::spawn_blocking(move || {
        let reader = RangeReader::with_group(&config, &unique_name("replay")).unwrap();
        let saved = (0, Offset::new(7).unwrap(), "run-1".to_string());
        reader.commit(&name, std::slice::from_ref(&saved)).unwrap();
        // Partition 1 was never saved: left out, not an error (a fresh replay starts so).
        assert_eq!(reader.committed(&name, 2).unwrap(), [saved]);

        // Partitions 2 and 3 are not there: the broker answers each with an error.
        let error = reader.committed(&name, 4).unwrap_err();
        assert_eq!(
            error.code(),
            Some(KafkaCode::UNKNOWN_TOPIC_OR_PARTITION),
            "{error}"
        );
        assert!(error.to_string().contains(&format!("{name}/2")), "{error}");
    })
    .await
    .unwrap();
}
