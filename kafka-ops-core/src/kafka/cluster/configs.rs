//! [`ConfigQuery`] on librdkafka's DescribeConfigs, each resource's refusal read as its own
//! error.

use super::{KafkaCluster, no_answer};
use crate::cluster::{ConfigEntries, ConfigQuery, PartitionError, TopicConfigs};
use crate::error::Error;
use crate::ffi::{self, ConfigResource};

use async_trait::async_trait;

/// Why a resource answered without error yet with no setting at all. A broker describes every
/// setting of what it describes, defaults included, so none is taken for a refusal.
const NO_CONFIGURATION: &str = "the answer holds no configuration for it";

/// `answer` as the caller gets it: an empty configuration is an error too.
fn checked(answer: ffi::ConfigAnswer) -> Result<ConfigEntries, PartitionError> {
    match answer {
        Ok(entries) if entries.is_empty() => Err(PartitionError {
            code: None,
            reason: NO_CONFIGURATION.into(),
        }),
        other => other,
    }
}

#[async_trait]
impl ConfigQuery for KafkaCluster {
    async fn topic_configs(&self, topics: &[String]) -> Result<TopicConfigs, Error> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let topics = topics.to_vec();
        self.blocking(move |inner| {
            let resources: Vec<ConfigResource<'_>> = topics
                .iter()
                .map(|topic| ConfigResource::Topic(topic))
                .collect();
            let answers = ffi::describe_configs(inner.admin.inner(), &resources, inner.timeout)?;
            // One answer per resource, in their order.
            Ok(topics
                .iter()
                .cloned()
                .zip(answers.into_iter().map(checked))
                .collect())
        })
        .await
    }

    async fn broker_config(&self, id: i32) -> Result<ConfigEntries, Error> {
        const OPERATION: &str = "describe broker config";
        self.blocking(move |inner| {
            let answers = ffi::describe_configs(
                inner.admin.inner(),
                &[ConfigResource::Broker(id)],
                inner.timeout,
            )?;
            answers
                .into_iter()
                .next()
                .map_or_else(|| Err(no_answer()), checked)
                .map_err(|refused| Error::Kafka {
                    operation: OPERATION,
                    code: refused.code,
                    source: format!("broker {id}: {}", refused.reason).into(),
                })
        })
        .await
    }
}
