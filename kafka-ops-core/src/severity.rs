//! The runbooks' three alert levels, shared by lag verdicts, health checks and notifications.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How urgent something is, from least to most: the runbooks' "OK / WARNING / CRITICAL".
///
/// ```
/// use kafka_ops_core::Severity;
///
/// let worst = [Severity::Info, Severity::Critical, Severity::Warning]
///     .into_iter()
///     .max()
///     .unwrap();
/// assert_eq!(worst, Severity::Critical);
/// assert_eq!(worst.exit_code(), 2);
/// assert_eq!("ok".parse::<Severity>().unwrap(), Severity::Info);
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing to do ("ok" in the runbooks' lag scripts).
    #[default]
    #[serde(alias = "ok")]
    Info,
    /// Look at it today.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// Lower-case name: `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The word the runbooks' lag scripts print: `ok`, `warning` or `critical`.
    pub fn status_word(self) -> &'static str {
        match self {
            Severity::Info => "ok",
            other => other.as_str(),
        }
    }

    /// The exit code a runbook script expects: 0 nothing to do, 1 warning, 2 critical.
    pub fn exit_code(self) -> i32 {
        match self {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity name that is none of `info`/`ok`, `warning`/`warn`, `critical`/`crit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?} (expected ok, info, warning or critical)")]
pub struct UnknownSeverity(pub String);

impl std::str::FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ok" | "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "critical" | "crit" => Ok(Severity::Critical),
            other => Err(UnknownSeverity(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for (text, severity) in [
            ("ok", Severity::Info),
            ("INFO", Severity::Info),
            (" warn", Severity::Warning),
            ("critical", Severity::Critical),
        ] {
            assert_eq!(text.parse::<Severity>().unwrap(), severity);
        }
        assert!("loud".parse::<Severity>().is_err());
        assert_eq!(Severity::Warning.to_string(), "warning");
        assert_eq!(serde_json::to_string(&Severity::Info).unwrap(), "\"info\"");
        assert_eq!(
            serde_json::from_str::<Severity>("\"ok\"").unwrap(),
            Severity::Info
        );
    }
}
