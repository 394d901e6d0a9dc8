//! The Redis store (feature `redis`): one string per key, `<token>|<digest>|p` while held and
//! `<token>|<digest>|c|<outcome>` once done. Taking a key is a plain `SET NX PX GET` (the lease
//! is the key's expiry; what the key held comes back in the same command); completion and
//! release are scripts that check the fencing token. Leases and TTLs run on the Redis server's
//! clock; a holder's lease end is reported from the key's remaining time, read with the key's
//! value in one step (the key may have been completed, released or taken over since the `SET`
//! found it held).
//!
//! Many keys go in one round trip: [`begin_many`](IdempotencyStore::begin_many) pipelines its
//! `SET`s and [`complete_many`](IdempotencyStore::complete_many) is one script call, and single
//! `begin`s and `complete`s that arrive while a call is under way (the driver runs many records
//! at once) are sent together in the next one. All keys of one call must live on one server (no
//! Redis Cluster across slots).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use redis::Script;
use redis::aio::ConnectionManager;

use super::coalesce::{Batches, Front};
use super::{
    Begin, BeginRequest, Completion, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome,
    clamp_duration, storage_key,
};
use crate::error::IdempotencyError;

/// Marks each key done if its token still holds it; 1 when it does (also when already done with
/// that token, which changes nothing), else 0. One `MGET` reads every key: a command from a
/// script costs about as much as the work it does; a key that comes again in the call is read
/// as this call left it, so its first completion stays. `<token>|`, the 32 digits of the digest
/// and a `|` are the head kept.
const COMPLETE: &str = r"
local values = redis.call('MGET', unpack(KEYS))
local written = {}
local answers = {}
local find, byte, sub = string.find, string.byte, string.sub
for i, key in ipairs(KEYS) do
  local prefix = ARGV[3 * i - 2]
  local value = written[key] or values[i]
  local state = #prefix + 35
  answers[i] = 0
  if value and find(value, prefix, 1, true) == 1 and byte(value, #prefix + 1) == 124 then
    if byte(value, state) == 112 then
      local done = sub(value, 1, state - 1) .. 'c|' .. ARGV[3 * i - 1]
      redis.call('SET', key, done, 'PX', ARGV[3 * i])
      written[key] = done
    end
    answers[i] = 1
  end
end
return answers
";

/// Each key's value (`false`, a nil reply, when it is gone) and its remaining time in
/// milliseconds, read in one step so that the two belong to the same state of the key:
/// `{values, remaining}`.
const HELD: &str = r"
local values, remaining = {}, {}
for i, key in ipairs(KEYS) do
  values[i] = redis.call('GET', key)
  remaining[i] = redis.call('PTTL', key)
end
return {values, remaining}
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
    complete: Script,
    release: Script,
    held: Script,
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
    u64::try_from(clamp_duration(duration).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    /// Connects to `url` (`redis://host:6379/0`, credentials in the URL). Keys are stored as
    /// `kafka-ops:idem:<key>`, `<key>` as [`storage_key`] maps it.
    pub async fn connect(url: &str) -> Result<Self, IdempotencyError> {
        let client = redis::Client::open(url).map_err(failed)?;
        let connection = ConnectionManager::new(client).await.map_err(failed)?;
        Ok(Self::over(Inner {
            connection,
            prefix: "kafka-ops:idem:".into(),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            held: Script::new(HELD),
        }))
    }

    /// Stores keys under another prefix.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        Self::over(Inner {
            connection: self.inner.connection.clone(),
            prefix: prefix.into(),
            complete: self.inner.complete.clone(),
            release: self.inner.release.clone(),
            held: self.inner.held.clone(),
        })
    }

    fn over(inner: Inner) -> Self {
        let inner = Arc::new(inner);
        let front = Front::new("redis", inner.clone(), MAX_BATCH, FLIGHTS);
        RedisStore { inner, front }
    }
}

