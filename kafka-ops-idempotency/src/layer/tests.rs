#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::atomic::{AtomicUsize, Ordering};

use kafka_ops_core::handler::{HandlerBuilder, handler_fn};
use kafka_ops_core::{Clock, ErrorClass, ManualClock, Offset};
use tokio::sync::Notify;

use super::*;
use crate::keys::{Coordinates, HeaderKey, MissingKey};
use crate::store::memory::MemoryStore;

/// Counts the store calls the layer makes, so the fast path can be seen skipping them; with a
/// remote, its begins go one round trip away, batched as the networked stores batch them.
struct CountingStore {
    inner: Arc<MemoryStore>,
    begins: AtomicUsize,
    remote: Option<crate::store::coalesce::Front>,
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountingStore")
    }
}

/// The far side of a round trip: records each batch of begins and holds it until the test lets
/// it through.
struct Remote {
    inner: Arc<MemoryStore>,
    batches: std::sync::Mutex<Vec<usize>>,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl crate::store::coalesce::Batches for Remote {
    async fn begin_many(
        &self,
        requests: &[crate::store::BeginRequest],
    ) -> Result<Vec<Begin>, IdempotencyError> {
        self.batches.lock().unwrap().push(requests.len());
        self.gate.acquire().await.unwrap().forget();
        self.inner.begin_many(requests).await
    }
    async fn complete_many(
        &self,
        completions: &[crate::store::Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError> {
        self.inner.complete_many(completions).await
    }
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
        match &self.remote {
            Some(front) => front.begin(key, digest, lease).await,
            None => self.inner.begin(key, digest, lease).await,
        }
    }
    async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        match &self.remote {
            Some(front) => front.complete(key, token, outcome, ttl).await,
            None => self.inner.complete(key, token, outcome, ttl).await,
        }
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
        inner: Arc::new(MemoryStore::with_clock(1_000, clock.clone())),
        begins: AtomicUsize::new(0),
        remote: None,
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
    let binary =
        Record::new("orders", 0, Offset::new(1).unwrap()).with_header("event-id", vec![0xff, 0xfe]);
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
    let tombstone =
        Record::new("orders", 0, Offset::new(2).unwrap()).with_header("event-id", b"t1".to_vec());
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
            KeyPolicy::new("svc", HeaderKey("event-id".into())).on_missing(MissingKey::PassThrough),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_handled_at_once_reach_the_store_in_one_round_trip() {
    let remote = Arc::new(Remote {
        inner: Arc::new(MemoryStore::new(1_000)),
        batches: std::sync::Mutex::default(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let front = crate::store::coalesce::Front::new("remote", remote.clone(), 512, 1);
    let store = Arc::new(CountingStore {
        inner: remote.inner.clone(),
        begins: AtomicUsize::new(0),
        remote: Some(front.clone()),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(
        HandlerBuilder::new()
            .layer(IdempotencyLayer::new(
                store.clone(),
                KeyPolicy::new("svc", HeaderKey("event-id".into())),
            ))
            .handler(counting(&calls)),
    );
    // A poll batch: 64 records of 64 partitions, handled at once as the driver does; the
    // 20th is a replay of the 10th on another partition.
    let records: Vec<Record<'static>> = (0..64)
        .map(|i| {
            let id = if i == 20 { 10 } else { i };
            let mut record = event(0, &format!("e{id}"), b"x");
            record.partition = i;
            record
        })
        .collect();
    let first = tokio::spawn({
        let (handler, record) = (handler.clone(), records[0].clone());
        async move { handler.handle(&record).await }
    });
    while remote.batches.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let rest: Vec<_> = records[1..]
        .iter()
        .map(|record| {
            let (handler, record) = (handler.clone(), record.clone());
            tokio::spawn(async move { handler.handle(&record).await })
        })
        .collect();
    // The first round trip ends only once the others queued behind it.
    while front.queued_begins() < 63 {
        tokio::task::yield_now().await;
    }
    remote.gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), Outcome::Processed);
    let mut refused = 0;
    for handled in rest {
        match handled.await.unwrap() {
            Ok(outcome) => assert_eq!(outcome, Outcome::Processed),
            Err(error) => {
                // The replay met its twin in progress (or done): never run twice.
                assert!(error.downcast_ref::<KeyInProgress>().is_some(), "{error}");
                refused += 1;
            }
        }
    }
    // The first alone (the store was idle), then everything that queued behind it at once.
    assert_eq!(*remote.batches.lock().unwrap(), vec![1, 63]);
    assert_eq!(store.begins.load(Ordering::SeqCst), 64);
    assert_eq!(calls.load(Ordering::SeqCst) + refused, 64);
    assert_eq!(calls.load(Ordering::SeqCst), 63);
}

#[tokio::test]
async fn records_whose_keys_no_backend_holds_as_they_are_run_once() {
    let f = fixture();
    let handler = HandlerBuilder::new()
        .layer(IdempotencyLayer::new(
            f.store.clone(),
            KeyPolicy::new("svc", crate::keys::RecordKey::default()),
        ))
        .handler(counting(&f.calls));
    // Kafka's LongSerializer writes 42 as 00 00 00 00 00 00 00 2A: UTF-8, with NULs. A
    // hex-encoded binary key of 600 bytes is 1 200 characters.
    let long_42 = 42_i64.to_be_bytes().to_vec();
    let hex = "ab".repeat(600).into_bytes();
    let keyed = |offset: i64, key: &[u8], value: &[u8]| {
        Record::new("orders", 0, Offset::new(offset).unwrap())
            .with_key(key.to_vec())
            .with_value(value.to_vec())
    };
    for (offset, key) in [(0, &long_42), (1, &hex)] {
        assert_eq!(
            handler.handle(&keyed(offset, key, b"{}")).await.unwrap(),
            Outcome::Processed
        );
        // A replay at another offset: the store knows the key.
        assert_eq!(
            handler
                .handle(&keyed(offset + 10, key, b"{}"))
                .await
                .unwrap(),
            Outcome::Duplicate
        );
        let error = handler
            .handle(&keyed(offset + 20, key, b"other"))
            .await
            .unwrap_err();
        assert!(error.downcast_ref::<KeyConflict>().is_some(), "{error}");
    }
    // 42 and 43 are different keys, and so are keys alike for more than the stored form keeps.
    let mut twin = hex.clone();
    twin.push(b'c');
    for (offset, key) in [(2, 43_i64.to_be_bytes().to_vec()), (3, twin)] {
        assert_eq!(
            handler.handle(&keyed(offset, &key, b"{}")).await.unwrap(),
            Outcome::Processed
        );
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 4);
}
