//! The embedded, persistent store (feature `redb`): survives a process restart without a
//! server. Leases and TTLs run on the injected clock. Expired rows are ignored by `begin` and
//! stay on disk until [`RedbStore::purge_expired`] deletes them: run it now and then.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::{Clock, SystemClock, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{
    Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome, clamp_duration,
    storage_key,
};
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

    /// Deletes expired rows (completed keys past their TTL, leases past their end); returns how
    /// many. `begin` already ignores them: this gives their space back. It reads every row
    /// in one write transaction (the table has no index by time), so run it now and then, not
    /// per record. A row it cannot read is kept, for `begin` to report.
    pub async fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        self.write(|table, now| {
            let mut purged = 0;
            table
                .retain(|_, bytes| {
                    let expired =
                        serde_json::from_slice::<Row>(bytes).is_ok_and(|row| row.until <= now);
                    purged += u64::from(expired);
                    !expired
                })
                .map_err(failed)?;
            Ok(purged)
        })
        .await
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
    i64::try_from(clamp_duration(duration).as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl IdempotencyStore for RedbStore {
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        let key = storage_key(key).into_owned();
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
        let (stored, outcome) = (storage_key(key).into_owned(), outcome.clone());
        let done = self
            .write(move |table, now| match load(table, &stored)? {
                // Completed before by this token: the first outcome (an inbox's, with its
                // result) stays, and so does its expiry.
                Some(row) if row.token == token.0 && row.completed.is_some() => Ok(true),
                Some(mut row) if row.token == token.0 && row.until > now => {
                    row.completed = Some(outcome);
                    row.until = now.saturating_add(millis(ttl));
                    save(table, &stored, &row)?;
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await?;
        super::fenced(u64::from(done), key)
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let stored = storage_key(key).into_owned();
        let done = self
            .write(move |table, now| match load(table, &stored)? {
                Some(row) if row.token == token.0 && row.completed.is_none() && row.until > now => {
                    table.remove(stored.as_str()).map_err(failed)?;
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await?;
        super::fenced(u64::from(done), key)
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use kafka_ops_core::ManualClock;
    use kafka_ops_core::handler::Outcome;

    use super::*;

    const DIGEST: PayloadDigest = PayloadDigest(7);
    const SHORT: Duration = Duration::from_secs(10);
    const LONG: Duration = Duration::from_secs(3600);

    fn done() -> StoredOutcome {
        StoredOutcome {
            outcome: Outcome::Processed,
            result: None,
        }
    }

    async fn acquire(store: &RedbStore, key: &str, lease: Duration) -> FencingToken {
        match store.begin(key, DIGEST, lease).await.unwrap() {
            Begin::Acquired(token) => token,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_purge_deletes_exactly_the_rows_past_their_time() {
        let path = std::env::temp_dir().join(format!(
            "{}.redb",
            kafka_ops_core::testkit::unique_name("redb-purge")
        ));
        let clock = Arc::new(ManualClock::new());
        let store = RedbStore::open_with_clock(&path, clock.clone()).unwrap();
        acquire(&store, "lease-short", SHORT).await;
        acquire(&store, "lease-long", LONG).await;
        for (key, ttl) in [("done-short", SHORT), ("done-long", LONG)] {
            let token = acquire(&store, key, LONG).await;
            store.complete(key, token, &done(), ttl).await.unwrap();
        }
        assert_eq!(store.purge_expired().await.unwrap(), 0);
        clock.advance(SHORT);
        assert_eq!(store.purge_expired().await.unwrap(), 2);
        assert_eq!(store.len().unwrap(), 2);
        assert_eq!(store.purge_expired().await.unwrap(), 0);
        // What is left is as it was.
        assert!(matches!(
            store.begin("lease-long", DIGEST, LONG).await.unwrap(),
            Begin::InProgress { .. }
        ));
        assert_eq!(
            store.begin("done-long", DIGEST, LONG).await.unwrap(),
            Begin::Duplicate(done())
        );
        acquire(&store, "lease-short", LONG).await;
        drop(store);
        std::fs::remove_file(path).ok();
    }
}
