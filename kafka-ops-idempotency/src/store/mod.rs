//! The store contract: begin → (acquired with a fencing token | duplicate with the stored
//! outcome | in progress until T | conflict), and complete/release that only the current token
//! may do.

use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::IdempotencyError;

#[cfg(any(feature = "redis", feature = "postgres", test))]
pub(crate) mod coalesce;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "redis")]
pub mod redis;

/// The longest key, in bytes (namespace included), any store takes. PostgreSQL's primary-key
/// index holds about 2.7 KB a row; a bound well below it, applied by every store, means a key one
/// store takes every store takes, and moving between stores never changes which records fail.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest lease or TTL a store keeps (36 500 days, about a century): longer ones, up to
/// [`Duration::MAX`], are cut to it, because Redis refuses expiries, and PostgreSQL intervals
/// and times, past their ranges.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks that every store can hold `key`: no NUL byte (PostgreSQL's `text` cannot hold one)
/// and at most [`MAX_KEY_BYTES`] bytes. Every store calls it before a key reaches its backend,
/// so a bad key is refused on its own with [`InvalidKey`](IdempotencyError::InvalidKey) (a
/// permanent failure of its record) instead of failing a statement shared with other keys.
/// Stores of your own should call it too: the [conformance suite](crate::conformance) checks
/// the rule.
pub fn check_key(key: &str) -> Result<(), IdempotencyError> {
    let problem = if key.len() > MAX_KEY_BYTES {
        format!(
            "{} bytes, more than the {MAX_KEY_BYTES} a store holds",
            key.len()
        )
    } else if key.as_bytes().contains(&0) {
        "it contains a NUL byte".to_string()
    } else {
        return Ok(());
    };
    // The head is enough to find the record; the whole key may be kilobytes.
    let head: String = key.chars().take(64).collect();
    let more = if head.len() < key.len() { "…" } else { "" };
    Err(IdempotencyError::InvalidKey(format!(
        "key {head:?}{more} cannot be stored: {problem}"
    )))
}

/// `duration` cut to [`MAX_DURATION`]. Every store passes its leases and TTLs through it, so
/// all of them keep the same times, and stores of your own should too.
pub fn clamp_duration(duration: Duration) -> Duration {
    duration.min(MAX_DURATION)
}

/// A 128-bit digest of a record's payload: the same key with a different digest is a conflict
/// (a different event reusing the id), not a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PayloadDigest(pub u128);

impl PayloadDigest {
    /// The digest of `payload` (xxh3-128; an empty or absent payload has its own digest).
    pub fn of(payload: Option<&[u8]>) -> Self {
        match payload {
            None => PayloadDigest(0),
            Some(bytes) => PayloadDigest(xxhash_rust::xxh3::xxh3_128(bytes)),
        }
    }

    /// As 16 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// From 16 big-endian bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(PayloadDigest(u128::from_be_bytes(bytes.try_into().ok()?)))
    }
}

/// Proof of holding a key's lease; only the current holder's token completes or releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// A fresh random token (unique with overwhelming probability).
    pub fn random() -> Self {
        FencingToken(fastrand::u64(1..))
    }
}

/// What a completed key remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutcome {
    /// How the record ended (`processed`, `skipped`, ...).
    pub outcome: kafka_ops_core::handler::Outcome,
    /// The handler's result, when it stores one (a response to return to a duplicate).
    pub result: Option<Vec<u8>>,
}

/// The answer to [`IdempotencyStore::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The caller holds the key until its lease ends; complete or release it with the token.
    Acquired(FencingToken),
    /// Done before, with this outcome.
    Duplicate(StoredOutcome),
    /// Someone else holds it until this time.
    InProgress {
        /// When the holder's lease ends (it may be taken over then).
        until: Timestamp,
    },
    /// Seen before with a different payload.
    Conflict,
}

/// One key for [`IdempotencyStore::begin_many`]: what [`begin`](IdempotencyStore::begin) takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginRequest {
    /// The namespaced key.
    pub key: String,
    /// The record's payload digest.
    pub digest: PayloadDigest,
    /// How long the key is held when acquired.
    pub lease: Duration,
}

/// One key for [`IdempotencyStore::complete_many`]: what
/// [`complete`](IdempotencyStore::complete) takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The key.
    pub key: String,
    /// The token that holds it.
    pub token: FencingToken,
    /// What to remember.
    pub outcome: StoredOutcome,
    /// How long to remember it.
    pub ttl: Duration,
}

/// [`check_key`] for every key of a batch: the first refusal, naming its position.
pub(crate) fn check_keys(requests: &[BeginRequest]) -> Result<(), IdempotencyError> {
    for (position, request) in requests.iter().enumerate() {
        if let Err(IdempotencyError::InvalidKey(why)) = check_key(&request.key) {
            return Err(IdempotencyError::InvalidKey(format!(
                "request {position} of the batch: {why}"
            )));
        }
    }
    Ok(())
}

/// The positions of the completions whose keys [`check_key`] takes, and an answer for each
/// completion with the refusals already in place (`None` for the others, to be answered).
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn checked_completions(
    completions: &[Completion],
) -> (Vec<usize>, Vec<Option<Result<(), IdempotencyError>>>) {
    let mut valid = Vec::with_capacity(completions.len());
    let answers = completions
        .iter()
        .enumerate()
        .map(|(position, completion)| match check_key(&completion.key) {
            Ok(()) => {
                valid.push(position);
                None
            }
            Err(error) => Some(Err(error)),
        })
        .collect();
    (valid, answers)
}

