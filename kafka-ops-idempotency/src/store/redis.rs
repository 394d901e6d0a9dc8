//! The Redis store (feature `redis`): one string per key, `<token>|<digest>|p|<lease end>` while
//! held and `<token>|<digest>|c|<outcome>` once done, taken with `SET NX PX GET` (the lease is
//! the key's expiry) and completed and released by scripts that check the fencing token. Leases
//! and TTLs run on the Redis server's clock.
//!
//! Many keys go in one script call: [`begin_many`](IdempotencyStore::begin_many) and
//! [`complete_many`](IdempotencyStore::complete_many) directly, and single `begin`s and
//! `complete`s that arrive while a call is under way (the driver runs many records at once) are
//! sent together in the next one. All keys of one call must live on one server (no Redis
//! Cluster across slots).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use redis::Script;
use redis::aio::ConnectionManager;

use super::coalesce::{Batches, Front};
use super::{
    Begin, BeginRequest, Completion, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome,
};
use crate::error::IdempotencyError;

/// Takes each key that is free (absent: never seen, released, its lease or TTL over) and answers
/// every key with what it held before, `false` when it was free.
const BEGIN: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local answers = {}
for i, key in ipairs(KEYS) do
  local token, digest, lease = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local held = token .. '|' .. digest .. '|p|' .. (now + tonumber(lease))
  answers[i] = redis.call('SET', key, held, 'NX', 'PX', lease, 'GET')
end
return answers
";

/// Marks each key done if its token still holds it; 1 when it does (also when already done with
/// that token), else 0. `<token>|` and the 32 digits of the digest and a `|` are the head kept.
const COMPLETE: &str = r"
local answers = {}
for i, key in ipairs(KEYS) do
  local prefix = ARGV[3 * i - 2] .. '|'
  local value = redis.call('GET', key)
  answers[i] = 0
  if value and string.sub(value, 1, #prefix) == prefix then
    local head = string.sub(value, 1, #prefix + 33)
    if string.sub(value, #head + 1, #head + 1) == 'p' then
      redis.call('SET', key, head .. 'c|' .. ARGV[3 * i - 1], 'PX', ARGV[3 * i])
    end
    answers[i] = 1
  end
end
return answers
";

const RELEASE: &str = r"
local prefix = ARGV[1] .. '|'
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, #prefix) == prefix
   and string.sub(value, #prefix + 34, #prefix + 34) == 'p' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Keys per script call: a script holds the (single-threaded) server, so a bounded one keeps
/// other clients' latency low.
const MAX_BATCH: usize = 256;
/// Script calls under way at once on the multiplexed connection: one being sent or answered
/// while another runs on the server.
const FLIGHTS: usize = 2;

/// The Redis store. Cheap to clone (one multiplexed, reconnecting connection; clones share it
/// and batch together).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    front: Front,
}

struct Inner {
    connection: ConnectionManager,
    prefix: String,
    begin: Script,
    complete: Script,
    release: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

fn failed(error: redis::RedisError) -> IdempotencyError {
    IdempotencyError::store("redis", error)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    /// Connects to `url` (`redis://host:6379/0`, credentials in the URL). Keys are stored as
    /// `kafka-ops:idem:<key>`.
    pub async fn connect(url: &str) -> Result<Self, IdempotencyError> {
        let client = redis::Client::open(url).map_err(failed)?;
        let connection = ConnectionManager::new(client).await.map_err(failed)?;
        Ok(Self::over(Inner {
            connection,
            prefix: "kafka-ops:idem:".into(),
            begin: Script::new(BEGIN),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        }))
    }

    /// Stores keys under another prefix.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        Self::over(Inner {
            connection: self.inner.connection.clone(),
            prefix: prefix.into(),
            begin: self.inner.begin.clone(),
            complete: self.inner.complete.clone(),
            release: self.inner.release.clone(),
        })
    }

    fn over(inner: Inner) -> Self {
        let inner = Arc::new(inner);
        let front = Front::new("redis", inner.clone(), MAX_BATCH, FLIGHTS);
        RedisStore { inner, front }
    }
}

impl Inner {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Batches for Inner {
    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
        let mut answers = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(MAX_BATCH) {
            let tokens: Vec<FencingToken> = chunk.iter().map(|_| FencingToken::random()).collect();
            let mut call = self.begin.prepare_invoke();
            for (request, token) in chunk.iter().zip(&tokens) {
                call.key(self.key(&request.key))
                    .arg(token.0)
                    .arg(hex(request.digest))
                    .arg(millis(request.lease));
            }
            let mut connection = self.connection.clone();
            let held: Vec<Option<String>> =
                call.invoke_async(&mut connection).await.map_err(failed)?;
            if held.len() != chunk.len() {
                return Err(IdempotencyError::store(
                    "redis",
                    format!("{} answers to {} keys", held.len(), chunk.len()),
                ));
            }
            for ((request, token), held) in chunk.iter().zip(tokens).zip(held) {
                answers.push(match held {
                    None => Begin::Acquired(token),
                    Some(held) => answer(&held, request.digest)?,
                });
            }
        }
        Ok(answers)
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        let mut answers = Vec::with_capacity(completions.len());
        for chunk in completions.chunks(MAX_BATCH) {
            let mut call = self.complete.prepare_invoke();
            for completion in chunk {
                let outcome = serde_json::to_string(&completion.outcome)
                    .map_err(|e| IdempotencyError::store("redis", e))?;
                call.key(self.key(&completion.key))
                    .arg(completion.token.0)
                    .arg(outcome)
                    .arg(millis(completion.ttl));
            }
            let mut connection = self.connection.clone();
            let done: Vec<u64> = call.invoke_async(&mut connection).await.map_err(failed)?;
            if done.len() != chunk.len() {
                return Err(IdempotencyError::store(
                    "redis",
                    format!("{} answers to {} keys", done.len(), chunk.len()),
                ));
            }
            answers.extend(
                chunk
                    .iter()
                    .zip(done)
                    .map(|(completion, done)| super::fenced(done, &completion.key)),
            );
        }
        Ok(answers)
    }
}

/// The digest as the store writes it: 32 hexadecimal digits.
fn hex(digest: PayloadDigest) -> String {
    format!("{:032x}", digest.0)
}

/// What a taken key's value (`<token>|<digest>|<state>|<rest>`) answers to a `begin` with
/// `digest`.
fn answer(held: &str, digest: PayloadDigest) -> Result<Begin, IdempotencyError> {
    let malformed = || IdempotencyError::store("redis", format!("unexpected value {held:?}"));
    let mut fields = held.splitn(4, '|');
    let (Some(_token), Some(stored), Some(state), Some(rest)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed());
    };
    if stored != hex(digest) {
        return Ok(Begin::Conflict);
    }
    match state {
        "c" => serde_json::from_str(rest)
            .map(Begin::Duplicate)
            .map_err(|e| IdempotencyError::store("redis", e)),
        "p" => rest
            .parse::<i64>()
            .map(|until| Begin::InProgress {
                until: Timestamp::from_millis(until),
            })
            .map_err(|_| malformed()),
        _ => Err(malformed()),
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
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
        let mut connection = self.inner.connection.clone();
        let done: u64 = self
            .inner
            .release
            .key(self.inner.key(key))
            .arg(token.0)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        super::fenced(done, key)
    }

    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
        self.inner.begin_many(requests).await
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        self.inner.complete_many(completions).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
