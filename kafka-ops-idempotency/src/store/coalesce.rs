//! Group commit for stores behind a network: single-key calls that arrive while a round trip is
//! under way wait for the next one and go in it together.
//!
//! An idle store sends a call at once (no added latency); under load each round trip carries
//! every call that queued behind the one before, up to a bound. The driver runs up to
//! `max_in_flight` records at once, each `begin`ning its own key, so a poll batch's keys reach the
//! store in one or a few round trips instead of one each.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{Begin, BeginRequest, Completion, FencingToken, PayloadDigest, StoredOutcome};
use crate::error::IdempotencyError;

/// What a networked store does for many keys in one round trip: its
/// [`begin_many`](super::IdempotencyStore::begin_many) and
/// [`complete_many`](super::IdempotencyStore::complete_many).
#[async_trait]
pub(crate) trait Batches: Send + Sync + 'static {
    /// Takes the keys, answering each in order.
    async fn begin_many(&self, requests: &[BeginRequest]) -> Result<Vec<Begin>, IdempotencyError>;

    /// Completes the keys, answering each in order.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), IdempotencyError>>, IdempotencyError>;
}

/// A store's single `begin`s and `complete`s, each coalesced into its batched call.
#[derive(Clone)]
pub(crate) struct Front {
    begins: Coalescer<BeginRequest, Begin>,
    completes: Coalescer<Completion, Result<(), IdempotencyError>>,
}

impl Front {
    /// Fronts for `batches`: up to `max_batch` keys a call, `max_flights` calls of each kind under
    /// way at once.
    pub(crate) fn new(
        store: &'static str,
        batches: Arc<dyn Batches>,
        max_batch: usize,
        max_flights: usize,
    ) -> Self {
        let begins = {
            let batches = batches.clone();
            Coalescer::new(store, max_batch, max_flights, move |batch: Vec<_>| {
                let batches = batches.clone();
                Box::pin(async move { batches.begin_many(&batch).await }) as BatchFuture<_>
            })
        };
        let completes = Coalescer::new(store, max_batch, max_flights, move |batch: Vec<_>| {
            let batches = batches.clone();
            Box::pin(async move { batches.complete_many(&batch).await }) as BatchFuture<_>
        });
        Front { begins, completes }
    }

    /// [`begin`](super::IdempotencyStore::begin), sent with the others waiting. The key joins
    /// the batch as the store holds it ([`storage_key`](super::storage_key)): one the backend
    /// cannot hold as it is would fail the statement of every key batched with it.
    pub(crate) async fn begin(
        &self,
        key: &str,
        digest: PayloadDigest,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        let key = super::storage_key(key).into_owned();
        self.begins.call(BeginRequest { key, digest, lease }).await
    }

    /// [`complete`](super::IdempotencyStore::complete), sent with the others waiting, its key
    /// mapped as in [`begin`](Self::begin); a refusal names the caller's key, not the stored one.
    pub(crate) async fn complete(
        &self,
        key: &str,
        token: FencingToken,
        outcome: &StoredOutcome,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let completion = Completion {
            key: super::storage_key(key).into_owned(),
            token,
            outcome: outcome.clone(),
            ttl,
        };
        match self.completes.call(completion).await? {
            Err(IdempotencyError::StaleToken { .. }) => Err(IdempotencyError::StaleToken {
                key: key.to_string(),
            }),
            answer => answer,
        }
    }

    /// Begins waiting for a flight.
    #[cfg(test)]
    pub(crate) fn queued_begins(&self) -> usize {
        self.begins.queued()
    }
}

/// One round trip for a batch: the answers, one per request, in order.
pub(crate) type BatchFuture<Resp> =
    Pin<Box<dyn Future<Output = Result<Vec<Resp>, IdempotencyError>> + Send>>;

type Run<Req, Resp> = Box<dyn Fn(Vec<Req>) -> BatchFuture<Resp> + Send + Sync>;

type Waiter<Req, Resp> = (Req, oneshot::Sender<Result<Resp, IdempotencyError>>);

struct State<Req, Resp> {
    queue: VecDeque<Waiter<Req, Resp>>,
    flights: usize,
}

struct Shared<Req, Resp> {
    state: Mutex<State<Req, Resp>>,
    run: Run<Req, Resp>,
    max_batch: usize,
    max_flights: usize,
    store: &'static str,
}

/// Queues single requests and sends them in batches, at most `max_flights` batches at a time.
pub(crate) struct Coalescer<Req, Resp> {
    shared: Arc<Shared<Req, Resp>>,
}

