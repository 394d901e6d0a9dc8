//! The idempotent handler layer.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use foldhash::HashMap;
use kafka_ops_core::handler::Layer;
use kafka_ops_core::handler::{Disposition, Handler, HandlerError, Outcome};
use kafka_ops_core::{Record, Timestamp, TopicPartition};

use crate::error::IdempotencyError;
use crate::keys::{KeyDecision, KeyPolicy};
use crate::store::{Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome};

/// What a record meets when another holder has its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InProgressPolicy {
    /// Return a transient error asking the driver to redeliver the record when the holder's
    /// lease ends (it is then a duplicate, or taken over).
    Redeliver,
    /// Ask again every `poll`, up to `max` after the first "in progress" answer, then redeliver.
    Wait {
        /// Between asks.
        poll: Duration,
        /// Longest wait, counted from the first "in progress" answer.
        max: Duration,
    },
}

/// The key and token of the record being handled, for handlers that complete the key
/// themselves inside their own transaction (the PostgreSQL inbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The namespaced key.
    pub key: String,
    /// The fencing token.
    pub token: FencingToken,
    /// How long the completion is to be remembered.
    pub ttl: Duration,
}

tokio::task_local! {
    static CLAIM: Claim;
}

/// The claim of the record the current handler runs for, inside an [`IdempotencyLayer`].
pub fn current_claim() -> Option<Claim> {
    CLAIM.try_with(Clone::clone).ok()
}

/// Offsets already completed, per partition: a run `first..=last` of offsets that every one
/// completed here. A redelivery inside the run (after a rebalance) is a duplicate without
/// asking the store; offsets are immutable, so the same offset is the same record. Offsets
/// outside the run (a seek back to before the first one handled) go to the store. (A topic
/// deleted and recreated restarts its offsets: use a new layer for it.)
#[derive(Debug, Default)]
struct FastPath {
    runs: Mutex<HashMap<TopicPartition, (i64, i64)>>,
}

impl FastPath {
    fn seen(&self, tp: &TopicPartition, offset: i64) -> bool {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.get(tp)
            .is_some_and(|(first, last)| (*first..=*last).contains(&offset))
    }

    fn done(&self, tp: TopicPartition, offset: i64) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, last) = runs.entry(tp).or_insert((offset, offset));
        if offset == *last + 1 {
            *last = offset;
        }
    }
}

/// Skips records whose key was processed before. See the [crate documentation](crate).
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn IdempotencyStore>,
    keys: KeyPolicy,
    lease: Duration,
    ttl: Duration,
    in_progress: InProgressPolicy,
    fast_path: Arc<FastPath>,
    /// The store-latency histogram, registered at the first record (after the application
    /// installed its recorder) so its labels are not built again for every record.
    begin_latency: Arc<std::sync::OnceLock<metrics::Histogram>>,
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.store.name())
            .field("keys", &self.keys)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("in_progress", &self.in_progress)
            .finish()
    }
}

impl IdempotencyLayer {
    /// A layer over `store` keyed by `keys`: 5-minute leases, completed keys kept 7 days,
    /// in-progress collisions redelivered.
    pub fn new(store: Arc<dyn IdempotencyStore>, keys: KeyPolicy) -> Self {
        IdempotencyLayer {
            store,
            keys,
            lease: Duration::from_secs(300),
            ttl: Duration::from_secs(7 * 24 * 3600),
            in_progress: InProgressPolicy::Redeliver,
            fast_path: Arc::default(),
            begin_latency: Arc::default(),
        }
    }

    /// How long a handler may hold a key before others may take it over (longer than the
    /// slowest handling, or duplicates can run).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long completed keys are remembered (longer than any replay you expect).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// What in-progress collisions do.
    pub fn on_in_progress(mut self, policy: InProgressPolicy) -> Self {
        self.in_progress = policy;
        self
    }
}

impl<H: Handler> Layer<H> for IdempotencyLayer {
    type Handler = Idempotent<H>;
    fn layer(&self, inner: H) -> Idempotent<H> {
        Idempotent {
            inner,
            layer: self.clone(),
        }
    }
}

/// The handler [`IdempotencyLayer`] makes.
#[derive(Debug)]
pub struct Idempotent<H> {
    inner: H,
    layer: IdempotencyLayer,
}

/// The error a conflicting record fails with (dead-lettered by default).
#[derive(Debug, thiserror::Error)]
#[error("idempotency key {key} was seen before with a different payload")]
pub struct KeyConflict {
    /// The key.
    pub key: String,
}

/// The error an in-progress collision fails with.
#[derive(Debug, thiserror::Error)]
#[error("idempotency key {key} is being processed elsewhere until {until}")]
pub struct KeyInProgress {
    /// The key.
    pub key: String,
    /// When the holder's lease ends.
    pub until: Timestamp,
}

