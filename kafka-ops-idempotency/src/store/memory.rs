//! The default store: in memory, sharded, bounded, with TTLs on an injected clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::{Clock, SystemClock, Timestamp};
use xxhash_rust::xxh3::xxh3_128;

use super::{Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome};
use crate::error::IdempotencyError;

#[derive(Debug, Clone)]
enum State {
    InProgress {
        token: FencingToken,
        until: Timestamp,
    },
    Completed {
        outcome: StoredOutcome,
        expires: Timestamp,
        token: FencingToken,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    digest: PayloadDigest,
    state: State,
}

#[derive(Debug, Default)]
struct Shard {
    /// Keyed by a 128-bit hash of the key: a fixed 16 bytes per key whatever its length.
    entries: HashMap<u128, Entry>,
    /// Completed keys, oldest first (may hold keys taken over since; checked when evicting).
    completed: VecDeque<u128>,
}

/// Sharded, bounded in-memory store. When full it evicts expired keys, then the oldest
/// completed ones; keys in progress are never evicted (a full store of them refuses new keys).
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    /// A store of at most `max_keys` keys on the system clock.
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

    fn shard(&self, hash: u128) -> std::sync::MutexGuard<'_, Shard> {
        let index = (hash as u64 % self.shards.len() as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for one more key in `shard`, or says it is full of keys in progress.
    fn make_room(&self, shard: &mut Shard, now: Timestamp) -> Result<(), IdempotencyError> {
        if shard.entries.len() < self.per_shard {
            return Ok(());
        }
        // Expired first: completed past their TTL, leases past their end.
        shard.entries.retain(|_, e| match &e.state {
            State::Completed { expires, .. } => *expires > now,
            State::InProgress { until, .. } => *until > now,
        });
        while shard.entries.len() >= self.per_shard {
            let Some(oldest) = shard.completed.pop_front() else {
                return Err(IdempotencyError::StoreFull(shard.entries.len()));
            };
            if matches!(
                shard.entries.get(&oldest),
                Some(Entry {
                    state: State::Completed { .. },
                    ..
                })
            ) {
                shard.entries.remove(&oldest);
                metrics::counter!("kafka_ops_idempotency_evictions_total").increment(1);
            }
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
        let hash = xxh3_128(key.as_bytes());
        let now = self.clock.wall();
        let mut shard = self.shard(hash);
        let token = FencingToken::random();
        let acquired = Entry {
            digest,
            state: State::InProgress {
                token,
                until: now.plus(lease),
            },
        };
        match shard
            .entries
            .get(&hash)
            .map(|e| (e.digest, e.state.clone()))
        {
            Some((
                stored,
                State::Completed {
                    outcome, expires, ..
                },
            )) if expires > now => Ok(if stored == digest {
                Begin::Duplicate(outcome)
            } else {
                Begin::Conflict
            }),
            Some((stored, State::InProgress { until, .. })) if until > now => {
                Ok(if stored == digest {
                    Begin::InProgress { until }
                } else {
                    Begin::Conflict
                })
            }
            // Expired: taken over in place.
            Some(_) => {
                shard.entries.insert(hash, acquired);
                Ok(Begin::Acquired(token))
            }
            None => {
                self.make_room(&mut shard, now)?;
                shard.entries.insert(hash, acquired);
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
        let hash = xxh3_128(key.as_bytes());
        let now = self.clock.wall();
        let mut shard = self.shard(hash);
        match shard.entries.get_mut(&hash) {
            Some(entry) if matches!(entry.state, State::InProgress { token: t, .. } if t == token) =>
            {
                entry.state = State::Completed {
                    outcome: outcome.clone(),
                    expires: now.plus(ttl),
                    token,
                };
                shard.completed.push_back(hash);
                Ok(())
            }
            Some(Entry {
                state: State::Completed { token: t, .. },
                ..
            }) if *t == token => Ok(()),
            _ => Err(IdempotencyError::StaleToken {
                key: key.to_string(),
            }),
        }
    }

    async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
        let hash = xxh3_128(key.as_bytes());
        let mut shard = self.shard(hash);
        match shard.entries.get(&hash) {
            Some(Entry {
                state: State::InProgress { token: t, .. },
                ..
            }) if *t == token => {
                shard.entries.remove(&hash);
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
    use super::*;
    use kafka_ops_core::{ManualClock, Outcome};

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
