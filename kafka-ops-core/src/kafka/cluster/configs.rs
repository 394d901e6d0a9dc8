//! [`ConfigQuery`] on librdkafka's DescribeConfigs.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaCluster, no_answer};
use crate::class::KafkaCode;
use crate::cluster::{ConfigEntries, ConfigQuery, PartitionError, TopicConfigs};
use crate::error::Error;
use crate::kafka::kafka_error;

/// Why a resource answered with no configuration at all. A broker describes every setting of a
/// resource it describes, defaults included; none means it refused (not authorized, say) — the
/// Rust binding reads no per-resource error, so the refusal arrives as an empty resource.
const NO_CONFIGURATION: &str =
    "the answer holds no configuration for it (the broker refused to describe it)";

fn config_entries(resource: &rdkafka::admin::ConfigResource) -> ConfigEntries {
    resource
        .entries
        .iter()
        .map(|entry| {
            let value = if entry.is_sensitive {
                None
            } else {
                entry.value.clone()
            };
            (entry.name.clone(), value)
        })
        .collect()
}

impl KafkaCluster {
    async fn describe_configs(
        &self,
        operation: &'static str,
        resources: &[ResourceSpecifier<'_>],
    ) -> Result<Vec<rdkafka::admin::ConfigResourceResult>, Error> {
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        match tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.shared.admin.describe_configs(resources, &options),
        )
        .await
        {
            Ok(result) => result.map_err(|e| {
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::UnsupportedFeature)
                ) {
                    Error::Unsupported {
                        operation,
                        reason: e.to_string(),
                    }
                } else {
                    kafka_error(operation, e)
                }
            }),
            Err(_) => Err(Error::Timeout {
                operation,
                timeout: self.timeout,
            }),
        }
    }
}

#[async_trait]
impl ConfigQuery for KafkaCluster {
    async fn topic_configs(&self, topics: &[String]) -> Result<TopicConfigs, Error> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let resources: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(t.as_str()))
            .collect();
        let answers = self
            .describe_configs("describe topic configs", &resources)
            .await?;
        let mut by_topic: HashMap<String, Result<ConfigEntries, PartitionError>> = HashMap::new();
        for (topic, answer) in topics.iter().zip(answers) {
            let entry = match answer {
                Ok(resource) if resource.entries.is_empty() => Err(PartitionError {
                    code: None,
                    reason: NO_CONFIGURATION.into(),
                }),
                Ok(resource) => Ok(config_entries(&resource)),
                Err(code) => Err(PartitionError::from_code(KafkaCode(code as i32))),
            };
            by_topic.insert(topic.clone(), entry);
        }
        Ok(topics
            .iter()
            .map(|t| {
                let answer = by_topic.remove(t).unwrap_or_else(|| Err(no_answer()));
                (t.clone(), answer)
            })
            .collect())
    }

    async fn broker_config(&self, id: i32) -> Result<ConfigEntries, Error> {
        // librdkafka sends a broker resource to that broker, one broker per request.
        let answers = self
            .describe_configs("describe broker config", &[ResourceSpecifier::Broker(id)])
            .await?;
        match answers.into_iter().next() {
            Some(Ok(resource)) if resource.entries.is_empty() => Err(Error::Kafka {
                operation: "describe broker config",
                code: None,
                source: format!("broker {id}: {NO_CONFIGURATION}").into(),
            }),
            Some(Ok(resource)) => Ok(config_entries(&resource)),
            Some(Err(code)) => Err(Error::Broker {
                operation: "describe broker config",
                code: KafkaCode(code as i32),
                message: format!("broker {id}"),
            }),
            None => Err(Error::Broker {
                operation: "describe broker config",
                code: KafkaCode(-1),
                message: format!("no answer for broker {id}"),
            }),
        }
    }
}
