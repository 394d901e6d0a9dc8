//! Notifications posted as JSON to a URL (Slack-compatible).

use async_trait::async_trait;
use kafka_ops_core::Severity;

use super::{Notification, Notifier};
use crate::error::RecoveryError;

/// Posts notifications as JSON to a URL. The body carries Slack's `text` field (so a Slack
/// incoming webhook shows it as is) next to the structured fields.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, each request bounded by `timeout` (positive).
    pub fn new(
        url: impl Into<String>,
        timeout: std::time::Duration,
    ) -> Result<Self, RecoveryError> {
        let url = url.into();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(RecoveryError::Config(format!(
                "webhook url must be http(s): {url:?}"
            )));
        }
        // A zero timeout fails every request before the endpoint can answer: nobody would
        // ever be told.
        if timeout.is_zero() {
            return Err(RecoveryError::Config(
                "webhook timeout must be positive".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RecoveryError::Notify {
                notifier: "webhook".into(),
                source: Box::new(e),
            })?;
        Ok(WebhookNotifier { client, url })
    }

    /// The JSON body for `notification`.
    pub fn body(n: &Notification) -> serde_json::Value {
        let icon = match n.level {
            Severity::Info => ":information_source:",
            Severity::Warning => ":warning:",
            Severity::Critical => ":rotating_light:",
        };
        serde_json::json!({
            "text": format!("{icon} *{}* [{}]\n{}", n.title, n.level, n.text),
            "level": n.level,
            "title": n.title,
            "anomaly": n.anomaly,
            "monitor": n.monitor,
            "time": n.time,
            "details": n.text,
        })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn notify(&self, n: &Notification) -> Result<(), RecoveryError> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| RecoveryError::Notify {
            notifier: "webhook".into(),
            source: e,
        };
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(Self::body(n).to_string())
            .send()
            .await
            .map_err(|e| failed(Box::new(e)))?;
        if !response.status().is_success() {
            return Err(failed(
                format!("the webhook answered {}", response.status()).into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_needs_time_to_be_answered() {
        // A zero timeout fails every notification before the endpoint can answer.
        let error =
            WebhookNotifier::new("https://hooks.example.com/T0", Duration::ZERO).unwrap_err();
        assert!(
            matches!(&error, RecoveryError::Config(m) if m.contains("timeout")),
            "{error}"
        );
        assert!(
            WebhookNotifier::new("https://hooks.example.com/T0", Duration::from_secs(1)).is_ok()
        );
    }
}
