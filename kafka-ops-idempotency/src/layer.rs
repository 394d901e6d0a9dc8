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
    /// Ask again every `poll`, up to `max`, then redeliver.
    Wait {
        /// Between asks.
        poll: Duration,
        /// Longest wait.
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

fn store_failure(error: IdempotencyError) -> HandlerError {
    HandlerError::transient(error)
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
        let waited_since = Instant::now();
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
                    match layer.in_progress {
                        InProgressPolicy::Wait { poll, max }
                            if waited_since.elapsed() + poll <= max =>
                        {
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kafka_ops_core::handler::{HandlerBuilder, handler_fn};
    use kafka_ops_core::{Clock, ErrorClass, ManualClock, Offset};
    use tokio::sync::Notify;

    use super::*;
    use crate::keys::{Coordinates, HeaderKey, MissingKey};
    use crate::store::memory::MemoryStore;

    /// Counts the store calls the layer makes, so the fast path can be seen skipping them.
    #[derive(Debug)]
    struct CountingStore {
        inner: MemoryStore,
        begins: AtomicUsize,
    }

    #[async_trait]
    impl IdempotencyStore for CountingStore {
        async fn begin(
            &self,
            key: &str,
            digest: PayloadDigest,
            lease: Duration,
        ) -> Result<Begin, IdempotencyError> {
            self.begins.fetch_add(1, Ordering::SeqCst);
            self.inner.begin(key, digest, lease).await
        }
        async fn complete(
            &self,
            key: &str,
            token: FencingToken,
            outcome: &StoredOutcome,
            ttl: Duration,
        ) -> Result<(), IdempotencyError> {
            self.inner.complete(key, token, outcome, ttl).await
        }
        async fn release(&self, key: &str, token: FencingToken) -> Result<(), IdempotencyError> {
            self.inner.release(key, token).await
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        store: Arc<CountingStore>,
        calls: Arc<AtomicUsize>,
    }

    fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(CountingStore {
            inner: MemoryStore::with_clock(1_000, clock.clone()),
            begins: AtomicUsize::new(0),
        });
        Fixture {
            clock,
            store,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn layer(store: Arc<CountingStore>) -> IdempotencyLayer {
        IdempotencyLayer::new(store, KeyPolicy::new("svc", HeaderKey("event-id".into())))
            .with_lease(Duration::from_secs(30))
    }

    fn event(offset: i64, id: &str, value: &[u8]) -> Record<'static> {
        Record::new("orders", 0, Offset::new(offset).unwrap())
            .with_value(value.to_vec())
            .with_header("event-id", id.as_bytes().to_vec())
    }

    fn counting(calls: &Arc<AtomicUsize>) -> impl Handler + use<> {
        let calls = calls.clone();
        handler_fn(move |_record: &Record<'_>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(Outcome::Processed)
            }
        })
    }

    #[tokio::test]
    async fn a_replayed_event_is_a_duplicate_and_a_redelivered_offset_skips_the_store() {
        let f = fixture();
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(counting(&f.calls));

        assert_eq!(
            handler.handle(&event(0, "e1", b"a")).await.unwrap(),
            Outcome::Processed
        );
        assert_eq!(
            handler.handle(&event(1, "e2", b"b")).await.unwrap(),
            Outcome::Processed
        );
        // The same event at a new offset (a replay): the store knows it.
        assert_eq!(
            handler.handle(&event(9, "e1", b"a")).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(f.store.begins.load(Ordering::SeqCst), 3);
        // Offsets 0 and 1 redelivered after a rebalance: answered without the store.
        assert_eq!(
            handler.handle(&event(0, "e1", b"a")).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(
            handler.handle(&event(1, "e2", b"b")).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(f.store.begins.load(Ordering::SeqCst), 3);
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_fast_path_only_covers_a_contiguous_run_of_completed_offsets() {
        let f = fixture();
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(counting(&f.calls));
        handler.handle(&event(0, "e0", b"x")).await.unwrap();
        // Offset 1 never completed here (another consumer had it, say); 2 did.
        handler.handle(&event(2, "e2", b"x")).await.unwrap();
        let before = f.store.begins.load(Ordering::SeqCst);
        // 2 is above the mark (0), so the store is asked — and answers "duplicate".
        assert_eq!(
            handler.handle(&event(2, "e2", b"x")).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(f.store.begins.load(Ordering::SeqCst), before + 1);
        // 1 arrives: processed, and the mark moves to 1.
        assert_eq!(
            handler.handle(&event(1, "e1", b"x")).await.unwrap(),
            Outcome::Processed
        );
        handler.handle(&event(1, "e1", b"x")).await.unwrap();
        assert_eq!(f.store.begins.load(Ordering::SeqCst), before + 2);
    }

    #[tokio::test]
    async fn a_seek_back_before_the_first_offset_handled_asks_the_store() {
        let f = fixture();
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(counting(&f.calls));
        // The group's committed position was 100; 50 was dead-lettered long ago, never done.
        handler.handle(&event(100, "e100", b"x")).await.unwrap();
        assert_eq!(
            handler.handle(&event(50, "e50", b"x")).await.unwrap(),
            Outcome::Processed
        );
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_same_key_with_another_payload_is_a_conflict_for_the_dead_letter_path() {
        let f = fixture();
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(counting(&f.calls));
        handler.handle(&event(0, "e1", b"first")).await.unwrap();
        let error = handler
            .handle(&event(1, "e1", b"second"))
            .await
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert_eq!(error.disposition(), Disposition::DeadLetter);
        assert!(error.downcast_ref::<KeyConflict>().is_some());
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_handling_releases_the_key_so_a_retry_runs() {
        let f = fixture();
        let attempts = Arc::new(AtomicUsize::new(0));
        let seen = attempts.clone();
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(handler_fn(move |_record: &Record<'_>| {
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(HandlerError::transient(std::io::Error::other("downstream")))
                    } else {
                        Ok(Outcome::Processed)
                    }
                }
            }));
        let record = event(0, "e1", b"x");
        assert_eq!(
            handler.handle(&record).await.unwrap_err().class(),
            ErrorClass::Transient
        );
        assert_eq!(handler.handle(&record).await.unwrap(), Outcome::Processed);
        assert_eq!(
            handler.handle(&event(4, "e1", b"x")).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_in_progress_key_is_redelivered_when_the_lease_ends_or_waited_for() {
        let f = fixture();
        let started = Arc::new(Notify::new());
        let finish = Arc::new(Notify::new());
        let (s, fin) = (started.clone(), finish.clone());
        let slow = handler_fn(move |_record: &Record<'_>| {
            let (s, fin) = (s.clone(), fin.clone());
            async move {
                s.notify_one();
                fin.notified().await;
                Ok(Outcome::Processed)
            }
        });
        let first = Arc::new(
            HandlerBuilder::new()
                .layer(layer(f.store.clone()))
                .handler(slow),
        );
        let running = tokio::spawn({
            let first = first.clone();
            async move { first.handle(&event(0, "e1", b"x")).await }
        });
        started.notified().await;

        // Another consumer (its own layer, so its own fast path) meets the key in progress.
        let redeliver = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(counting(&f.calls));
        let error = redeliver.handle(&event(0, "e1", b"x")).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);
        let lease_end = Timestamp::from_millis(f.clock.wall().as_millis() + 30_000);
        assert_eq!(error.disposition(), Disposition::RedeliverAt(lease_end));
        assert!(error.downcast_ref::<KeyInProgress>().is_some());

        // One that waits sees the holder finish and answers "duplicate".
        let waiting = HandlerBuilder::new()
            .layer(
                layer(f.store.clone()).on_in_progress(InProgressPolicy::Wait {
                    poll: Duration::from_millis(5),
                    max: Duration::from_secs(10),
                }),
            )
            .handler(counting(&f.calls));
        let waiter = tokio::spawn(async move { waiting.handle(&event(0, "e1", b"x")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        finish.notify_one();
        assert_eq!(running.await.unwrap().unwrap(), Outcome::Processed);
        assert_eq!(waiter.await.unwrap().unwrap(), Outcome::Duplicate);
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_holder_whose_lease_ran_out_cannot_overwrite_its_successor() {
        let f = fixture();
        let clock = f.clock.clone();
        let store = f.store.clone();
        // The handler outlives its lease; meanwhile another consumer takes the key over.
        let slow = handler_fn(move |_record: &Record<'_>| {
            let (clock, store) = (clock.clone(), store.clone());
            async move {
                clock.advance(Duration::from_secs(31));
                let digest = PayloadDigest::of(Some(b"x"));
                let taken = store.begin("svc:e1", digest, Duration::from_secs(30)).await;
                assert!(matches!(taken, Ok(Begin::Acquired(_))), "{taken:?}");
                Ok(Outcome::Processed)
            }
        });
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(slow);
        // The work is done, so the record succeeds; the stale completion is refused and counted.
        assert_eq!(
            handler.handle(&event(0, "e1", b"x")).await.unwrap(),
            Outcome::Processed
        );
        // The successor still holds the key.
        let again = f
            .store
            .begin(
                "svc:e1",
                PayloadDigest::of(Some(b"x")),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert!(matches!(again, Begin::InProgress { .. }), "{again:?}");
    }

    #[tokio::test]
    async fn the_claim_is_visible_to_the_handler() {
        let f = fixture();
        let handler = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(handler_fn(|_record: &Record<'_>| async {
                let claim = current_claim().expect("inside the layer");
                assert_eq!(claim.key, "svc:e7");
                assert_eq!(claim.ttl, Duration::from_secs(7 * 24 * 3600));
                Ok(Outcome::Processed)
            }));
        handler.handle(&event(0, "e7", b"x")).await.unwrap();
        assert!(current_claim().is_none());
    }

    #[tokio::test]
    async fn bad_input_is_a_typed_error_or_an_explicit_pass_through() {
        let f = fixture();
        let strict = HandlerBuilder::new()
            .layer(layer(f.store.clone()))
            .handler(counting(&f.calls));
        let no_header = Record::new("orders", 0, Offset::ZERO).with_value(b"x".to_vec());
        let error = strict.handle(&no_header).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(matches!(
            error.downcast_ref::<IdempotencyError>(),
            Some(IdempotencyError::MissingKey(_))
        ));
        let binary = Record::new("orders", 0, Offset::new(1).unwrap())
            .with_header("event-id", vec![0xff, 0xfe]);
        assert!(matches!(
            strict
                .handle(&binary)
                .await
                .unwrap_err()
                .downcast_ref::<IdempotencyError>(),
            Some(IdempotencyError::InvalidKey(_))
        ));
        assert_eq!(f.calls.load(Ordering::SeqCst), 0);

        // Tombstones and empty payloads are guarded like any record, and differ from each other.
        let tombstone = Record::new("orders", 0, Offset::new(2).unwrap())
            .with_header("event-id", b"t1".to_vec());
        assert_eq!(strict.handle(&tombstone).await.unwrap(), Outcome::Processed);
        let mut again = tombstone.clone();
        again.offset = Offset::new(3).unwrap();
        assert_eq!(strict.handle(&again).await.unwrap(), Outcome::Duplicate);
        let empty = event(4, "t1", b"");
        let error = strict.handle(&empty).await.unwrap_err();
        assert!(error.downcast_ref::<KeyConflict>().is_some());

        // Pass-through processes unguarded; a fallback extractor guards by coordinates.
        let lenient = HandlerBuilder::new()
            .layer(IdempotencyLayer::new(
                f.store.clone(),
                KeyPolicy::new("svc", HeaderKey("event-id".into()))
                    .on_missing(MissingKey::PassThrough),
            ))
            .handler(counting(&f.calls));
        assert_eq!(
            lenient.handle(&no_header).await.unwrap(),
            Outcome::Processed
        );
        let mut another = no_header.clone();
        another.offset = Offset::new(1).unwrap();
        assert_eq!(lenient.handle(&another).await.unwrap(), Outcome::Processed);
        // The same offset again (a redelivery after a rebalance) was completed here.
        assert_eq!(lenient.handle(&another).await.unwrap(), Outcome::Duplicate);
        let fallback = HandlerBuilder::new()
            .layer(IdempotencyLayer::new(
                f.store.clone(),
                KeyPolicy::new("svc", HeaderKey("event-id".into()))
                    .on_missing(MissingKey::FallBack(Arc::new(Coordinates))),
            ))
            .handler(counting(&f.calls));
        let mut elsewhere = no_header.clone();
        elsewhere.partition = 5;
        assert_eq!(
            fallback.handle(&elsewhere).await.unwrap(),
            Outcome::Processed
        );
        let other = HandlerBuilder::new()
            .layer(IdempotencyLayer::new(
                f.store.clone(),
                KeyPolicy::new("svc", HeaderKey("event-id".into()))
                    .on_missing(MissingKey::FallBack(Arc::new(Coordinates))),
            ))
            .handler(counting(&f.calls));
        assert_eq!(other.handle(&elsewhere).await.unwrap(), Outcome::Duplicate);
        assert_eq!(f.calls.load(Ordering::SeqCst), 4);
    }
}
