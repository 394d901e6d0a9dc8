//! Notifiers: how the engine tells people — the log, a webhook (Slack-compatible JSON, feature
//! `webhook`), e-mail (feature `smtp`).

use async_trait::async_trait;
use kafka_ops_core::{Severity, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::RecoveryError;

/// What a notifier sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Urgency.
    pub level: Severity,
    /// A short title.
    pub title: String,
    /// The whole story.
    pub text: String,
    /// The anomaly's key.
    pub anomaly: String,
    /// The monitor that saw it (one key may come from several monitors).
    #[serde(default)]
    pub monitor: String,
    /// When.
    pub time: Timestamp,
}

/// Sends notifications somewhere.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Its name (config, audit trail).
    fn name(&self) -> &str;
    /// Sends one notification; returns after it was accepted.
    async fn notify(&self, notification: &Notification) -> Result<(), RecoveryError>;
}

/// Writes notifications to the log through `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    fn name(&self) -> &str {
        "log"
    }

    async fn notify(&self, n: &Notification) -> Result<(), RecoveryError> {
        match n.level {
            Severity::Info => {
                tracing::info!(anomaly = %n.anomaly, monitor = %n.monitor, title = %n.title, "{}", n.text)
            }
            Severity::Warning => {
                tracing::warn!(anomaly = %n.anomaly, monitor = %n.monitor, title = %n.title, "{}", n.text)
            }
            Severity::Critical => {
                tracing::error!(anomaly = %n.anomaly, monitor = %n.monitor, title = %n.title, "{}", n.text)
            }
        }
        Ok(())
    }
}

#[cfg(feature = "smtp")]
mod smtp;
#[cfg(feature = "webhook")]
mod webhook;

#[cfg(feature = "smtp")]
pub use smtp::{SmtpNotifier, SmtpSettings};
#[cfg(feature = "webhook")]
pub use webhook::WebhookNotifier;
