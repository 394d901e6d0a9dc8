//! The Redis store (feature `redis`): one hash per key, taken with a server-side script
//! (`SET NX PX` semantics: the lease is the key's expiry), completed and released by scripts
//! that check the fencing token. Leases and TTLs run on the Redis server's clock.

use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome};
use crate::error::IdempotencyError;

const BEGIN: &str = r"
local key, token, digest, lease = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HGET', key, 'state')
if not state then
  redis.call('HSET', key, 'state', 'p', 'token', token, 'digest', digest, 'until', now + lease)
  redis.call('PEXPIRE', key, lease)
  return {'acquired'}
end
if redis.call('HGET', key, 'digest') ~= digest then
  return {'conflict'}
end
if state == 'c' then
  return {'duplicate', redis.call('HGET', key, 'outcome')}
end
return {'in_progress', redis.call('HGET', key, 'until')}
";

const COMPLETE: &str = r"
local key = KEYS[1]
if redis.call('HGET', key, 'token') ~= ARGV[1] then
  return 0
end
if redis.call('HGET', key, 'state') == 'c' then
  return 1
end
redis.call('HSET', key, 'state', 'c', 'outcome', ARGV[2])
redis.call('PEXPIRE', key, ARGV[3])
return 1
";

const RELEASE: &str = r"
local key = KEYS[1]
if redis.call('HGET', key, 'token') ~= ARGV[1] or redis.call('HGET', key, 'state') ~= 'p' then
  return 0
end
redis.call('DEL', key)
return 1
";

/// The Redis store. Cheap to clone (one multiplexed, reconnecting connection).
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    begin: Script,
    complete: Script,
    release: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
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
        Ok(RedisStore {
            connection,
            prefix: "kafka-ops:idem:".into(),
            begin: Script::new(BEGIN),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        })
    }

    /// Stores keys under another prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
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
        let token = FencingToken::random();
        let mut connection = self.connection.clone();
        let answer: Vec<String> = self
            .begin
            .key(self.key(key))
            .arg(token.0.to_string())
            .arg(format!("{:032x}", digest.0))
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        match answer.first().map(String::as_str) {
            Some("acquired") => Ok(Begin::Acquired(token)),
            Some("conflict") => Ok(Begin::Conflict),
            Some("duplicate") => {
                let stored = answer.get(1).ok_or_else(|| {
                    IdempotencyError::store("redis", "duplicate without an outcome")
                })?;
                serde_json::from_str(stored)
                    .map(Begin::Duplicate)
                    .map_err(|e| IdempotencyError::store("redis", e))
            }
            Some("in_progress") => {
                let until = answer
                    .get(1)
                    .and_then(|u| u.parse::<i64>().ok())
                    .ok_or_else(|| {
                        IdempotencyError::store("redis", "in progress without a lease end")
                    })?;
                Ok(Begin::InProgress {
                    until: Timestamp::from_millis(until),
                })
            }
            _ => Err(IdempotencyError::store(
                "redis",
                format!("unexpected answer {answer:?}"),
            )),
        }
    }

    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let outcome =
            serde_json::to_string(outcome).map_err(|e| IdempotencyError::store("redis", e))?;
        let mut connection = self.connection.clone();
        let done: i64 = self
            .complete
            .key(self.key(key))
            .arg(token.0.to_string())
            .arg(outcome)
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        super::fenced(done as u64, key)
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let mut connection = self.connection.clone();
        let done: i64 = self
            .release
            .key(self.key(key))
            .arg(token.0.to_string())
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        super::fenced(done as u64, key)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