/// A store's refusal as the record's failure: a key a store calls unusable (the stores of this
/// crate take any key; one of your own may not) fails the same way on every retry, so it is
/// permanent, as a key the extractor refuses is; anything else the store says may pass.
fn store_failure(error: IdempotencyError) -> HandlerError {
    match error {
        IdempotencyError::InvalidKey(_) => HandlerError::permanent(error),
        _ => HandlerError::transient(error),
    }
}

impl<H: Handler> Idempotent<H> {
    async fn begin(&self, key: &str, digest: PayloadDigest) -> Result<Begin, HandlerError> {
        let started = Instant::now();
        let result = self.layer.store.begin(key, digest, self.layer.lease).await;
        self.layer
            .begin_latency
            .get_or_init(|| {
                metrics::histogram!("kafka_ops_idempotency_store_seconds", "op" => "begin", "store" => self.layer.store.name())
            })
            .record(started.elapsed().as_secs_f64());
        result.map_err(store_failure)
    }
}

#[async_trait]
impl<H: Handler> Handler for Idempotent<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        let layer = &self.layer;
        let tp = record.topic_partition();
        let offset = record.offset.get();
        // Before the key: a record completed here needs nothing else.
        if layer.fast_path.seen(&tp, offset) {
            metrics::counter!("kafka_ops_idempotency_duplicates_total", "path" => "offset")
                .increment(1);
            tracing::debug!(%tp, offset, "redelivered record already completed here");
            return Ok(Outcome::Duplicate);
        }
        let key = match layer.keys.decide(record) {
            Ok(KeyDecision::Guard(key)) => key,
            Ok(KeyDecision::Unguarded(why)) => {
                tracing::debug!(%why, "no idempotency key; processing unguarded");
                metrics::counter!("kafka_ops_idempotency_unguarded_total").increment(1);
                let outcome = self.inner.handle(record).await?;
                // Done here all the same: the run of completed offsets goes on past it.
                layer.fast_path.done(tp, offset);
                return Ok(outcome);
            }
            Err(error) => return Err(HandlerError::permanent(error)),
        };
        let digest = PayloadDigest::of(record.value());
        // Read only once a holder is found: the clock costs on every record otherwise.
        let mut waited_since: Option<Instant> = None;
        let token = loop {
            match self.begin(&key, digest).await? {
                Begin::Acquired(token) => break token,
                Begin::Duplicate(stored) => {
                    metrics::counter!("kafka_ops_idempotency_duplicates_total", "path" => "store")
                        .increment(1);
                    tracing::info!(%key, %tp, offset, previous = ?stored.outcome, "duplicate skipped");
                    layer.fast_path.done(tp, offset);
                    return Ok(Outcome::Duplicate);
                }
                Begin::Conflict => {
                    metrics::counter!("kafka_ops_idempotency_conflicts_total").increment(1);
                    return Err(HandlerError::permanent(KeyConflict { key })
                        .with_disposition(Disposition::DeadLetter));
                }
                Begin::InProgress { until } => {
                    metrics::counter!("kafka_ops_idempotency_in_progress_total").increment(1);
                    let since = *waited_since.get_or_insert_with(Instant::now);
                    match layer.in_progress {
                        InProgressPolicy::Wait { poll, max } if since.elapsed() + poll <= max => {
                            tokio::time::sleep(poll).await;
                        }
                        _ => {
                            return Err(HandlerError::transient(KeyInProgress { key, until })
                                .with_disposition(Disposition::RedeliverAt(until)));
                        }
                    }
                }
            }
        };
        let claim = Claim {
            key: key.clone(),
            token,
            ttl: layer.ttl,
        };
        match CLAIM.scope(claim, self.inner.handle(record)).await {
            Ok(outcome) => {
                let stored = StoredOutcome {
                    outcome,
                    result: None,
                };
                match layer.store.complete(&key, token, &stored, layer.ttl).await {
                    Ok(()) => {}
                    Err(IdempotencyError::StaleToken { .. }) => {
                        // The lease ran out while handling: another holder may be running it
                        // too. The work is done either way; say so loudly.
                        metrics::counter!("kafka_ops_idempotency_lease_lost_total").increment(1);
                        tracing::warn!(%key, lease = ?layer.lease, "lease expired before completion; raise the lease above the slowest handling");
                    }
                    Err(error) => return Err(store_failure(error)),
                }
                metrics::counter!("kafka_ops_idempotency_processed_total").increment(1);
                layer.fast_path.done(tp, offset);
                Ok(outcome)
            }
            Err(error) => {
                match layer.store.release(&key, token).await {
                    Ok(()) | Err(IdempotencyError::StaleToken { .. }) => {}
                    Err(release_error) => {
                        tracing::warn!(%key, %release_error, "could not release the key; it frees itself when the lease ends");
                    }
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests;