impl<Req, Resp> Clone for Coalescer<Req, Resp> {
    fn clone(&self) -> Self {
        Coalescer {
            shared: self.shared.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Batches of up to `max_batch` requests, `max_flights` of them under way at once (one for a
    /// single connection; a pool's size lets each connection carry one).
    pub(crate) fn new(
        store: &'static str,
        max_batch: usize,
        max_flights: usize,
        run: impl Fn(Vec<Req>) -> BatchFuture<Resp> + Send + Sync + 'static,
    ) -> Self {
        Coalescer {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    flights: 0,
                }),
                run: Box::new(run),
                max_batch: max_batch.max(1),
                max_flights: max_flights.max(1),
                store,
            }),
        }
    }

    /// Sends `request` with whatever else is waiting, and returns its answer.
    pub(crate) async fn call(&self, request: Req) -> Result<Resp, IdempotencyError> {
        let (answer, answered) = oneshot::channel();
        let take_off = {
            let mut state = self.shared.lock();
            state.queue.push_back((request, answer));
            let free = state.flights < self.shared.max_flights;
            if free {
                state.flights += 1;
            }
            free
        };
        if take_off {
            // A task, not this caller: a caller that is dropped mid-flight must not strand the
            // requests it carries for others.
            tokio::spawn(fly(self.shared.clone()));
        }
        answered.await.map_err(|_| {
            IdempotencyError::store(self.shared.store, "the batch carrying the request was lost")
        })?
    }
}

impl<Req, Resp> Coalescer<Req, Resp> {
    /// Requests waiting for a flight.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl<Req, Resp> Shared<Req, Resp> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<Req, Resp>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch, or none (and one flight fewer) when nothing waits.
    fn next_batch(&self) -> Option<Vec<Waiter<Req, Resp>>> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.flights -= 1;
            return None;
        }
        let take = state.queue.len().min(self.max_batch);
        Some(state.queue.drain(..take).collect())
    }
}

/// Carries batches until the queue is empty.
async fn fly<Req: Send + 'static, Resp: Send + 'static>(shared: Arc<Shared<Req, Resp>>) {
    let mut landing = Landing(Some(shared.clone()));
    while let Some(batch) = shared.next_batch() {
        let (requests, waiters): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
        let count = requests.len();
        match (shared.run)(requests).await {
            Ok(answers) if answers.len() == count => {
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    // A caller that went away no longer wants its answer.
                    let _ = waiter.send(Ok(answer));
                }
            }
            Ok(answers) => {
                let error = IdempotencyError::store(
                    shared.store,
                    format!("{} answers to {count} requests", answers.len()),
                );
                fail_all(shared.store, waiters, error);
            }
            Err(error) => fail_all(shared.store, waiters, error),
        }
    }
    // `next_batch` gave the place back.
    landing.0 = None;
}

/// A flight that ends early (its task cancelled, or a panic in the store) gives its place back
/// and hands what still waits to a new flight, so no request is stranded.
struct Landing<Req: Send + 'static, Resp: Send + 'static>(Option<Arc<Shared<Req, Resp>>>);

impl<Req: Send + 'static, Resp: Send + 'static> Drop for Landing<Req, Resp> {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        let waiting = {
            let mut state = shared.lock();
            if state.queue.is_empty() {
                state.flights -= 1;
                false
            } else {
                true
            }
        };
        if !waiting {
            return;
        }
        // The place passes to a new flight; without a runtime (shutting down) the waiters'
        // channels close, and they see their requests lost.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(fly(shared))),
            Err(_) => {
                let mut state = shared.lock();
                state.flights -= 1;
                state.queue.clear();
            }
        }
    }
}

/// Gives every waiter of a failed batch the failure: the store's cause shared among them (an
/// error is not `Clone`).
fn fail_all<Resp>(
    store: &'static str,
    waiters: Vec<oneshot::Sender<Result<Resp, IdempotencyError>>>,
    error: IdempotencyError,
) {
    let (store, cause): (_, Arc<dyn std::error::Error + Send + Sync>) = match error {
        IdempotencyError::Store { store, source } => (store, Arc::from(source)),
        other => (store, Arc::new(other)),
    };
    for waiter in waiters {
        let _ = waiter.send(Err(IdempotencyError::store(
            store,
            SharedFailure(cause.clone()),
        )));
    }
}

/// One store failure reported to every caller of its batch: reads as the cause itself.
#[derive(Debug)]
struct SharedFailure(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests;
