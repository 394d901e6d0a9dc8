//! E-mail notifications over SMTP.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Notification, Notifier};
use crate::error::RecoveryError;

/// E-mail notifications over SMTP (feature `smtp`).
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

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

fn default_security() -> String {
    "starttls".into()
}

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
        // Half a login would quietly send without authenticating: a server that needs it
        // refuses every mail, and the mistake shows only when someone must be told.
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            (Some(_), None) => {
                return Err(RecoveryError::Config(
                    "smtp password: a username is given without a password".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(RecoveryError::Config(
                    "smtp username: a password is given without a username".into(),
                ));
            }
            (None, None) => {}
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
                "{}\n\nanomaly: {}\nmonitor: {}\ntime: {}\n",
                n.text, n.anomaly, n.monitor, n.time
            ))
            .map_err(|e| failed(Box::new(e)))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| failed(Box::new(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(username: Option<&str>, password: Option<&str>) -> SmtpSettings {
        SmtpSettings {
            host: "smtp.example.com".into(),
            port: 587,
            security: "starttls".into(),
            username: username.map(Into::into),
            password: password.map(Into::into),
            from: "kafka-ops@example.com".into(),
            to: vec!["oncall@example.com".into()],
        }
    }

    #[tokio::test]
    async fn a_login_needs_both_a_username_and_a_password() {
        // Half a login would silently send without authenticating.
        let error = SmtpNotifier::new(&settings(Some("kafka-ops"), None)).unwrap_err();
        assert!(
            matches!(&error, RecoveryError::Config(m) if m.contains("password")),
            "{error}"
        );
        let error = SmtpNotifier::new(&settings(None, Some("secret"))).unwrap_err();
        assert!(
            matches!(&error, RecoveryError::Config(m) if m.contains("username")),
            "{error}"
        );
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(SmtpNotifier::new(&settings(Some("kafka-ops"), Some("secret"))).is_ok());
        assert!(SmtpNotifier::new(&settings(None, None)).is_ok());
    }
}
