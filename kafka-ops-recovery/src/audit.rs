//! The append-only audit trail: one JSON object per line for every decision and attempt.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use kafka_ops_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::RecoveryError;

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub time: Timestamp,
    /// The anomaly's key.
    pub anomaly: String,
    /// The monitor that saw it.
    pub monitor: String,
    /// What the monitor said.
    pub message: String,
    /// What the engine decided (`detected`, `act`, `escalate`, `dry run: …`, `cleared`, …).
    pub decision: String,
    /// The action (or notifier), when one ran.
    pub action: Option<String>,
    /// Which attempt of the action.
    pub attempt: Option<u32>,
    /// How it ended.
    pub result: Option<String>,
    /// Whether the engine ran in dry-run mode.
    pub dry_run: bool,
}

/// Appends records to a file, one JSON line each, flushed as written. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl AuditTrail {
    /// Opens (creating if needed) `path` for appending; earlier records are kept.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecoveryError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| RecoveryError::Io {
                what: format!("open audit trail {}", path.display()),
                source: e,
            })?;
        Ok(AuditTrail {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record.
    pub fn append(&self, record: &AuditRecord) -> Result<(), RecoveryError> {
        let mut line = serde_json::to_string(record).map_err(|e| RecoveryError::Io {
            what: "encode an audit record".into(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| RecoveryError::Io {
                what: format!("append to audit trail {}", self.path.display()),
                source: e,
            })
    }

    /// Reads every record of a trail.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<AuditRecord>, RecoveryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| RecoveryError::Io {
            what: format!("read audit trail {}", path.display()),
            source: e,
        })?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .enumerate()
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| {
                    RecoveryError::Config(format!(
                        "audit trail {} line {}: {e}",
                        path.display(),
                        n + 1
                    ))
                })
            })
            .collect()
    }
}
