//! DeleteRecords: the one write to a topic's log the cluster client makes.

use std::collections::BTreeMap;

use rdkafka::admin::AdminOptions;

use super::KafkaCluster;
use crate::class::KafkaCode;
use crate::error::Error;
use crate::kafka::{add_at_offset, kafka_code, kafka_error};
use crate::types::Offset;

impl KafkaCluster {
    /// Deletes the records of `topic` before each `(partition, before)` (Kafka's DeleteRecords:
    /// the partition's low watermark moves up to `before`) and returns the new low watermarks.
    ///
    /// Within the client's request bound; past it, [`Error::Timeout`] — the broker may have
    /// deleted the records or not. A broker that cannot delete records answers with
    /// [`KafkaCode::UNSUPPORTED_FEATURE`] or [`KafkaCode::UNSUPPORTED_VERSION`]; a partition
    /// the broker refused is an [`Error::Broker`] naming it.
    pub async fn delete_records(
        &self,
        topic: &str,
        before: &[(i32, Offset)],
    ) -> Result<BTreeMap<i32, Offset>, Error> {
        if before.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut list = rdkafka::TopicPartitionList::with_capacity(before.len());
        for (partition, offset) in before {
            add_at_offset(&mut list, topic, *partition, offset.get())
                .map_err(|e| kafka_error("delete records", e))?;
        }
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        let answer = tokio::time::timeout(
            self.timeout * 2,
            self.admin().delete_records(&list, &options),
        )
        .await
        .map_err(|_| Error::Timeout {
            operation: "delete records",
            timeout: self.timeout * 2,
        })?
        .map_err(|e| kafka_error("delete records", e))?;
        let mut low_watermarks = BTreeMap::new();
        for element in answer.elements() {
            if let Err(error) = element.error() {
                return Err(Error::Broker {
                    operation: "delete records",
                    code: kafka_code(&error).unwrap_or(KafkaCode(-1)),
                    message: format!("{topic}/{}: {error}", element.partition()),
                });
            }
            if let Some(low) = element
                .offset()
                .to_raw()
                .and_then(|raw| Offset::new(raw).ok())
            {
                low_watermarks.insert(element.partition(), low);
            }
        }
        Ok(low_watermarks)
    }
}
