//! The PostgreSQL store (feature `postgres`) and its inbox.
//!
//! One row per key in a table created by [`MIGRATION`]. A row's `expires_at` is when it may be
//! deleted: a completed key's TTL, and for a key in progress a day after its lease ends (rows
//! written before leases carried it have none there and are found by their lease instead), so
//! [`PURGE_EXPIRED`] is a range scan of one index however large the table. Taking keys is one
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE … WHERE <expired>` for a whole batch
//! (atomic under concurrency), which also reads back what it did not take; completion is one
//! `UPDATE … FROM unnest(…)` conditioned on the fencing tokens (a repeat by the same token finds
//! the key completed and changes nothing), release a `DELETE` conditioned on one. Every key
//! reaches a statement as [`storage_key`] maps it, so none holds a NUL byte or outgrows the
//! primary-key index, which would fail the statement for every key batched with it. Leases and
//! TTLs run on the database's clock (`now()`).
//!
//! The store keeps a pool of connections ([`deadpool_postgres`]); single `begin`s and
//! `complete`s that arrive while the pool's connections are busy wait and go in the next
//! statement together, so many records running at once cost a few statements, not one each.
//!
//! The **inbox**: a handler that writes to the same database completes its key inside its own
//! transaction with [`PostgresStore::complete_in`], so its writes and the "done" mark commit
//! together — after a crash either both happened or neither did, which is the only way to get
//! exactly-once side effects.

use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use kafka_ops_core::Timestamp;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, NoTls, Row, Statement};

use super::coalesce::{Batches, Front};
use super::{
    Begin, BeginRequest, Completion, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome,
    clamp_duration, storage_key,
};
use crate::error::IdempotencyError;
use crate::layer::Claim;

/// The pool crate, for building a pool of your own (TLS, another size) for
/// [`PostgresStore::from_pool`].
pub use deadpool_postgres;

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

/// Takes every key of the batch that is free or expired (in the order of their bytes, as every
/// batch locks them, so two batches never wait on each other in a circle), and answers each key
/// in input order: taken, or the row as it stood when the statement began. A row missing from
/// that snapshot, or expired there yet not taken, changed under the statement: ask again.
///
/// The statement is its own transaction and does not wait for its WAL record to reach the disk
/// (`set_config(…, true)` lasts until that commit): a lease is visible to every other session
/// at commit either way, and one lost with a crash of the server is a lease whose holder lost
/// its connection too (a redelivery takes the key again; the old holder's completion finds
/// another token and is refused). Completions, in the caller's transaction or
/// `complete_many`, still wait for the disk.
const BEGIN: &str = r#"
WITH lazy_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), input AS (
    SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::float8[])
        WITH ORDINALITY AS i(key, token, digest, lease, n)
), taken AS (
    INSERT INTO kafka_ops_idempotency AS t (key, state, token, digest, lease_until, expires_at)
    SELECT key, 'in_progress', token, digest, now() + make_interval(secs => lease),
           now() + make_interval(secs => lease) + interval '1 day'
    FROM input ORDER BY key COLLATE "C"
    ON CONFLICT (key) DO UPDATE
        SET state = 'in_progress', token = EXCLUDED.token, digest = EXCLUDED.digest,
            lease_until = EXCLUDED.lease_until, outcome = NULL, expires_at = EXCLUDED.expires_at
        WHERE (t.state = 'in_progress' AND t.lease_until <= now())
           OR (t.state = 'completed' AND t.expires_at <= now())
    RETURNING t.key
)
SELECT i.n, taken.key IS NOT NULL, e.state, e.digest, e.outcome::text,
       (extract(epoch FROM e.lease_until) * 1000)::int8,
       coalesce(CASE e.state WHEN 'completed' THEN e.expires_at ELSE e.lease_until END <= now(),
                false)
FROM input i
CROSS JOIN lazy_commit
LEFT JOIN taken ON taken.key = i.key
LEFT JOIN kafka_ops_idempotency e ON e.key = i.key AND taken.key IS NULL
ORDER BY i.n
"#;

/// Completes every key its token still holds in progress, and returns those keys and the keys
/// that token completed before. A repeat changes nothing (not even the row: no write): the
/// first completion's outcome stays, as an inbox completion in the handler's transaction comes
/// before the layer's. Both halves read the statement's snapshot, so a key completed by the
/// first half is not found again by the second.
const COMPLETE_MANY: &str = r"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::float8[])
        AS i(key, token, outcome, ttl)
), completed AS (
    UPDATE kafka_ops_idempotency AS t
    SET state = 'completed', outcome = i.outcome::jsonb,
        expires_at = now() + make_interval(secs => i.ttl)
    FROM input i
    WHERE t.key = i.key AND t.token = i.token AND t.state = 'in_progress'
    RETURNING t.key
)
SELECT key FROM completed
UNION ALL
SELECT t.key FROM kafka_ops_idempotency t JOIN input i ON t.key = i.key AND t.token = i.token
WHERE t.state = 'completed'
";

/// [`COMPLETE_MANY`] for one key: one row when the token completed it, now or before.
const COMPLETE: &str = r"
WITH completed AS (
    UPDATE kafka_ops_idempotency
    SET state = 'completed', outcome = $3::text::jsonb,
        expires_at = now() + make_interval(secs => $4)
    WHERE key = $1 AND token = $2 AND state = 'in_progress'
    RETURNING key
)
SELECT key FROM completed
UNION ALL
SELECT key FROM kafka_ops_idempotency WHERE key = $1 AND token = $2 AND state = 'completed'
";

const RELEASE: &str = r"
DELETE FROM kafka_ops_idempotency WHERE key = $1 AND token = $2 AND state = 'in_progress'
";

/// Removes completed keys past their TTL and leases expired a day ago (run it now and then;
/// expired rows are already ignored by `begin`). Both branches are served by the `expires_at`
/// index: the second finds only rows written before leases carried their purge time.
pub const PURGE_EXPIRED: &str = r"
DELETE FROM kafka_ops_idempotency
WHERE expires_at <= now()
   OR (expires_at IS NULL AND state = 'in_progress' AND lease_until <= now() - interval '1 day')
";

/// Keys per statement when single calls are batched.
const MAX_BATCH: usize = 512;
/// Connections of the pool [`PostgresStore::connect`] makes.
const POOL_SIZE: usize = 4;
/// Times a batch asks again for keys that changed under its statement.
const ATTEMPTS: usize = 5;

fn failed(error: impl Into<kafka_ops_core::BoxError>) -> IdempotencyError {
    IdempotencyError::store("postgres", error)
}

/// The PostgreSQL store. Cheap to clone (clones share the pool and batch together).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    front: Front,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// The pool, taking many keys a statement.
struct Statements(Pool);

impl PostgresStore {
    /// Connects without TLS (`host=… port=… dbname=… user=…`) with a pool of 4 connections, and
    /// checks that the database answers; for TLS or another size, build a pool yourself and use
    /// [`from_pool`](Self::from_pool).
    pub async fn connect(config: &str) -> Result<Self, IdempotencyError> {
        let config = tokio_postgres::Config::from_str(config).map_err(failed)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(failed)?;
        // Fail here, not at the first record, when the database does not answer.
        drop(pool.get().await.map_err(failed)?);
        Ok(Self::from_pool(pool))
    }

    /// A store over a pool; single calls are batched into at most one statement per connection
    /// at a time.
    pub fn from_pool(pool: Pool) -> Self {
        let flights = pool.status().max_size;
        let front = Front::new(
            "postgres",
            Arc::new(Statements(pool.clone())),
            MAX_BATCH,
            flights,
        );
        PostgresStore { pool, front }
    }

    /// Creates the table if it is missing.
    pub async fn migrate(&self) -> Result<(), IdempotencyError> {
        let client = self.pool.get().await.map_err(failed)?;
        client.batch_execute(MIGRATION).await.map_err(failed)
    }

    /// Deletes expired rows; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        let client = self.pool.get().await.map_err(failed)?;
        client.execute(PURGE_EXPIRED, &[]).await.map_err(failed)
    }

    /// Completes `claim` inside the handler's own transaction (or any client of the same
    /// database): the handler's writes and the completion commit together.
    ///
    /// For a transaction on a [`deadpool_postgres`] pool, [`complete_in_pooled`](Self::complete_in_pooled)
    /// is cheaper.
    pub async fn complete_in<C: GenericClient + Sync>(
        &self,
        client: &C,
        claim: &Claim,
        outcome: &StoredOutcome,
    ) -> Result<(), IdempotencyError> {
        let (key, token, outcome, ttl) = completion_of(claim, outcome)?;
        // Typed: one round trip (no separate prepare) inside the handler's transaction.
        let done = client
            .query_typed(
                COMPLETE,
                &[
                    (&&*key, Type::TEXT),
                    (&token, Type::INT8),
                    (&outcome, Type::TEXT),
                    (&ttl, Type::FLOAT8),
                ],
            )
            .await
            .map_err(failed)?;
        super::fenced(done.len() as u64, &claim.key)
    }

    /// [`complete_in`](Self::complete_in) for a transaction (or client) of a
    /// [`deadpool_postgres`] pool: the statement is prepared once per connection and kept in the
    /// connection's statement cache, so the server neither parses nor plans it again for each
    /// key.
    pub async fn complete_in_pooled<C: deadpool_postgres::GenericClient + Sync>(
        &self,
        client: &C,
        claim: &Claim,
        outcome: &StoredOutcome,
    ) -> Result<(), IdempotencyError> {
        let (key, token, outcome, ttl) = completion_of(claim, outcome)?;
        let statement = client
            .prepare_typed_cached(
                COMPLETE,
                &[Type::TEXT, Type::INT8, Type::TEXT, Type::FLOAT8],
            )
            .await
            .map_err(failed)?;
        let done = client
            .query(&statement, &[&&*key, &token, &outcome, &ttl])
            .await
            .map_err(failed)?;
        super::fenced(done.len() as u64, &claim.key)
    }
}

/// The parameters of [`COMPLETE`] for `claim` completed with `outcome`: its key as stored, its
/// token, the outcome as JSON and its TTL in seconds. The key is mapped as `begin` mapped it, and
/// so never fails the statement, whose error would abort the caller's transaction.
fn completion_of<'a>(
    claim: &'a Claim,
    outcome: &StoredOutcome,
) -> Result<(Cow<'a, str>, i64, String, f64), IdempotencyError> {
    Ok((
        storage_key(&claim.key),
        claim.token.0 as i64,
        serde_json::to_string(outcome).map_err(failed)?,
        seconds(claim.ttl),
    ))
}

/// A lease or TTL as the statements take it: seconds, cut to what an interval holds.
fn seconds(duration: Duration) -> f64 {
    clamp_duration(duration).as_secs_f64()
}

/// One [`BEGIN`] over the distinct keys at `pending` (`stored` holds each request's key as
/// stored): answers what it can into `answers` and returns the positions whose rows changed
/// under it.
async fn take(
    client: &(impl GenericClient + Sync),
    statement: &Statement,
    requests: &[BeginRequest],
    stored: &[Cow<'_, str>],
    mut pending: Vec<usize>,
    answers: &mut [Option<Begin>],
) -> Result<Vec<usize>, IdempotencyError> {
    pending.sort_by(|a, b| stored[*a].cmp(&stored[*b]));
    let batch: Vec<&BeginRequest> = pending.iter().map(|p| &requests[*p]).collect();
    let tokens: Vec<FencingToken> = batch.iter().map(|_| FencingToken::random()).collect();
    let keys: Vec<&str> = pending.iter().map(|p| &*stored[*p]).collect();
    let token_ids: Vec<i64> = tokens.iter().map(|t| t.0 as i64).collect();
    let digests: Vec<Vec<u8>> = batch.iter().map(|r| r.digest.to_bytes().to_vec()).collect();
    let leases: Vec<f64> = batch.iter().map(|r| seconds(r.lease)).collect();
    let rows = client
        .query(statement, &[&keys, &token_ids, &digests, &leases])
        .await
        .map_err(failed)?;
    let mut changed = Vec::new();
    for row in rows {
        let index = usize::try_from(row.get::<_, i64>(0) - 1).map_err(failed)?;
        let (Some(position), Some(token)) = (pending.get(index), tokens.get(index)) else {
            return Err(failed(format!("row {index} of {} keys", pending.len())));
        };
        match answer(&row, requests[*position].digest, *token)? {
            Some(begin) => answers[*position] = Some(begin),
            None => changed.push(*position),
        }
    }
    Ok(changed)
}

#[async_trait]
impl Batches for Statements {
    /// Takes the keys of `requests` in as few statements as their repeats allow (one when no key
    /// repeats and none changes under it).
    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        // Mapped once, and the stored keys used throughout: two keys stored as one are one
        // key to the statement.
        let stored: Vec<Cow<'_, str>> = requests.iter().map(|r| storage_key(&r.key)).collect();
        let client = self.0.get().await.map_err(failed)?;
        let statement = client.prepare_cached(BEGIN).await.map_err(failed)?;
        let mut answers: Vec<Option<Begin>> = vec![None; requests.len()];
        for mut pending in super::rounds(stored.iter().map(|k| &**k)) {
            for _ in 0..ATTEMPTS {
                if pending.is_empty() {
                    break;
                }
                pending = take(
                    &**client,
                    &statement,
                    requests,
                    &stored,
                    pending,
                    &mut answers,
                )
                .await?;
            }
            if let Some(position) = pending.first() {
                return Err(failed(format!(
                    "key {} kept changing under begin",
                    requests[*position].key
                )));
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.ok_or_else(|| failed("a key was not answered")))
            .collect()
    }

    /// Completes the keys of `completions`, one statement per round of distinct keys.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        // As in `begin_many`: the stored keys throughout, and the statement answers with them.
        let stored: Vec<Cow<'_, str>> = completions.iter().map(|c| storage_key(&c.key)).collect();
        let client = self.0.get().await.map_err(failed)?;
        let statement = client.prepare_cached(COMPLETE_MANY).await.map_err(failed)?;
        let mut done = vec![false; completions.len()];
        for mut round in super::rounds(stored.iter().map(|k| &**k)) {
            // Locked in the order of their bytes, as `begin` locks them.
            round.sort_by(|a, b| stored[*a].cmp(&stored[*b]));
            let batch: Vec<&Completion> = round.iter().map(|p| &completions[*p]).collect();
            let keys: Vec<&str> = round.iter().map(|p| &*stored[*p]).collect();
            let tokens: Vec<i64> = batch.iter().map(|c| c.token.0 as i64).collect();
            let outcomes = batch
                .iter()
                .map(|c| serde_json::to_string(&c.outcome))
                .collect::<Result<Vec<String>, _>>()
                .map_err(failed)?;
            let ttls: Vec<f64> = batch.iter().map(|c| seconds(c.ttl)).collect();
            let rows = client
                .query(&statement, &[&keys, &tokens, &outcomes, &ttls])
                .await
                .map_err(failed)?;
            let completed: HashSet<&str> = rows.iter().map(|row| row.get::<_, &str>(0)).collect();
            for position in round {
                done[position] = completed.contains(&*stored[position]);
            }
        }
        // Refusals name the caller's keys.
        Ok(completions
            .iter()
            .zip(done)
            .map(|(c, done)| super::fenced(u64::from(done), &c.key))
            .collect())
    }
}

/// One key's row of [`BEGIN`]: its answer, or none when it changed under the statement.
fn answer(
    row: &Row,
    digest: PayloadDigest,
    token: FencingToken,
) -> Result<Option<Begin>, IdempotencyError> {
    if row.get::<_, bool>(1) {
        return Ok(Some(Begin::Acquired(token)));
    }
    let (Some(state), false) = (row.get::<_, Option<&str>>(2), row.get::<_, bool>(6)) else {
        return Ok(None);
    };
    let stored: Option<&[u8]> = row.get(3);
    if stored.and_then(PayloadDigest::from_bytes) != Some(digest) {
        return Ok(Some(Begin::Conflict));
    }
    if state == "completed" {
        let outcome: Option<&str> = row.get(4);
        let outcome = outcome.ok_or_else(|| failed("completed without an outcome"))?;
        return serde_json::from_str(outcome)
            .map(|o| Some(Begin::Duplicate(o)))
            .map_err(failed);
    }
    let until: Option<i64> = row.get(5);
    Ok(Some(Begin::InProgress {
        until: Timestamp::from_millis(until.unwrap_or_default()),
    }))
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        self.front.begin(key, digest, lease).await
    }

    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        self.front.complete(key, token, outcome, ttl).await
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let client = self.pool.get().await.map_err(failed)?;
        let deleted = client
            .execute(RELEASE, &[&&*storage_key(key), &(token.0 as i64)])
            .await
            .map_err(failed)?;
        super::fenced(deleted, key)
    }

    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
        Statements(self.pool.clone()).begin_many(requests).await
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        Statements(self.pool.clone())
            .complete_many(completions)
            .await
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}
