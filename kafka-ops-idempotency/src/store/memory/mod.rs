//! The default store: in memory, sharded, bounded, with TTLs on an injected clock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::{Clock, SystemClock, Timestamp};
use xxhash_rust::xxh3::xxh3_128;

use super::{
    Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome, clamp_duration,
    storage_key,
};
use crate::error::IdempotencyError;

mod table;

use table::Table;

/// A key's 128-bit hash, as two words (8-byte aligned, so an entry with its key is 48 bytes,
/// not 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyHash(u64, u64);

impl KeyHash {
    /// The hash of the key as every store holds it. Memory could hash any key as it is, but the
    /// keys another store holds as one (a key, and one written in its derived form) must be one
    /// here too.
    fn of(key: &str) -> Self {
        Self::split(xxh3_128(storage_key(key).as_bytes()))
    }

    fn split(hash: u128) -> Self {
        KeyHash((hash >> 64) as u64, hash as u64)
    }
}

/// The stored results' hasher: the keys already are uniform 128-bit hashes, so hashing them
/// again (SipHash, the std default) would only cost time. Folds the two words together.
#[derive(Debug, Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `KeyHash` (it writes words); FNV-1a keeps any other use sound.
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}

/// One key's state in 32 bytes, whatever the key's length (48 with the key, in the slab).
#[derive(Debug, Clone)]
struct Entry {
    /// 64 bits of the payload digest: a different payload under the same key goes unnoticed
    /// with probability 2^-64.
    digest: u64,
    token: FencingToken,
    /// The lease's end while in progress; the expiry once completed.
    deadline: Timestamp,
    /// `None` while in progress.
    outcome: Option<kafka_ops_core::handler::Outcome>,
    /// Whether the shard's side table holds a stored result for the key (few handlers store
    /// one, so it is not paid for in every slot).
    has_result: bool,
    /// When it was completed, as the shard's count of completions then: eviction takes the
    /// oldest first. Compared by distance from the count now, so the count may wrap; a key
    /// that outlives 2^32 later completions in its shard only looks younger than it is.
    completed_as: u32,
}

fn short_digest(digest: PayloadDigest) -> u64 {
    digest.0 as u64 ^ (digest.0 >> 64) as u64
}

impl Entry {
    fn is_completed(&self) -> bool {
        self.outcome.is_some()
    }
}

#[derive(Debug, Default)]
struct Shard {
    entries: Table<Entry>,
    /// Stored results of completed keys that have one.
    results: HashMap<KeyHash, Box<[u8]>, BuildHasherDefault<FoldHasher>>,
    /// Completions so far (wrapping): stamps each completed entry, so eviction can tell the
    /// oldest without a queue of keys (which cost 16 bytes a key).
    completions: u32,
}

impl Shard {
    /// Keeps the entries `keep` says so, and the stored results of those only.
    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let results = &mut self.results;
        self.entries.retain(|hash, entry| {
            let kept = keep(entry);
            if !kept && entry.has_result {
                results.remove(hash);
            }
            kept
        });
    }
}

