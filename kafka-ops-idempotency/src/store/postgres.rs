//! The PostgreSQL store (feature `postgres`) and its inbox.
//!
//! One row per key in a table created by [`MIGRATION`]. Taking a key is one
//! `INSERT … ON CONFLICT DO UPDATE … WHERE <expired>` (atomic under concurrency); completion and
//! release are updates conditioned on the fencing token. Leases and TTLs run on the database's
//! clock (`now()`).
//!
//! The **inbox**: a handler that writes to the same database completes its key inside its own
//! transaction with [`PostgresStore::complete_in`], so its writes and the "done" mark commit
//! together — after a crash either both happened or neither did, which is the only way to get
//! exactly-once side effects.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use tokio_postgres::{Client, GenericClient, NoTls};

use super::{Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome};
use crate::error::IdempotencyError;
use crate::layer::Claim;

/// The table the store uses; run it once (it is idempotent), or let [`PostgresStore::migrate`].
pub const MIGRATION: &str = r"
CREATE TABLE IF NOT EXISTS kafka_ops_idempotency (
    key         text        PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('in_progress', 'completed')),
    token       bigint      NOT NULL,
    digest      bytea       NOT NULL,
    outcome     jsonb,
    lease_until timestamptz,
    expires_at  timestamptz
);
CREATE INDEX IF NOT EXISTS kafka_ops_idempotency_expires_at ON kafka_ops_idempotency (expires_at);
";

const BEGIN: &str = r"
INSERT INTO kafka_ops_idempotency AS t (key, state, token, digest, lease_until)
VALUES ($1, 'in_progress', $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (key) DO UPDATE
    SET state = 'in_progress', token = EXCLUDED.token, digest = EXCLUDED.digest,
        lease_until = EXCLUDED.lease_until, outcome = NULL, expires_at = NULL
    WHERE (t.state = 'in_progress' AND t.lease_until <= now())
       OR (t.state = 'completed' AND t.expires_at <= now())
RETURNING token
";

const EXISTING: &str = r"
SELECT state, digest, outcome::text, (extract(epoch FROM lease_until) * 1000)::bigint
FROM kafka_ops_idempotency WHERE key = $1
";

const COMPLETE: &str = r"
UPDATE kafka_ops_idempotency
SET state = 'completed', outcome = $3::text::jsonb, expires_at = now() + make_interval(secs => $4)
WHERE key = $1 AND token = $2
";

const RELEASE: &str = r"
DELETE FROM kafka_ops_idempotency WHERE key = $1 AND token = $2 AND state = 'in_progress'
";

/// Removes completed keys past their TTL and leases long expired (run it now and then; expired
/// rows are already ignored by `begin`).
pub const PURGE_EXPIRED: &str = r"
DELETE FROM kafka_ops_idempotency
WHERE (state = 'completed' AND expires_at <= now())
   OR (state = 'in_progress' AND lease_until <= now() - interval '1 day')
";

fn failed(error: tokio_postgres::Error) -> IdempotencyError {
    IdempotencyError::store("postgres", error)
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    client: Arc<Client>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

impl PostgresStore {
    /// Connects without TLS (`host=… port=… dbname=… user=…`); for TLS, connect yourself and use
    /// [`from_client`](Self::from_client).
    pub async fn connect(config: &str) -> Result<Self, IdempotencyError> {
        let (client, connection) = tokio_postgres::connect(config, NoTls)
            .await
            .map_err(failed)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::error!(%error, "idempotency store connection failed");
            }
        });
        Ok(Self::from_client(Arc::new(client)))
    }

    /// A store over a connected client.
    pub fn from_client(client: Arc<Client>) -> Self {
        PostgresStore { client }
    }

    /// Creates the table if it is missing.
    pub async fn migrate(&self) -> Result<(), IdempotencyError> {
        self.client.batch_execute(MIGRATION).await.map_err(failed)
    }

    /// Deletes expired rows; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        self.client
            .execute(PURGE_EXPIRED, &[])
            .await
            .map_err(failed)
    }

    /// Completes `claim` inside the handler's own transaction (or any client of the same
    /// database): the handler's writes and the completion commit together.
    pub async fn complete_in<C: GenericClient + Sync>(
        &self,
        client: &C,
        claim: &Claim,
        outcome: &StoredOutcome,
    ) -> Result<(), IdempotencyError> {
        complete_with(client, &claim.key, claim.token, outcome, claim.ttl).await
    }
}

async fn complete_with<C: GenericClient + Sync>(
    client: &C,
    key: &str,
    token: FencingToken,
    outcome: &StoredOutcome,
    ttl: Duration,
) -> Result<(), IdempotencyError> {
    let outcome =
        serde_json::to_string(outcome).map_err(|e| IdempotencyError::store("postgres", e))?;
    let updated = client
        .execute(
            COMPLETE,
            &[&key, &(token.0 as i64), &outcome, &ttl.as_secs_f64()],
        )
        .await
        .map_err(failed)?;
    super::fenced(updated, key)
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        let digest_bytes = digest.to_bytes().to_vec();
        // A row released between the insert and the read: ask again.
        for _ in 0..5 {
            let token = FencingToken::random();
            let taken = self
                .client
                .query_opt(
                    BEGIN,
                    &[&key, &(token.0 as i64), &digest_bytes, &lease.as_secs_f64()],
                )
                .await
                .map_err(failed)?;
            if taken.is_some() {
                return Ok(Begin::Acquired(token));
            }
            let Some(row) = self
                .client
                .query_opt(EXISTING, &[&key])
                .await
                .map_err(failed)?
            else {
                continue;
            };
            let state: String = row.get(0);
            let stored: Vec<u8> = row.get(1);
            if PayloadDigest::from_bytes(&stored) != Some(digest) {
                return Ok(Begin::Conflict);
            }
            return match state.as_str() {
                "completed" => {
                    let outcome: Option<String> = row.get(2);
                    let outcome = outcome.ok_or_else(|| {
                        IdempotencyError::store("postgres", "completed without an outcome")
                    })?;
                    serde_json::from_str(&outcome)
                        .map(Begin::Duplicate)
                        .map_err(|e| IdempotencyError::store("postgres", e))
                }
                _ => {
                    let until: Option<i64> = row.get(3);
                    Ok(Begin::InProgress {
                        until: Timestamp::from_millis(until.unwrap_or_default()),
                    })
                }
            };
        }
        Err(IdempotencyError::store(
            "postgres",
            format!("key {key} kept changing under begin"),
        ))
    }

    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        complete_with(self.client.as_ref(), key, token, outcome, ttl).await
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let deleted = self
            .client
            .execute(RELEASE, &[&key, &(token.0 as i64)])
            .await
            .map_err(failed)?;
        super::fenced(deleted, key)
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}