impl Inner {
    /// The Redis key of `key`. Every command names its keys through this or
    /// [`write_key`](Self::write_key), so each key is held as [`storage_key`] maps it, whichever
    /// call brought it.
    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, storage_key(key))
    }

    /// The Redis key of `key` into `buffer`.
    fn write_key(&self, buffer: &mut String, key: &str) {
        buffer.clear();
        buffer.push_str(&self.prefix);
        buffer.push_str(&storage_key(key));
    }

    /// Answers the keys at `positions`, which the `SET` found held, as they stand now: their
    /// values and remaining times read together in a second round trip. A key completed since
    /// is a duplicate (or a conflict), one taken over is answered from its new holder, one still
    /// held is in progress until now plus what remains of its lease, and one gone (released, or
    /// its lease ran out) was held when the `SET` ran and is free now: in progress until now.
    async fn answer_held(
        &self,
        requests: &[BeginRequest],
        positions: &[usize],
        answers: &mut [Begin],
    ) -> Result<(), IdempotencyError> {
        let mut connection = self.connection.clone();
        for chunk in positions.chunks(MAX_BATCH) {
            let mut call = self.held.prepare_invoke();
            for position in chunk {
                call.key(self.key(&requests[*position].key));
            }
            let (values, remaining): (Vec<Option<String>>, Vec<i64>) =
                call.invoke_async(&mut connection).await.map_err(failed)?;
            if values.len() != chunk.len() || remaining.len() != chunk.len() {
                return Err(IdempotencyError::store(
                    "redis",
                    format!("{} answers to {} keys", values.len(), chunk.len()),
                ));
            }
            let now = Timestamp::from_system_time(SystemTime::now());
            for ((position, value), remaining) in chunk.iter().zip(values).zip(remaining) {
                let request = &requests[*position];
                answers[*position] = match value {
                    None => Begin::InProgress { until: now },
                    Some(value) => match answer(&value, request.digest)? {
                        Begin::InProgress { .. } => Begin::InProgress {
                            until: Timestamp::from_millis(
                                now.as_millis().saturating_add(remaining.max(0)),
                            ),
                        },
                        settled => settled,
                    },
                };
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Batches for Inner {
    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<FencingToken> = requests.iter().map(|_| FencingToken::random()).collect();
        let mut pipe = redis::Pipeline::with_capacity(requests.len());
        // The command copies its arguments: one buffer each serves every key.
        let (mut key, mut held) = (String::new(), String::new());
        for (request, token) in requests.iter().zip(&tokens) {
            self.write_key(&mut key, &request.key);
            write_value(&mut held, *token, request.digest);
            held.push_str("|p");
            pipe.cmd("SET")
                .arg(&key)
                .arg(&held)
                .arg("NX")
                .arg("PX")
                .arg(millis(request.lease))
                .arg("GET");
        }
        let mut connection = self.connection.clone();
        let held: Vec<Option<String>> = pipe.query_async(&mut connection).await.map_err(failed)?;
        if held.len() != requests.len() {
            return Err(IdempotencyError::store(
                "redis",
                format!("{} answers to {} keys", held.len(), requests.len()),
            ));
        }
        let mut answers = Vec::with_capacity(requests.len());
        let mut held_elsewhere = Vec::new();
        for (position, ((request, token), held)) in
            requests.iter().zip(tokens).zip(held).enumerate()
        {
            answers.push(match held {
                None => Begin::Acquired(token),
                Some(held) => {
                    let answer = answer(&held, request.digest)?;
                    if matches!(answer, Begin::InProgress { .. }) {
                        held_elsewhere.push(position);
                    }
                    answer
                }
            });
        }
        if !held_elsewhere.is_empty() {
            self.answer_held(requests, &held_elsewhere, &mut answers)
                .await?;
        }
        Ok(answers)
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        let mut answers = Vec::with_capacity(completions.len());
        for chunk in completions.chunks(MAX_BATCH) {
            let done: Vec<u64> = self.complete_chunk(chunk).await?;
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

impl Inner {
    /// One call of [`COMPLETE`] over `chunk`, written straight into one command (a script
    /// invocation would hold each key and argument in an allocation of its own), loading the
    /// script when the server does not have it.
    async fn complete_chunk(&self, chunk: &[Completion]) -> Result<Vec<u64>, IdempotencyError> {
        let mut call = redis::cmd("EVALSHA");
        call.arg(self.complete.get_hash()).arg(chunk.len());
        let mut key = String::new();
        for completion in chunk {
            self.write_key(&mut key, &completion.key);
            call.arg(&key);
        }
        // Neighbours mostly store the same outcome: serialize it once for them.
        let mut last: Option<(&StoredOutcome, String)> = None;
        for completion in chunk {
            if last.as_ref().is_none_or(|(o, _)| *o != &completion.outcome) {
                let json = serde_json::to_string(&completion.outcome)
                    .map_err(|e| IdempotencyError::store("redis", e))?;
                last = Some((&completion.outcome, json));
            }
            let json = last.as_ref().map_or("", |(_, json)| json.as_str());
            call.arg(completion.token.0)
                .arg(json)
                .arg(millis(completion.ttl));
        }
        let mut connection = self.connection.clone();
        match call.query_async(&mut connection).await {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(COMPLETE)
                    .query_async(&mut connection)
                    .await
                    .map_err(failed)?;
                call.query_async(&mut connection).await.map_err(failed)
            }
            answer => answer.map_err(failed),
        }
    }
}

/// `<token>|<digest>` into `buffer`.
fn write_value(buffer: &mut String, token: FencingToken, digest: PayloadDigest) {
    use std::fmt::Write as _;
    buffer.clear();
    // Writing to a String cannot fail.
    let _ = write!(buffer, "{}|", token.0);
    buffer.push_str(&hex(digest));
}

/// The digest as the store writes it: 32 hexadecimal digits.
fn hex(digest: PayloadDigest) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    digest
        .to_bytes()
        .iter()
        .flat_map(|byte| {
            [
                DIGITS[usize::from(byte >> 4)],
                DIGITS[usize::from(byte & 0xf)],
            ]
        })
        .map(char::from)
        .collect()
}

/// What a taken key's value (`<token>|<digest>|<state>[|<outcome>]`) answers to a `begin` with
/// `digest`; a key in progress answers with a lease end still to be read.
fn answer(held: &str, digest: PayloadDigest) -> Result<Begin, IdempotencyError> {
    let malformed = || IdempotencyError::store("redis", format!("unexpected value {held:?}"));
    let mut fields = held.splitn(4, '|');
    let (Some(_token), Some(stored), Some(state)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed());
    };
    if stored != hex(digest) {
        return Ok(Begin::Conflict);
    }
    match (state, fields.next()) {
        ("c", Some(outcome)) => serde_json::from_str(outcome)
            .map(Begin::Duplicate)
            .map_err(|e| IdempotencyError::store("redis", e)),
        ("p", None) => Ok(Begin::InProgress {
            until: Timestamp::from_millis(0),
        }),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const LEASE: Duration = Duration::from_secs(60);
    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
    const DIGEST: PayloadDigest = PayloadDigest(7);

    /// The Redis the tests use (the test command exports it); a server that does not answer
    /// fails the test.
    async fn store() -> RedisStore {
        let url = std::env::var("KAFKA_OPS_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        RedisStore::connect(&url)
            .await
            .expect("Redis must be running (the test command checks it)")
            .with_prefix(format!("kafka-ops:test:{:016x}:", fastrand::u64(..)))
    }

    fn request(key: &str, digest: PayloadDigest) -> BeginRequest {
        BeginRequest {
            key: key.to_string(),
            digest,
            lease: LEASE,
        }
    }

    /// A `begin` found each key in progress; what it answers once it reads the key again.
    async fn answered_after(store: &RedisStore, requests: &[BeginRequest]) -> Vec<Begin> {
        let mut answers = vec![
            Begin::InProgress {
                until: Timestamp::from_millis(0)
            };
            requests.len()
        ];
        let positions: Vec<usize> = (0..requests.len()).collect();
        store
            .inner
            .answer_held(requests, &positions, &mut answers)
            .await
            .unwrap();
        answers
    }

    /// What happens between a `SET` that found a key held and the read of its lease: the holder
    /// completes it (its expiry is now the completion's TTL, not a lease), releases it, or
    /// another holder with another payload takes it over.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_key_that_changed_after_it_was_found_held_is_answered_as_it_is_now() {
        let store = store().await;
        let done = StoredOutcome {
            outcome: kafka_ops_core::handler::Outcome::Processed,
            result: Some(b"receipt".to_vec()),
        };
        let (completed, released, taken, held) = ("completed", "released", "taken", "held");
        for key in [completed, released, taken, held] {
            let Begin::Acquired(token) = store.begin(key, DIGEST, LEASE).await.unwrap() else {
                panic!("{key} not acquired");
            };
            match key {
                "completed" => store.complete(key, token, &done, WEEK).await.unwrap(),
                "released" | "taken" => store.release(key, token).await.unwrap(),
                _ => {}
            }
        }
        let other = PayloadDigest(8);
        assert!(matches!(
            store.begin(taken, other, LEASE).await.unwrap(),
            Begin::Acquired(_)
        ));
        let before = Timestamp::from_system_time(SystemTime::now());
        let answers = answered_after(
            &store,
            &[
                request(completed, DIGEST),
                request(released, DIGEST),
                request(taken, DIGEST),
                request(held, DIGEST),
            ],
        )
        .await;
        let after = Timestamp::from_system_time(SystemTime::now());
        assert_eq!(answers[0], Begin::Duplicate(done));
        // Gone: free from now on, so a redelivery may run at once.
        match answers[1] {
            Begin::InProgress { until } => {
                assert!(until >= before && until <= after, "{until}");
            }
            ref other => panic!("{other:?}"),
        }
        assert_eq!(answers[2], Begin::Conflict);
        match answers[3] {
            Begin::InProgress { until } => {
                assert!(until > before && until <= after.plus(LEASE), "{until}");
            }
            ref other => panic!("{other:?}"),
        }
        let mut connection = store.inner.connection.clone();
        let keys: Vec<String> = [completed, taken, held]
            .iter()
            .map(|k| store.inner.key(k))
            .collect();
        let _: u64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}