/// Sharded, bounded in-memory store. When full it evicts expired keys, then the oldest
/// completed ones, a sixteenth of a shard at a time; keys in progress are never evicted (a
/// full store of them refuses new keys).
///
/// Leases and TTLs are timed by the clock's [`coarse_wall`](Clock::coarse_wall): to within a
/// kernel tick on the system clock (reading the precise clock twice per key was a fifth of
/// the store's cost), exactly on a test clock.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    /// A store of at most `max_keys` keys on the system clock.
    ///
    /// The bound is kept per shard (an equal share each), so eviction can start a little
    /// before `max_keys` keys in all: size it with some headroom over the keys you must keep.
    pub fn new(max_keys: usize) -> Self {
        Self::with_clock(max_keys, Arc::new(SystemClock))
    }

    /// A store of at most `max_keys` keys, timed by `clock`.
    pub fn with_clock(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let shards = std::thread::available_parallelism()
            .map_or(8, |n| n.get() * 4)
            .clamp(1, 64);
        let shards = shards.min(max_keys.max(1));
        MemoryStore {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_keys.div_ceil(shards).max(1),
            clock,
        }
    }

    /// Keys held now (all states).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: KeyHash) -> std::sync::MutexGuard<'_, Shard> {
        let index = (hash.0 % self.shards.len() as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for one more key in `shard`, or says it is full of keys in progress.
    fn make_room(&self, shard: &mut Shard, now: Timestamp) -> Result<(), IdempotencyError> {
        if shard.entries.len() < self.per_shard {
            return Ok(());
        }
        // A pass over the shard: drop what has expired (completed past their TTL, leases past
        // their end), and note the age of every completed key that is left.
        let completions = shard.completions;
        let mut ages = Vec::with_capacity(shard.entries.len());
        shard.retain(|entry| {
            let live = entry.deadline > now;
            if live && entry.is_completed() {
                ages.push(completions.wrapping_sub(entry.completed_as));
            }
            live
        });
        // Then evict the oldest completed until a sixteenth of the shard is free, so the pass
        // is paid once per that many new keys, not on every one.
        let room = (self.per_shard / 16).max(1);
        let excess = (shard.entries.len() + room).saturating_sub(self.per_shard);
        let evict = excess.min(ages.len());
        if evict > 0 {
            let cutoff_index = ages.len() - evict;
            let (_, cutoff, _) = ages.select_nth_unstable(cutoff_index);
            let cutoff = *cutoff;
            shard.retain(|entry| {
                !(entry.is_completed() && completions.wrapping_sub(entry.completed_as) >= cutoff)
            });
            metrics::counter!("kafka_ops_idempotency_evictions_total").increment(evict as u64);
        }
        if shard.entries.len() >= self.per_shard {
            return Err(IdempotencyError::StoreFull(shard.entries.len()));
        }
        Ok(())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        let lease = clamp_duration(lease);
        let hash = KeyHash::of(key);
        let now = self.clock.coarse_wall();
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let acquire = |digest: PayloadDigest| {
            let token = FencingToken::random();
            let entry = Entry {
                digest: short_digest(digest),
                token,
                deadline: now.plus(lease),
                outcome: None,
                has_result: false,
                completed_as: 0,
            };
            (token, entry)
        };
        match shard.entries.get_mut(hash) {
            Some(entry) => {
                if entry.deadline <= now {
                    // Expired: taken over in place.
                    let (token, acquired) = acquire(digest);
                    let had_result = std::mem::replace(entry, acquired).has_result;
                    if had_result {
                        shard.results.remove(&hash);
                    }
                    return Ok(Begin::Acquired(token));
                }
                Ok(if entry.digest != short_digest(digest) {
                    Begin::Conflict
                } else if let Some(outcome) = entry.outcome {
                    let result = if entry.has_result {
                        shard.results.get(&hash).map(|bytes| bytes.to_vec())
                    } else {
                        None
                    };
                    Begin::Duplicate(StoredOutcome { outcome, result })
                } else {
                    Begin::InProgress {
                        until: entry.deadline,
                    }
                })
            }
            None => {
                self.make_room(shard, now)?;
                let (token, acquired) = acquire(digest);
                shard.entries.insert_new(hash, acquired);
                Ok(Begin::Acquired(token))
            }
        }
    }

    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let ttl = clamp_duration(ttl);
        let hash = KeyHash::of(key);
        let now = self.clock.coarse_wall();
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        match shard.entries.get_mut(hash) {
            Some(entry) if entry.token == token && !entry.is_completed() => {
                entry.outcome = Some(outcome.outcome);
                entry.has_result = outcome.result.is_some();
                if let Some(result) = &outcome.result {
                    shard.results.insert(hash, Box::from(result.as_slice()));
                }
                entry.deadline = now.plus(ttl);
                entry.completed_as = shard.completions;
                shard.completions = shard.completions.wrapping_add(1);
                Ok(())
            }
            // Completing again with the same token is a no-op.
            Some(entry) if entry.token == token => Ok(()),
            _ => Err(IdempotencyError::StaleToken {
                key: key.to_string(),
            }),
        }
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let hash = KeyHash::of(key);
        let mut shard = self.shard(hash);
        match shard.entries.get(hash) {
            Some(entry) if entry.token == token && !entry.is_completed() => {
                shard.entries.remove(hash);
                Ok(())
            }
            _ => Err(IdempotencyError::StaleToken {
                key: key.to_string(),
            }),
        }
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn eviction_takes_the_oldest_completed_a_sixteenth_at_a_time_across_a_wrap() {
        let store = MemoryStore {
            shards: vec![Mutex::new(Shard {
                // The count wraps half way through the keys below.
                completions: u32::MAX - 31,
                ..Shard::default()
            })],
            per_shard: 64,
            clock: Arc::new(ManualClock::new()),
        };
        for i in 0..64 {
            let key = format!("k{i}");
            let Begin::Acquired(token) = store.begin(&key, D, LEASE).await.unwrap() else {
                panic!("{key} not acquired")
            };
            store.complete(&key, token, &done(), LEASE).await.unwrap();
        }
        assert!(matches!(
            store.begin("new", D, LEASE).await.unwrap(),
            Begin::Acquired(_)
        ));
        // 64 / 16 = 4 went, the four completed first.
        assert_eq!(store.len(), 61);
        let shard = store.shards[0].lock().unwrap();
        for i in 0..64 {
            let held = shard.entries.contains(KeyHash::of(&format!("k{i}")));
            assert_eq!(held, i >= 4, "k{i}");
        }
    }

    use super::*;
    use kafka_ops_core::ManualClock;
    use kafka_ops_core::handler::Outcome;

    #[test]
    fn a_slab_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Option<(KeyHash, Entry)>>(), 48);
    }

    fn done() -> StoredOutcome {
        StoredOutcome {
            outcome: Outcome::Processed,
            result: None,
        }
    }

    const LEASE: Duration = Duration::from_secs(60);
    const D: PayloadDigest = PayloadDigest(1);

    #[tokio::test]
    async fn under_pressure_it_evicts_the_oldest_completed_never_a_key_in_progress() {
        let clock = Arc::new(ManualClock::new());
        let store = MemoryStore::with_clock(4, clock.clone());
        // One shard of four keys, so the order of eviction is exact.
        assert_eq!(store.shards.len(), 4.min(store.shards.len()));
        let store = MemoryStore {
            shards: vec![Mutex::new(Shard::default())],
            per_shard: 4,
            clock,
        };
        let mut tokens = Vec::new();
        for key in ["a", "b", "c", "d"] {
            let Begin::Acquired(token) = store.begin(key, D, LEASE).await.unwrap() else {
                panic!()
            };
            tokens.push(token);
        }
        // Full of keys in progress: a fifth is refused, none is dropped.
        assert!(matches!(
            store.begin("e", D, LEASE).await,
            Err(IdempotencyError::StoreFull(4))
        ));
        // Complete b then a: the oldest completed (b) goes first.
        store
            .complete("b", tokens[1], &done(), LEASE)
            .await
            .unwrap();
        store
            .complete("a", tokens[0], &done(), LEASE)
            .await
            .unwrap();
        assert!(matches!(
            store.begin("e", D, LEASE).await.unwrap(),
            Begin::Acquired(_)
        ));
        // b was evicted (it runs again: a true duplicate would be processed twice, which is
        // why the bound must exceed the keys seen within the replay horizon); a made room.
        assert!(matches!(
            store.begin("b", D, LEASE).await.unwrap(),
            Begin::Acquired(_)
        ));
        // Now c, d, e and b are all in progress: nothing may go.
        assert!(matches!(
            store.begin("a", D, LEASE).await,
            Err(IdempotencyError::StoreFull(4))
        ));
        // c and d are still held by their first holders.
        assert!(matches!(
            store.begin("c", D, LEASE).await.unwrap(),
            Begin::InProgress { .. }
        ));
        store
            .complete("c", tokens[2], &done(), LEASE)
            .await
            .unwrap();
        store
            .complete("d", tokens[3], &done(), LEASE)
            .await
            .unwrap();
        assert_eq!(store.len(), 4);
    }

    #[tokio::test]
    async fn stored_results_go_with_their_keys_when_evicted_or_expired() {
        let clock = Arc::new(ManualClock::new());
        let store = MemoryStore {
            shards: vec![Mutex::new(Shard::default())],
            per_shard: 2,
            clock: clock.clone(),
        };
        let with_result = StoredOutcome {
            outcome: Outcome::Processed,
            result: Some(b"receipt".to_vec()),
        };
        for (key, ttl) in [("short", Duration::from_secs(1)), ("long", LEASE)] {
            let Begin::Acquired(token) = store.begin(key, D, LEASE).await.unwrap() else {
                panic!("{key} not acquired")
            };
            store.complete(key, token, &with_result, ttl).await.unwrap();
        }
        clock.advance(Duration::from_secs(2));
        // Full: "short" has expired and goes, with its result; that is room enough.
        assert!(matches!(
            store.begin("new", D, LEASE).await.unwrap(),
            Begin::Acquired(_)
        ));
        {
            let shard = store.shards[0].lock().unwrap();
            assert_eq!(shard.entries.len(), 2);
            assert_eq!(shard.results.len(), 1);
            assert!(shard.results.contains_key(&KeyHash::of("long")));
        }
        // Full again, nothing expired: "long" is the oldest completed and goes, with its result.
        assert!(matches!(
            store.begin("newer", D, LEASE).await.unwrap(),
            Begin::Acquired(_)
        ));
        let shard = store.shards[0].lock().unwrap();
        assert_eq!(shard.entries.len(), 2);
        assert!(
            shard.results.is_empty(),
            "{} results left",
            shard.results.len()
        );
    }

    #[tokio::test]
    async fn a_bounded_store_holds_its_bound() {
        let store = MemoryStore::new(1_000);
        for i in 0..5_000 {
            let key = format!("k{i}");
            let Begin::Acquired(token) = store.begin(&key, D, LEASE).await.unwrap() else {
                panic!()
            };
            store.complete(&key, token, &done(), LEASE).await.unwrap();
        }
        assert!(store.len() <= 1_000 + store.shards.len(), "{}", store.len());
    }
}
