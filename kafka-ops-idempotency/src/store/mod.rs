//! The store contract: begin → (acquired with a fencing token | duplicate with the stored
//! outcome | in progress until T | conflict), and complete/release that only the current token
//! may do.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::Timestamp;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

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

/// The longest key, in bytes (namespace included), a store holds as it is; a longer one is
/// stored under [`storage_key`]'s bounded form. PostgreSQL's primary-key index holds about
/// 2.7 KB a row; a bound well below it, applied by every store, means every store holds the
/// same keys the same way.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest lease or TTL a store keeps (36 500 days, about a century): longer ones, up to
/// [`Duration::MAX`], are cut to it, because Redis refuses expiries, and PostgreSQL intervals
/// and times, past their ranges.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How much of a key's head, in bytes, its derived form keeps: enough to find the namespace
/// and the start of the id when looking at the store, small enough to keep the form short.
const KEPT_HEAD_BYTES: usize = 256;

/// What a NUL byte of the kept head is written as: ASCII, so the derived form asks nothing
/// more of a database's encoding than the key itself does.
const NUL_IN_HEAD: &str = "\\0";

/// Between the kept head and the digest in the derived form.
const DIGEST_MARK: &str = "~xxh3:";

/// The longest key [`storage_key`] derives, in bytes.
const MAX_DERIVED_BYTES: usize = KEPT_HEAD_BYTES + DIGEST_MARK.len() + 32;

/// The key a store holds for `key`. A key every store can hold as it is (no NUL byte, which
/// PostgreSQL's `text` cannot hold, and at most [`MAX_KEY_BYTES`] bytes) is returned unchanged,
/// so what is stored already stays valid. Any other key (a record key written by Kafka's
/// `LongSerializer` is UTF-8 with NUL bytes; a hex-encoded binary key may be kilobytes) is held
/// as its first 256 bytes, NUL bytes written as `\0` and cut at a character boundary, then
/// `~xxh3:` and the 32 hexadecimal digits of the xxh3-128 digest of the whole key. That form is
/// deterministic, at most 294 bytes and without a NUL, and shared with no other key unless two
/// 128-bit digests collide or a key is itself written in this form. It never changes between
/// versions (stored keys depend on it), and mapping a mapped key changes nothing.
///
/// Every store of this crate maps every key through it, in single calls, batches and the
/// PostgreSQL inbox alike, and answers (a [`StaleToken`](IdempotencyError::StaleToken), say)
/// with the caller's key. Stores of your own should map keys the same way, so a key is held
/// alike in all of them: the [conformance suite](crate::conformance) checks that such keys work.
pub fn storage_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES && !key.as_bytes().contains(&0) {
        return Cow::Borrowed(key);
    }
    let mut stored = String::with_capacity(MAX_DERIVED_BYTES);
    for c in key.chars() {
        let written = if c == '\0' {
            NUL_IN_HEAD.len()
        } else {
            c.len_utf8()
        };
        if stored.len() + written > KEPT_HEAD_BYTES {
            break;
        }
        match c {
            '\0' => stored.push_str(NUL_IN_HEAD),
            c => stored.push(c),
        }
    }
    stored.push_str(DIGEST_MARK);
    // Writing to a String cannot fail.
    let _ = write!(stored, "{:032x}", xxh3_128(key.as_bytes()));
    Cow::Owned(stored)
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
            Some(bytes) => PayloadDigest(xxh3_128(bytes)),
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
#[cfg(any(feature = "redis", feature = "postgres", feature = "redb"))]
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
    /// key. An `Err` is the store's failure: keys before the failing one may be held, and free
    /// themselves when their leases end.
    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError> {
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
    /// [`InvalidKey`](IdempotencyError::InvalidKey) from a store that refuses that one key (the
    /// others are completed all the same; the stores of this crate take every key, through
    /// [`storage_key`]). Stores that talk to a server do it in one round trip; the default
    /// completes key by key. An `Err` is the store's failure: some keys may be completed, and
    /// completing them again with the same tokens is harmless.
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

    use std::borrow::Cow;

    use super::{
        KEPT_HEAD_BYTES, MAX_DERIVED_BYTES, MAX_DURATION, MAX_KEY_BYTES, clamp_duration,
        storage_key,
    };

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
    fn a_key_every_store_holds_is_kept_as_it_is() {
        for key in [
            "svc:evt-1".to_string(),
            String::new(),
            "k".repeat(MAX_KEY_BYTES),
            // What a derived form looks like, and the stand-in for NUL, are ordinary text.
            "svc:\\0~xxh3:0123".to_string(),
        ] {
            assert!(
                matches!(storage_key(&key), Cow::Borrowed(k) if k == key),
                "{key}"
            );
        }
    }

    /// Checks the derived form's promises for `key`, and returns it.
    fn derived(key: &str) -> String {
        let Cow::Owned(stored) = storage_key(key) else {
            panic!("{key:?} kept as it is");
        };
        assert!(
            stored.len() <= MAX_DERIVED_BYTES && MAX_DERIVED_BYTES == 294,
            "{stored}"
        );
        assert!(!stored.contains('\0'), "{stored:?}");
        // Deterministic, and a fixed point: a store that maps twice holds the same key.
        assert_eq!(storage_key(key), stored);
        assert!(matches!(storage_key(&stored), Cow::Borrowed(_)), "{stored}");
        stored
    }

    #[test]
    fn a_key_with_a_nul_or_too_long_is_held_as_a_readable_head_and_its_digest() {
        // Kafka's LongSerializer writes 42 as seven NUL bytes and `*`.
        let long_42 = "billing:\0\0\0\0\0\0\0*";
        assert_eq!(
            derived(long_42),
            format!(
                "billing:\\0\\0\\0\\0\\0\\0\\0*~xxh3:{:032x}",
                super::xxh3_128(long_42.as_bytes())
            )
        );
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(derived(&long).starts_with(&"k".repeat(KEPT_HEAD_BYTES)));
        // Cut at a character boundary: neither a 2-byte character nor the 2-byte stand-in for
        // NUL straddles the head's end.
        let wide = format!("x{}", "é".repeat(MAX_KEY_BYTES));
        assert!(derived(&wide).starts_with(&format!("x{}~", "é".repeat(127))));
        let nuls = "\0".repeat(MAX_KEY_BYTES * 3);
        assert!(derived(&nuls).starts_with(&format!("{}~", "\\0".repeat(128))));
    }

    #[test]
    fn keys_that_differ_anywhere_are_held_apart() {
        let head = "h".repeat(1100);
        let mut keys: Vec<String> = ["a", "b", "a\0"]
            .iter()
            .map(|tail| format!("{head}{tail}"))
            .collect();
        keys.extend(["a\0".into(), "a\0\0".into(), "\0a".into(), "a".into()]);
        // A NUL and what stands for it in the head are different keys.
        keys.extend(["a\\0".into(), format!("{head}\\0"), format!("{head}\0")]);
        let stored: std::collections::HashSet<String> =
            keys.iter().map(|k| storage_key(k).into_owned()).collect();
        assert_eq!(stored.len(), keys.len(), "{stored:?}");
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
