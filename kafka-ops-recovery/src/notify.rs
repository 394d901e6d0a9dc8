//! Notifiers: how the engine tells people — the log, a webhook (Slack-compatible JSON), e-mail.

use std::fmt;

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
                tracing::info!(anomaly = %n.anomaly, title = %n.title, "{}", n.text)
            }
            Severity::Warning => {
                tracing::warn!(anomaly = %n.anomaly, title = %n.title, "{}", n.text)
            }
            Severity::Critical => {
                tracing::error!(anomaly = %n.anomaly, title = %n.title, "{}", n.text)
            }
        }
        Ok(())
    }
}

/// Posts notifications as JSON to a URL. The body carries Slack's `text` field (so a Slack
/// incoming webhook shows it as is) next to the structured fields.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, each request bounded by `timeout`.
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

/// E-mail notifications over SMTP (feature `smtp`).
#[cfg(feature = "smtp")]
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

#[cfg(feature = "smtp")]
impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How an SMTP notifier reaches its server.
#[cfg(feature = "smtp")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// `plain` (loopback relays only), `starttls` or `tls`.
    #[serde(default = "default_security")]
    pub security: String,
    /// Login user, when the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Login password (never printed).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

#[cfg(feature = "smtp")]
fn default_security() -> String {
    "starttls".into()
}

#[cfg(feature = "smtp")]
impl SmtpNotifier {
    /// A notifier for `settings`.
    pub fn new(settings: &SmtpSettings) -> Result<Self, RecoveryError> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{AsyncSmtpTransport, Tokio1Executor};
        let config =
            |what: &str, e: &dyn fmt::Display| RecoveryError::Config(format!("smtp {what}: {e}"));
        let mut builder = match settings.security.as_str() {
            "plain" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                .map_err(|e| config("host", &e))?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| config("host", &e))?,
            other => {
                return Err(config(
                    "security",
                    &format!("{other:?} is not plain, starttls or tls"),
                ));
            }
        }
        .port(settings.port)
        .timeout(Some(std::time::Duration::from_secs(15)));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = settings.from.parse().map_err(|e| config("from", &e))?;
        if settings.to.is_empty() {
            return Err(RecoveryError::Config(
                "smtp to: at least one recipient".into(),
            ));
        }
        let to = settings
            .to
            .iter()
            .map(|a| a.parse().map_err(|e| config("to", &e)))
            .collect::<Result<_, _>>()?;
        Ok(SmtpNotifier {
            transport: builder.build(),
            from,
            to,
        })
    }
}

#[cfg(feature = "smtp")]
#[async_trait]
impl Notifier for SmtpNotifier {
    fn name(&self) -> &str {
        "smtp"
    }

    async fn notify(&self, n: &Notification) -> Result<(), RecoveryError> {
        use lettre::AsyncTransport;
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| RecoveryError::Notify {
            notifier: "smtp".into(),
            source: e,
        };
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(format!("[{}] {}", n.level, n.title));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(format!(
                "{}\n\nanomaly: {}\ntime: {}\n",
                n.text, n.anomaly, n.time
            ))
            .map_err(|e| failed(Box::new(e)))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| failed(Box::new(e)))?;
        Ok(())
    }
}