/// The answers of a `complete_many`, once every one is given (a store's failure otherwise).
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn all_answered(
    store: &'static str,
    answers: Vec<Option<Result<(), IdempotencyError>>>,
) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
    answers
        .into_iter()
        .map(|answer| {
            answer.ok_or_else(|| IdempotencyError::store(store, "a key was not answered"))
        })
        .collect()
}

/// Positions `0..keys.len()` in rounds in which no key appears twice, keeping order: a key's
/// k-th occurrence goes into round k. A store whose one statement cannot touch a key twice (SQL's
/// `ON CONFLICT DO UPDATE`) runs the rounds one after another, which is what answering the keys
/// one by one in order would do.
#[cfg(any(feature = "postgres", test))]
pub(crate) fn rounds<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<Vec<usize>> {
    let mut seen: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (position, key) in keys.into_iter().enumerate() {
        let occurrence = seen.entry(key).or_insert(0);
        if rounds.len() <= *occurrence {
            rounds.push(Vec::new());
        }
        rounds[*occurrence].push(position);
        *occurrence += 1;
    }
    rounds
}

/// The answer to a fenced write that changed `rows` rows: done when it changed one, else the
/// token no longer held `key`.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn fenced(rows: u64, key: &str) -> Result<(), IdempotencyError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(IdempotencyError::StaleToken {
            key: key.to_string(),
        })
    }
}

/// Remembers which keys were processed. Object-safe: use it as `Arc<dyn IdempotencyStore>`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Tries to take `key` for `lease`. A key whose lease expired may be taken over; a completed
    /// key whose TTL passed is forgotten.
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError>;

    /// Marks `key` done (remembered for `ttl`). Fails with
    /// [`StaleToken`](IdempotencyError::StaleToken) unless `token` holds the key; completing
    /// again with the same token succeeds and changes nothing (the first outcome, and its
    /// result, stay: an inbox completion in the handler's transaction comes before the layer's).
    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError>;

    /// Gives the key up so a retry may run. Fails with
    /// [`StaleToken`](IdempotencyError::StaleToken) unless `token` holds it.
    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError>;

    /// [`begin`](Self::begin) for many keys, answered in order as if one after another (a key
    /// that appears twice is acquired at most once; its later copies see it in progress or in
    /// conflict). Stores that talk to a server do it in one round trip; the default asks key by
    /// key. A key [`check_key`] refuses fails the whole call with
    /// [`InvalidKey`](IdempotencyError::InvalidKey) before any key is taken (an answer has no
    /// place for one key's error; ask again without it). Any other `Err` is the store's
    /// failure: keys before the failing one may be held, and free themselves when their leases
    /// end.
    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
        check_keys(requests)?;
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(
                self.begin(&request.key, request.digest, request.lease)
                    .await?,
            );
        }
        Ok(answers)
    }

    /// [`complete`](Self::complete) for many keys, in order: one answer per completion, `Ok`,
    /// [`StaleToken`](IdempotencyError::StaleToken), or
    /// [`InvalidKey`](IdempotencyError::InvalidKey) for a key [`check_key`] refuses (the others
    /// are completed all the same). Stores that talk to a server do it in one round trip; the
    /// default completes key by key. An `Err` is the store's failure: some keys may be
    /// completed, and completing them again with the same tokens is harmless.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        let mut answers = Vec::with_capacity(completions.len());
        for c in completions {
            match self.complete(&c.key, c.token, &c.outcome, c.ttl).await {
                Err(
                    error @ (IdempotencyError::StaleToken { .. } | IdempotencyError::InvalidKey(_)),
                ) => answers.push(Err(error)),
                Err(error) => return Err(error),
                Ok(()) => answers.push(Ok(())),
            }
        }
        Ok(answers)
    }

    /// The store's name (metrics, logs).
    fn name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_DURATION, MAX_KEY_BYTES, check_key, clamp_duration};
    use crate::error::IdempotencyError;

    #[test]
    fn durations_past_the_longest_are_cut_to_it() {
        assert_eq!(clamp_duration(Duration::MAX), MAX_DURATION);
        assert_eq!(clamp_duration(MAX_DURATION), MAX_DURATION);
        assert_eq!(
            clamp_duration(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        // What the stores derive from it stays in their ranges: Redis's milliseconds after
        // now, PostgreSQL's intervals (microseconds in an i64) after now.
        let millis = clamp_duration(Duration::MAX).as_millis();
        assert!(millis < u128::from(u64::MAX / 1000), "{millis}");
        let micros = clamp_duration(Duration::MAX).as_micros();
        assert!(micros < i64::MAX as u128 / 2, "{micros}");
    }

    #[test]
    fn a_key_is_refused_for_a_nul_byte_or_more_bytes_than_the_bound() {
        let invalid = |key: &str| matches!(check_key(key), Err(IdempotencyError::InvalidKey(_)));
        assert!(check_key("svc:evt-1").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(invalid(&"k".repeat(MAX_KEY_BYTES + 1)));
        assert!(invalid("svc:evt\0"));
        // Bytes, not characters: 513 two-byte characters are too long.
        let wide = "é".repeat(MAX_KEY_BYTES / 2 + 1);
        assert!(invalid(&wide));
        // The message names the key by its head only.
        let Err(IdempotencyError::InvalidKey(why)) = check_key(&wide) else {
            panic!("not refused");
        };
        assert!(why.len() < 300, "{why}");
    }

    #[test]
    fn rounds_keep_order_and_put_each_repeat_in_the_next_round() {
        assert_eq!(
            super::rounds(["a", "b", "a", "c", "a", "b"]),
            vec![vec![0, 1, 3], vec![2, 5], vec![4]]
        );
        assert!(super::rounds([]).is_empty());
    }
}
