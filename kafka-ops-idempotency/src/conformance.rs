//! The conformance suite every [`IdempotencyStore`] must pass (feature `testkit`): run
//! [`run_all`] from a test of your store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::handler::Outcome;

use crate::error::IdempotencyError;
use crate::store::{
    Begin, BeginRequest, Completion, FencingToken, IdempotencyStore, MAX_DURATION, MAX_KEY_BYTES,
    PayloadDigest, StoredOutcome, storage_key,
};

/// Moves the store's notion of time forward: advance a manual clock, or sleep for stores that
/// keep server time.
#[async_trait]
pub trait TimePasses: Send + Sync {
    /// Lets `duration` pass.
    async fn pass(&self, duration: Duration);
}

/// Real time (for stores whose leases run on the server's clock).
#[derive(Debug, Clone, Copy)]
pub struct RealTime;

#[async_trait]
impl TimePasses for RealTime {
    async fn pass(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[async_trait]
impl TimePasses for kafka_ops_core::ManualClock {
    async fn pass(&self, duration: Duration) {
        self.advance(duration);
    }
}

fn key(case: &str) -> String {
    format!("conformance:{case}:{:016x}", fastrand::u64(..))
}

const A: PayloadDigest = PayloadDigest(0xaaaa);
const B: PayloadDigest = PayloadDigest(0xbbbb);
/// Leases and TTLs short enough to expire within a test, long enough for a round trip.
const SHORT: Duration = Duration::from_millis(600);
const LONG: Duration = Duration::from_secs(60);

fn processed() -> StoredOutcome {
    StoredOutcome {
        outcome: Outcome::Processed,
        result: Some(b"receipt-42".to_vec()),
    }
}

/// Another outcome than [`processed`], for completions that must change nothing.
fn skipped() -> StoredOutcome {
    StoredOutcome {
        outcome: Outcome::Skipped,
        result: None,
    }
}

fn acquired(begin: Begin) -> FencingToken {
    match begin {
        Begin::Acquired(token) => token,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Runs every case against `store`.
pub async fn run_all(store: Arc<dyn IdempotencyStore>, time: &dyn TimePasses) {
    exactly_one_of_many_concurrent_begins_acquires(store.clone(), 64).await;
    duplicates_return_the_stored_outcome(store.as_ref()).await;
    a_holder_is_seen_in_progress(store.as_ref()).await;
    an_expired_lease_hands_over_and_fences_the_old_holder(store.as_ref(), time).await;
    a_stale_or_foreign_token_is_rejected(store.as_ref()).await;
    completed_keys_expire_after_their_ttl(store.as_ref(), time).await;
    a_different_payload_is_a_conflict(store.as_ref()).await;
    a_released_key_may_run_again(store.as_ref()).await;
    a_batch_answers_each_key_as_it_stands(store.as_ref()).await;
    a_key_twice_in_one_batch_is_answered_in_order(store.as_ref()).await;
    a_batch_completes_only_for_current_tokens(store.as_ref(), time).await;
    concurrent_batches_take_each_key_once(store.clone(), 8, 16).await;
    keys_no_backend_holds_as_they_are_work_like_any_other(store.as_ref()).await;
    long_keys_alike_for_1100_bytes_are_held_apart(store.as_ref()).await;
    a_batch_mixing_such_keys_with_ordinary_ones_answers_every_key(store.clone()).await;
    durations_past_the_longest_are_cut_to_it(store.as_ref()).await;
}

/// N concurrent `begin`s on one key: exactly one acquires, the rest see it in progress.
pub async fn exactly_one_of_many_concurrent_begins_acquires(
    store: Arc<dyn IdempotencyStore>,
    n: usize,
) {
    let key = key("race");
    let attempts: Vec<_> = (0..n)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.begin(&key, A, LONG).await })
        })
        .collect();
    let mut winners = 0;
    for attempt in attempts {
        match attempt.await.expect("task").expect("begin") {
            Begin::Acquired(_) => winners += 1,
            Begin::InProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1, "{} of {n} concurrent begins acquired", winners);
}

/// A completed key answers `Duplicate` with what was stored.
pub async fn duplicates_return_the_stored_outcome(store: &dyn IdempotencyStore) {
    let key = key("duplicate");
    let token = acquired(store.begin(&key, A, LONG).await.expect("begin"));
    store
        .complete(&key, token, &processed(), LONG)
        .await
        .expect("complete");
    // Completing again with the same token is harmless and changes nothing: an inbox stored
    // the outcome (and its result) in the handler's transaction, then the layer completes
    // without a result.
    store
        .complete(&key, token, &skipped(), LONG)
        .await
        .expect("complete twice");
    assert_eq!(
        store.begin(&key, A, LONG).await.expect("begin"),
        Begin::Duplicate(processed())
    );
}

/// A key held by someone is in progress until their lease ends.
pub async fn a_holder_is_seen_in_progress(store: &dyn IdempotencyStore) {
    let key = key("in-progress");
    acquired(store.begin(&key, A, LONG).await.expect("begin"));
    match store.begin(&key, A, LONG).await.expect("begin") {
        Begin::InProgress { until } => {
            let now = kafka_ops_core::Timestamp::from_system_time(std::time::SystemTime::now());
            assert!(
                until.saturating_since(now) <= LONG,
                "until {until} is beyond the lease"
            );
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
}

/// After the lease, another caller takes over, and the first holder can neither complete nor
/// release (fencing).
pub async fn an_expired_lease_hands_over_and_fences_the_old_holder(
    store: &dyn IdempotencyStore,
    time: &dyn TimePasses,
) {
    let key = key("takeover");
    let first = acquired(store.begin(&key, A, SHORT).await.expect("begin"));
    time.pass(SHORT + Duration::from_millis(400)).await;
    let second = acquired(store.begin(&key, A, LONG).await.expect("takeover"));
    assert_ne!(first, second);
    assert!(matches!(
        store.complete(&key, first, &processed(), LONG).await,
        Err(IdempotencyError::StaleToken { .. })
    ));
    assert!(matches!(
        store.release(&key, first).await,
        Err(IdempotencyError::StaleToken { .. })
    ));
    store
        .complete(&key, second, &processed(), LONG)
        .await
        .expect("the new holder completes");
    assert_eq!(
        store.begin(&key, A, LONG).await.expect("begin"),
        Begin::Duplicate(processed())
    );
}

/// Tokens that never held the key are rejected, and do not disturb the holder.
pub async fn a_stale_or_foreign_token_is_rejected(store: &dyn IdempotencyStore) {
    let key = key("foreign");
    let token = acquired(store.begin(&key, A, LONG).await.expect("begin"));
    let foreign = FencingToken(token.0.wrapping_add(1));
    assert!(matches!(
        store.complete(&key, foreign, &processed(), LONG).await,
        Err(IdempotencyError::StaleToken { .. })
    ));
    assert!(matches!(
        store.release(&key, foreign).await,
        Err(IdempotencyError::StaleToken { .. })
    ));
    let unknown = self::key("unknown");
    assert!(matches!(
        store.complete(&unknown, token, &processed(), LONG).await,
        Err(IdempotencyError::StaleToken { .. })
    ));
    store
        .complete(&key, token, &processed(), LONG)
        .await
        .expect("the holder completes");
}

/// A completed key is forgotten after its TTL.
pub async fn completed_keys_expire_after_their_ttl(
    store: &dyn IdempotencyStore,
    time: &dyn TimePasses,
) {
    let key = key("ttl");
    let token = acquired(store.begin(&key, A, LONG).await.expect("begin"));
    store
        .complete(&key, token, &processed(), SHORT)
        .await
        .expect("complete");
    assert!(matches!(
        store.begin(&key, A, LONG).await.expect("begin"),
        Begin::Duplicate(_)
    ));
    time.pass(SHORT + Duration::from_millis(400)).await;
    acquired(store.begin(&key, A, LONG).await.expect("begin after ttl"));
}

/// The same key with another payload is a conflict, completed or in progress.
pub async fn a_different_payload_is_a_conflict(store: &dyn IdempotencyStore) {
    let key = key("conflict");
    let token = acquired(store.begin(&key, A, LONG).await.expect("begin"));
    assert_eq!(
        store.begin(&key, B, LONG).await.expect("begin"),
        Begin::Conflict
    );
    store
        .complete(&key, token, &processed(), LONG)
        .await
        .expect("complete");
    assert_eq!(
        store.begin(&key, B, LONG).await.expect("begin"),
        Begin::Conflict
    );
}

/// A released key (the handler failed) may be taken again at once.
pub async fn a_released_key_may_run_again(store: &dyn IdempotencyStore) {
    let key = key("release");
    let token = acquired(store.begin(&key, A, LONG).await.expect("begin"));
    store.release(&key, token).await.expect("release");
    acquired(store.begin(&key, A, LONG).await.expect("begin again"));
}

fn request(key: &str, digest: PayloadDigest, lease: Duration) -> BeginRequest {
    BeginRequest {
        key: key.to_string(),
        digest,
        lease,
    }
}

fn completion(key: &str, token: FencingToken) -> Completion {
    Completion {
        key: key.to_string(),
        token,
        outcome: processed(),
        ttl: LONG,
    }
}

fn stale(answer: &Result<(), IdempotencyError>) -> bool {
    matches!(answer, Err(IdempotencyError::StaleToken { .. }))
}

/// One `begin_many` over a new key, a completed one, a held one and one seen with another
/// payload answers each as `begin` would; an empty batch answers nothing.
pub async fn a_batch_answers_each_key_as_it_stands(store: &dyn IdempotencyStore) {
    let (fresh, done, held, other) = (key("b-new"), key("b-done"), key("b-held"), key("b-other"));
    for k in [&done, &other] {
        let token = acquired(store.begin(k, A, LONG).await.expect("begin"));
        store
            .complete(k, token, &processed(), LONG)
            .await
            .expect("complete");
    }
    acquired(store.begin(&held, A, LONG).await.expect("begin"));
    let answers = store
        .begin_many(&[
            request(&fresh, A, LONG),
            request(&done, A, LONG),
            request(&held, A, LONG),
            request(&other, B, LONG),
        ])
        .await
        .expect("begin_many");
    assert_eq!(answers.len(), 4, "{answers:?}");
    acquired(answers[0].clone());
    assert_eq!(answers[1], Begin::Duplicate(processed()));
    assert!(
        matches!(answers[2], Begin::InProgress { .. }),
        "{answers:?}"
    );
    assert_eq!(answers[3], Begin::Conflict);
    // The new key is now held like any other.
    assert!(matches!(
        store.begin(&fresh, A, LONG).await.expect("begin"),
        Begin::InProgress { .. }
    ));
    assert!(store.begin_many(&[]).await.expect("empty").is_empty());
    assert!(store.complete_many(&[]).await.expect("empty").is_empty());
}

/// A key that appears twice in one batch is taken once: its later copies see it in progress
/// (same payload) or in conflict (another), as if asked one after another. Completing it twice
/// in one batch with its token is harmless; a foreign token in the same batch is refused.
pub async fn a_key_twice_in_one_batch_is_answered_in_order(store: &dyn IdempotencyStore) {
    let (first, second) = (key("twice-1"), key("twice-2"));
    let answers = store
        .begin_many(&[
            request(&first, A, LONG),
            request(&first, A, LONG),
            request(&second, A, LONG),
            request(&first, B, LONG),
            request(&second, A, LONG),
        ])
        .await
        .expect("begin_many");
    assert_eq!(answers.len(), 5, "{answers:?}");
    let token = acquired(answers[0].clone());
    assert!(
        matches!(answers[1], Begin::InProgress { .. }),
        "{answers:?}"
    );
    let other = acquired(answers[2].clone());
    assert_eq!(answers[3], Begin::Conflict);
    assert!(
        matches!(answers[4], Begin::InProgress { .. }),
        "{answers:?}"
    );
    let foreign = FencingToken(other.0.wrapping_add(1));
    let done = store
        .complete_many(&[
            completion(&first, token),
            completion(&second, foreign),
            // A repeat keeps the first outcome.
            Completion {
                outcome: skipped(),
                ..completion(&first, token)
            },
            completion(&second, other),
        ])
        .await
        .expect("complete_many");
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(
        done[0].is_ok() && done[2].is_ok() && done[3].is_ok(),
        "{done:?}"
    );
    assert!(stale(&done[1]), "{done:?}");
    assert_eq!(
        store
            .begin_many(&[request(&first, A, LONG), request(&second, A, LONG)])
            .await
            .expect("begin_many"),
        vec![Begin::Duplicate(processed()), Begin::Duplicate(processed())]
    );
}

/// Fencing holds across a batch: after a takeover, the old holder's completion in a batch is
/// refused while the new holder's, and a current one beside it, go through; a key nobody holds
/// is refused too.
pub async fn a_batch_completes_only_for_current_tokens(
    store: &dyn IdempotencyStore,
    time: &dyn TimePasses,
) {
    let (lapsed, kept, untouched, unknown) = (
        key("b-lapsed"),
        key("b-kept"),
        key("b-untouched"),
        key("b-unknown"),
    );
    let answers = store
        .begin_many(&[
            request(&lapsed, A, SHORT),
            request(&kept, A, LONG),
            request(&untouched, A, LONG),
        ])
        .await
        .expect("begin_many");
    let tokens: Vec<FencingToken> = answers.into_iter().map(acquired).collect();
    time.pass(SHORT + Duration::from_millis(400)).await;
    let taken = store
        .begin_many(&[request(&lapsed, A, LONG), request(&kept, A, LONG)])
        .await
        .expect("takeover");
    let successor = acquired(taken[0].clone());
    assert!(matches!(taken[1], Begin::InProgress { .. }), "{taken:?}");
    assert_ne!(successor, tokens[0]);
    let done = store
        .complete_many(&[
            completion(&lapsed, tokens[0]),
            completion(&kept, tokens[1]),
            completion(&lapsed, successor),
            completion(&unknown, tokens[1]),
        ])
        .await
        .expect("complete_many");
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(stale(&done[0]) && stale(&done[3]), "{done:?}");
    assert!(done[1].is_ok() && done[2].is_ok(), "{done:?}");
    let after = store
        .begin_many(&[
            request(&lapsed, A, LONG),
            request(&kept, A, LONG),
            request(&untouched, A, LONG),
        ])
        .await
        .expect("begin_many");
    assert_eq!(after[0], Begin::Duplicate(processed()));
    assert_eq!(after[1], Begin::Duplicate(processed()));
    assert!(matches!(after[2], Begin::InProgress { .. }), "{after:?}");
    store
        .release(&untouched, tokens[2])
        .await
        .expect("the holder releases");
}

/// `callers` batches over the same `keys` keys, each in another order, at once: every key is
/// taken exactly once, and no batch fails (two batches never wait on each other in a circle).
pub async fn concurrent_batches_take_each_key_once(
    store: Arc<dyn IdempotencyStore>,
    callers: usize,
    keys: usize,
) {
    let names: Vec<String> = (0..keys).map(|i| key(&format!("crowd-{i}"))).collect();
    let batches: Vec<_> = (0..callers)
        .map(|caller| {
            let mut order = names.clone();
            order.rotate_left(caller * 5 % keys.max(1));
            if caller % 2 == 1 {
                order.reverse();
            }
            let store = store.clone();
            tokio::spawn(async move {
                let requests: Vec<BeginRequest> =
                    order.iter().map(|k| request(k, A, LONG)).collect();
                let answers = store.begin_many(&requests).await.expect("begin_many");
                order.into_iter().zip(answers).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut winners: std::collections::HashMap<String, usize> = Default::default();
    for batch in batches {
        for (k, answer) in batch.await.expect("task") {
            match answer {
                Begin::Acquired(_) => *winners.entry(k).or_default() += 1,
                Begin::InProgress { .. } => {}
                other => panic!("unexpected {other:?} for {k}"),
            }
        }
    }
    for k in &names {
        assert_eq!(
            winners.get(k),
            Some(&1),
            "{k} taken {:?} times",
            winners.get(k)
        );
    }
}

/// `key(case)` grown with random characters to exactly `bytes` bytes.
fn key_of_length(case: &str, bytes: usize) -> String {
    let mut key = key(case);
    while key.len() < bytes {
        key.push(fastrand::alphanumeric());
    }
    key
}

/// Whether `answer` refuses the token for exactly `key`, as the caller named it.
fn stale_for(answer: &Result<(), IdempotencyError>, key: &str) -> bool {
    matches!(answer, Err(IdempotencyError::StaleToken { key: named }) if named == key)
}

/// Keys no backend holds as they are, with their nearest neighbours held as they are: NUL
/// bytes (Kafka's `LongSerializer` writes 42 as seven NULs and `*`), a NUL beside what stands
/// for one in the stored form, 3 000 bytes, and one byte past [`MAX_KEY_BYTES`] beside a key of
/// exactly that length.
fn keys_held_mapped(case: &str) -> Vec<String> {
    let nul = key(&format!("{case}-nul"));
    let exact = key_of_length(&format!("{case}-exact"), MAX_KEY_BYTES);
    vec![
        format!("{}:\0\0\0\0\0\0\0*", key(&format!("{case}-long-42"))),
        format!("{nul}\0tail"),
        format!("{nul}\\0tail"),
        key_of_length(&format!("{case}-3000"), 3000),
        format!("{exact}x"),
        exact,
    ]
}

/// Every key is taken, whatever its bytes: a key with a NUL byte, or longer than
/// [`MAX_KEY_BYTES`], is held under [`storage_key`]'s form and answers every call as any key
/// does (acquired, in progress, conflict, stale token naming the caller's key, completed,
/// duplicate with the stored outcome, released and taken again). The store maps keys as
/// [`storage_key`] does: a key and its stored form are one key.
pub async fn keys_no_backend_holds_as_they_are_work_like_any_other(store: &dyn IdempotencyStore) {
    for k in keys_held_mapped("odd") {
        let token = acquired(store.begin(&k, A, LONG).await.expect("begin"));
        assert!(
            matches!(
                store.begin(&k, A, LONG).await.expect("begin"),
                Begin::InProgress { .. }
            ),
            "{k:?}"
        );
        assert_eq!(
            store.begin(&k, B, LONG).await.expect("begin"),
            Begin::Conflict,
            "{k:?}"
        );
        let foreign = FencingToken(token.0.wrapping_add(1));
        let refused = store.complete(&k, foreign, &processed(), LONG).await;
        assert!(stale_for(&refused, &k), "{k:?}: {refused:?}");
        store
            .complete(&k, token, &processed(), LONG)
            .await
            .expect("complete");
        store
            .complete(&k, token, &skipped(), LONG)
            .await
            .expect("complete twice");
        assert_eq!(
            store.begin(&k, A, LONG).await.expect("begin"),
            Begin::Duplicate(processed()),
            "{k:?}"
        );
        let stored = storage_key(&k);
        assert_eq!(
            store.begin(&stored, A, LONG).await.expect("begin"),
            Begin::Duplicate(processed()),
            "{k:?} is held as {stored:?}"
        );
    }
    for k in keys_held_mapped("odd-release") {
        let token = acquired(store.begin(&k, A, LONG).await.expect("begin"));
        let foreign = FencingToken(token.0.wrapping_add(1));
        let refused = store.release(&k, foreign).await;
        assert!(stale_for(&refused, &k), "{k:?}: {refused:?}");
        store.release(&k, token).await.expect("release");
        acquired(store.begin(&k, A, LONG).await.expect("taken again"));
    }
}

/// Long keys that share their first 1 100 bytes (more than the stored form keeps) and differ
/// after are different keys, one by one and in one batch.
pub async fn long_keys_alike_for_1100_bytes_are_held_apart(store: &dyn IdempotencyStore) {
    let shared = key_of_length("twins", 1100);
    let twins: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|tail| format!("{shared}{}", tail.repeat(1900)))
        .collect();
    let token = acquired(store.begin(&twins[0], A, LONG).await.expect("begin"));
    acquired(
        store
            .begin(&twins[1], B, LONG)
            .await
            .expect("a twin is free"),
    );
    store
        .complete(&twins[0], token, &processed(), LONG)
        .await
        .expect("complete");
    assert!(
        matches!(
            store.begin(&twins[1], B, LONG).await.expect("begin"),
            Begin::InProgress { .. }
        ),
        "its twin's completion is not its own"
    );
    let answers = store
        .begin_many(&[
            request(&twins[2], A, LONG),
            request(&twins[3], A, LONG),
            request(&twins[0], A, LONG),
        ])
        .await
        .expect("begin_many");
    assert_eq!(answers.len(), 3, "{answers:?}");
    let (two, three) = (acquired(answers[0].clone()), acquired(answers[1].clone()));
    assert_eq!(answers[2], Begin::Duplicate(processed()));
    let done = store
        .complete_many(&[completion(&twins[2], three), completion(&twins[3], three)])
        .await
        .expect("complete_many");
    assert!(
        stale_for(&done[0], &twins[2]) && done[1].is_ok(),
        "a twin's token holds its twin: {done:?}"
    );
    store
        .complete(&twins[2], two, &processed(), LONG)
        .await
        .expect("complete");
}

/// Such keys mixed with ordinary ones, in one batch and as single calls made at once (which a
/// networked store sends together): every key is answered as it stands, a repeat of one in a
/// batch included, and none fails the others.
pub async fn a_batch_mixing_such_keys_with_ordinary_ones_answers_every_key(
    store: Arc<dyn IdempotencyStore>,
) {
    let mut keys = keys_held_mapped("mixed");
    keys.extend((0..4).map(|i| key(&format!("mixed-plain-{i}"))));
    fastrand::shuffle(&mut keys);
    let mut requests: Vec<BeginRequest> = keys.iter().map(|k| request(k, A, LONG)).collect();
    requests.push(request(&keys[0], A, LONG));
    let answers = store.begin_many(&requests).await.expect("begin_many");
    assert_eq!(answers.len(), requests.len(), "{answers:?}");
    let tokens: Vec<FencingToken> = answers[..keys.len()]
        .iter()
        .map(|answer| acquired(answer.clone()))
        .collect();
    assert!(
        matches!(answers[keys.len()], Begin::InProgress { .. }),
        "{answers:?}"
    );
    let foreign = FencingToken(tokens[1].0.wrapping_add(1));
    let mut completions: Vec<Completion> = keys
        .iter()
        .zip(&tokens)
        .map(|(k, token)| completion(k, *token))
        .collect();
    completions.insert(1, completion(&keys[1], foreign));
    let done = store
        .complete_many(&completions)
        .await
        .expect("complete_many");
    assert_eq!(done.len(), completions.len(), "{done:?}");
    for (position, (answer, c)) in done.iter().zip(&completions).enumerate() {
        if position == 1 {
            assert!(stale_for(answer, &c.key), "{answer:?}");
        } else {
            assert!(answer.is_ok(), "{:?}: {answer:?}", c.key);
        }
    }
    let again = store
        .begin_many(&keys.iter().map(|k| request(k, A, LONG)).collect::<Vec<_>>())
        .await
        .expect("begin_many");
    assert!(
        again.iter().all(|a| *a == Begin::Duplicate(processed())),
        "{again:?}"
    );

    let mut singles = keys_held_mapped("singles");
    singles.extend((0..6).map(|i| key(&format!("singles-plain-{i}"))));
    fastrand::shuffle(&mut singles);
    let begins: Vec<_> = singles
        .iter()
        .map(|k| {
            let (store, k) = (store.clone(), k.clone());
            tokio::spawn(async move { store.begin(&k, A, LONG).await })
        })
        .collect();
    let mut held = Vec::new();
    for (k, begin) in singles.iter().zip(begins) {
        let answer = begin.await.expect("task").expect("begin beside other keys");
        held.push((k.clone(), acquired(answer)));
    }
    let completes: Vec<_> = held
        .into_iter()
        .map(|(k, token)| {
            let store = store.clone();
            tokio::spawn(async move {
                let foreign = FencingToken(token.0.wrapping_add(1));
                let refused = store.complete(&k, foreign, &processed(), LONG).await;
                assert!(stale_for(&refused, &k), "{k:?}: {refused:?}");
                store.complete(&k, token, &processed(), LONG).await
            })
        })
        .collect();
    for complete in completes {
        complete
            .await
            .expect("task")
            .expect("complete beside other keys");
    }
    for k in &singles {
        assert_eq!(
            store.begin(k, A, LONG).await.expect("begin"),
            Begin::Duplicate(processed()),
            "{k:?}"
        );
    }
}

/// The case of the keys [`durations_past_the_longest_are_cut_to_it`] completes.
const FOREVER_CASE: &str = "forever-done";

/// The prefix of the two keys each run of the suite leaves completed for [`MAX_DURATION`]: a
/// test of a store on a server that outlives it may delete them afterwards.
pub const LONG_LIVED_KEYS: &str = "conformance:forever-done:";

/// Leases and TTLs up to [`Duration::MAX`] are taken (cut to [`MAX_DURATION`]), one key at a
/// time and in batches. Leaves two keys under [`LONG_LIVED_KEYS`].
pub async fn durations_past_the_longest_are_cut_to_it(store: &dyn IdempotencyStore) {
    let held = key("forever-held");
    let token = acquired(
        store
            .begin(&held, A, Duration::MAX)
            .await
            .expect("begin with the longest lease"),
    );
    match store.begin(&held, A, LONG).await.expect("begin") {
        Begin::InProgress { until } => {
            let now = kafka_ops_core::Timestamp::from_system_time(std::time::SystemTime::now());
            assert!(
                until.saturating_since(now) <= MAX_DURATION,
                "until {until} is beyond the longest lease"
            );
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    store.release(&held, token).await.expect("release");
    let (single, batched) = (key(FOREVER_CASE), key(FOREVER_CASE));
    let token = acquired(store.begin(&single, A, LONG).await.expect("begin"));
    store
        .complete(&single, token, &processed(), Duration::MAX)
        .await
        .expect("complete with the longest TTL");
    let answers = store
        .begin_many(&[request(&batched, A, Duration::MAX)])
        .await
        .expect("begin_many with the longest lease");
    let token = acquired(answers.into_iter().next().expect("one answer"));
    let done = store
        .complete_many(&[Completion {
            ttl: Duration::MAX,
            ..completion(&batched, token)
        }])
        .await
        .expect("complete_many with the longest TTL");
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    assert_eq!(
        store
            .begin_many(&[request(&single, A, LONG), request(&batched, A, LONG)])
            .await
            .expect("begin_many"),
        vec![Begin::Duplicate(processed()), Begin::Duplicate(processed())]
    );
}

/// The Redis the store tests use: `KAFKA_OPS_REDIS_URL` (the test command exports it), else the
/// loopback server. A server that does not answer fails the test.
pub fn redis_url() -> String {
    std::env::var("KAFKA_OPS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The PostgreSQL the store tests use: `KAFKA_OPS_POSTGRES_URL` (the test command exports it),
/// else database `test` on the loopback server.
pub fn postgres_config() -> String {
    std::env::var("KAFKA_OPS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 dbname=test user=postgres".into())
}

/// The PostgreSQL store on [`postgres_config`]'s database, its table created if missing.
/// Panics when the server does not answer: the tests that call it need it.
#[cfg(feature = "postgres")]
pub async fn postgres_store() -> crate::store::postgres::PostgresStore {
    let store = crate::store::postgres::PostgresStore::connect(&postgres_config())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL does not answer at {}: {error}",
                postgres_config()
            )
        });
    if let Err(error) = store.migrate().await {
        panic!("the store's table could not be created: {error}");
    }
    store
}

/// A client of [`postgres_config`]'s database, its connection driven by a task on the current
/// runtime. Panics when the server does not answer: the tests that call it need it.
#[cfg(feature = "postgres")]
pub async fn postgres_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_config(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL does not answer at {}: {error}",
                postgres_config()
            )
        });
    tokio::spawn(connection);
    client
}
