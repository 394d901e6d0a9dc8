//! The embedded, persistent store (feature `redb`): survives a process restart without a
//! server. Leases and TTLs run on the injected clock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::{Clock, SystemClock, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome};
use crate::error::IdempotencyError;

const KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kafka_ops_idempotency");

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    digest: u128,
    token: u64,
    completed: Option<StoredOutcome>,
    /// Lease end while in progress, expiry once completed (milliseconds).
    until: i64,
}

fn failed(error: impl Into<kafka_ops_core::BoxError>) -> IdempotencyError {
    IdempotencyError::store("redb", error)
}

/// The redb store. Cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, IdempotencyError> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Opens (or creates) `path`, timing leases and TTLs with `clock`.
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IdempotencyError> {
        let db = Database::create(path).map_err(failed)?;
        let write = db.begin_write().map_err(failed)?;
        write.open_table(KEYS).map_err(failed)?;
        write.commit().map_err(failed)?;
        Ok(RedbStore {
            db: Arc::new(db),
            clock,
        })
    }

    /// Runs `f` in one write transaction on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>, i64) -> Result<T, IdempotencyError>
        + Send
        + 'static,
    ) -> Result<T, IdempotencyError> {
        let db = self.db.clone();
        let now = self.clock.wall().as_millis();
        tokio::task::spawn_blocking(move || {
            let write = db.begin_write().map_err(failed)?;
            let result = {
                let mut table = write.open_table(KEYS).map_err(failed)?;
                f(&mut table, now)?
            };
            write.commit().map_err(failed)?;
            Ok(result)
        })
        .await
        .map_err(failed)?
    }

    /// Keys held now (for tests and metrics).
    pub fn len(&self) -> Result<u64, IdempotencyError> {
        let read = self.db.begin_read().map_err(failed)?;
        let table = read.open_table(KEYS).map_err(failed)?;
        table.len().map_err(failed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> Result<bool, IdempotencyError> {
        Ok(self.len()? == 0)
    }
}

fn load(table: &redb::Table<'_, &str, &[u8]>, key: &str) -> Result<Option<Row>, IdempotencyError> {
    match table.get(key).map_err(failed)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(failed),
    }
}

fn save(
    table: &mut redb::Table<'_, &str, &[u8]>,
    key: &str,
    row: &Row,
) -> Result<(), IdempotencyError> {
    let bytes = serde_json::to_vec(row).map_err(failed)?;
    table.insert(key, bytes.as_slice()).map_err(failed)?;
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl IdempotencyStore for RedbStore {
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        let key = key.to_string();
        self.write(move |table, now| {
            if let Some(row) = load(table, &key)?
                && row.until > now
            {
                return Ok(match (row.digest == digest.0, row.completed) {
                    (false, _) => Begin::Conflict,
                    (true, Some(outcome)) => Begin::Duplicate(outcome),
                    (true, None) => Begin::InProgress {
                        until: Timestamp::from_millis(row.until),
                    },
                });
            }
            let token = FencingToken::random();
            let row = Row {
                digest: digest.0,
                token: token.0,
                completed: None,
                until: now.saturating_add(millis(lease)),
            };
            save(table, &key, &row)?;
            Ok(Begin::Acquired(token))
        })
        .await
    }

    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let (key, outcome) = (key.to_string(), outcome.clone());
        self.write(move |table, now| match load(table, &key)? {
            Some(mut row)
                if row.token == token.0 && (row.completed.is_some() || row.until > now) =>
            {
                row.completed = Some(outcome);
                row.until = now.saturating_add(millis(ttl));
                save(table, &key, &row)
            }
            _ => Err(IdempotencyError::StaleToken { key: key.clone() }),
        })
        .await
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let key = key.to_string();
        self.write(move |table, now| match load(table, &key)? {
            Some(row) if row.token == token.0 && row.completed.is_none() && row.until > now => {
                table.remove(key.as_str()).map_err(failed)?;
                Ok(())
            }
            _ => Err(IdempotencyError::StaleToken { key: key.clone() }),
        })
        .await
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}
