//! The consumer driver: poll → handle → track → commit, with at-least-once guarantees.
//!
//! A [`Driver`] owns a consumer on a dedicated thread (librdkafka's poll, commit and rebalance
//! calls block) and runs the [`Handler`] for each record, up to [`DriverConfig::max_in_flight`]
//! at once: a handler that finishes without waiting completes right on that thread (no task, no
//! wake-up); one that waits goes on as a tokio task; one that computes for long makes every
//! later handler run as a task. Records may finish out of order; an
//! [`OffsetTracker`] decides what is safe to commit, so the driver:
//!
//! - never commits past a record whose handling has not finished (or failed);
//! - commits finished offsets periodically, and when partitions are revoked and when it shuts
//!   down, after waiting (bounded) for their in-flight records; every commit waits for the
//!   broker's answer, so what the tracker believes committed is committed;
//! - applies backpressure by taking records from each partition's own librdkafka queue only
//!   while there is room, so it never holds more than it can handle and never pauses for it (a
//!   resume makes librdkafka purge and refetch); the consumer queue keeps serving rebalances;
//! - stops on the first handler error that no layer recovered, committing only what finished
//!   before it, and returns that error.
//!
//! ```no_run
//! # async fn example() -> Result<(), kafka_ops_core::Error> {
//! use kafka_ops_core::handler::{handler_fn, Outcome};
//! use kafka_ops_core::kafka::{client_config, driver::{Driver, DriverConfig}};
//! use kafka_ops_core::Record;
//!
//! let mut config = client_config("localhost:9092");
//! config.set("group.id", "billing");
//! let driver = Driver::new(
//!     config,
//!     DriverConfig::new(["orders"]),
//!     handler_fn(|_record: &Record<'_>| async { Ok(Outcome::Processed) }),
//! );
//! let handle = driver.handle();
//! tokio::spawn(async move {
//!     tokio::signal::ctrl_c().await.ok();
//!     handle.shutdown(); // finish in-flight records, commit, leave the group
//! });
//! let report = driver.run().await?;
//! println!("processed {}", report.stats.processed);
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, Message, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{Error, ErrorClass};
use crate::handler::{ConsumerControl, Disposition, Handler, HandlerError, Outcome, StoppedOn};
use crate::kafka::{classify, kafka_error, record_from_message};
use crate::record::OwnedRecord;
use crate::tracker::OffsetTracker;
use crate::types::{Offset, Timestamp, TopicPartition};

/// How records of one partition may overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// One record per partition at a time, in offset order; partitions run in parallel.
    #[default]
    PerPartition,
    /// Any record may run beside any other (commits still never pass an unfinished record).
    Unordered,
}

/// Driver settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverConfig {
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Records taken from librdkafka and not finished yet, at most; beyond it the driver stops
    /// taking records (librdkafka's own bounded queue holds the rest), without pausing.
    pub max_in_flight: usize,
    /// With per-partition ordering, records of one partition taken ahead of the one running.
    pub partition_buffer: usize,
    /// How records of a partition may overlap.
    pub ordering: Ordering,
    /// How often finished offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long a graceful shutdown waits for in-flight records.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a revoke waits for the revoked partitions' in-flight records.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
    /// The longest single wait inside the poll loop.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            topics: Vec::new(),
            max_in_flight: 256,
            partition_buffer: 32,
            ordering: Ordering::PerPartition,
            commit_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            poll_timeout: Duration::from_millis(100),
        }
    }
}

impl DriverConfig {
    /// Default settings for `topics`.
    pub fn new<T: Into<String>>(topics: impl IntoIterator<Item = T>) -> Self {
        DriverConfig {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.topics.is_empty() {
            return Err(Error::Config("the driver needs at least one topic".into()));
        }
        if self.max_in_flight == 0 || self.partition_buffer == 0 {
            return Err(Error::Config(
                "max_in_flight and partition_buffer must be at least 1".into(),
            ));
        }
        if self.poll_timeout.is_zero() || self.commit_interval.is_zero() {
            return Err(Error::Config(
                "poll timeout and commit interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Counters a driver keeps, readable at any time through its [`DriverHandle`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStats {
    /// Records received from the consumer.
    pub polled: u64,
    /// Records handled with [`Outcome::Processed`].
    pub processed: u64,
    /// Records handled with [`Outcome::Duplicate`].
    pub duplicates: u64,
    /// Records handled with [`Outcome::Retried`].
    pub retried: u64,
    /// Records handled with [`Outcome::DeadLettered`].
    pub dead_lettered: u64,
    /// Records handled with [`Outcome::Skipped`].
    pub skipped: u64,
    /// Records whose handler returned an error.
    pub failed: u64,
    /// Successful commits.
    pub commits: u64,
    /// Failed commits.
    pub commit_failures: u64,
    /// Rebalances (assignments and revocations) seen.
    pub rebalances: u64,
    /// Errors returned by poll (transport, unknown topic, ...).
    pub poll_errors: u64,
    /// Records a handler asked to see again later ([`Disposition::RedeliverAt`]).
    pub redelivered: u64,
    /// Records buffered or running now.
    pub in_flight: u64,
    /// Whether the assignment is paused by the handle.
    pub paused: bool,
    /// Partitions currently assigned.
    pub assigned: Vec<TopicPartition>,
}

#[derive(Debug, Default)]
struct Counters {
    polled: AtomicU64,
    processed: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    rebalances: AtomicU64,
    poll_errors: AtomicU64,
    redelivered: AtomicU64,
    in_flight: AtomicU64,
    /// Milliseconds since `Control::started` of the last poll, plus one (0 = never).
    last_poll: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, AtomicOrdering::Relaxed);
}

struct Control {
    started: Instant,
    shutdown: AtomicBool,
    user_paused: AtomicBool,
    paused: AtomicBool,
    running: AtomicBool,
    counters: Counters,
    assigned: Mutex<Vec<TopicPartition>>,
    stopped_on: Mutex<Option<StoppedOn>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic in another holder (plain collections
    // updated by single calls), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Controls a running [`Driver`] from any thread or task. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    control: Arc<Control>,
}

impl fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverHandle")
            .field("running", &self.is_running())
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl Default for DriverHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverHandle {
    /// A handle for a driver not built yet (see [`Driver::with_handle`]): layers that must pause
    /// the consumer, such as a circuit breaker, take it before the driver exists. One handle
    /// controls one driver.
    pub fn new() -> Self {
        DriverHandle {
            control: Arc::new(Control {
                started: Instant::now(),
                shutdown: AtomicBool::new(false),
                user_paused: AtomicBool::new(false),
                paused: AtomicBool::new(false),
                running: AtomicBool::new(false),
                counters: Counters::default(),
                assigned: Mutex::new(Vec::new()),
                stopped_on: Mutex::new(None),
            }),
        }
    }

    /// Asks the driver to stop: no new records are dispatched, in-flight ones finish (bounded by
    /// the shutdown timeout), finished offsets are committed, and the consumer leaves the group.
    pub fn shutdown(&self) {
        self.control.shutdown.store(true, AtomicOrdering::SeqCst);
    }

    /// Pauses fetching on every assigned partition (for example while a circuit breaker is
    /// open). In-flight records still finish and commit; the group membership stays alive.
    pub fn pause(&self) {
        self.control.user_paused.store(true, AtomicOrdering::SeqCst);
    }

    /// Resumes fetching after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.control
            .user_paused
            .store(false, AtomicOrdering::SeqCst);
    }

    /// Whether the assignment is paused (after [`pause`](Self::pause), once the poll loop
    /// applied it).
    pub fn is_paused(&self) -> bool {
        self.control.paused.load(AtomicOrdering::SeqCst)
    }

    /// Whether the poll loop is running.
    pub fn is_running(&self) -> bool {
        self.control.running.load(AtomicOrdering::SeqCst)
    }

    /// When the poll loop last polled the consumer.
    pub fn last_poll(&self) -> Option<Instant> {
        match self
            .control
            .counters
            .last_poll
            .load(AtomicOrdering::Relaxed)
        {
            0 => None,
            ms => Some(self.control.started + Duration::from_millis(ms - 1)),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DriverStats {
        let c = &self.control.counters;
        let get = |a: &AtomicU64| a.load(AtomicOrdering::Relaxed);
        DriverStats {
            polled: get(&c.polled),
            processed: get(&c.processed),
            duplicates: get(&c.duplicates),
            retried: get(&c.retried),
            dead_lettered: get(&c.dead_lettered),
            skipped: get(&c.skipped),
            failed: get(&c.failed),
            commits: get(&c.commits),
            commit_failures: get(&c.commit_failures),
            rebalances: get(&c.rebalances),
            poll_errors: get(&c.poll_errors),
            redelivered: get(&c.redelivered),
            in_flight: get(&c.in_flight),
            paused: self.is_paused(),
            assigned: lock(&self.control.assigned).clone(),
        }
    }
}

impl ConsumerControl for DriverHandle {
    fn pause(&self) {
        DriverHandle::pause(self);
    }
    fn resume(&self) {
        DriverHandle::resume(self);
    }
    fn is_paused(&self) -> bool {
        DriverHandle::is_paused(self)
    }
    fn shutdown(&self) {
        DriverHandle::shutdown(self);
    }
    fn stopped_on(&self) -> Option<StoppedOn> {
        lock(&self.control.stopped_on).clone()
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverReport {
    /// Final counters.
    pub stats: DriverStats,
    /// How long the run took.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// Records still unfinished when the shutdown timeout expired (they were not committed and
    /// will be redelivered).
    pub abandoned: u64,
}

struct Completion {
    partition: TopicPartition,
    offset: Offset,
    result: Result<Outcome, HandlerError>,
}

/// What wakes the poll loop: a finished record, or librdkafka saying a queue has messages.
enum LoopEvent {
    Completion(Completion),
    Wakeup,
}

/// One assigned partition's records between librdkafka and their completion.
#[derive(Default)]
struct PartitionWork {
    /// Taken from librdkafka, not dispatched yet (per-partition ordering), in offset order.
    waiting: VecDeque<Arc<OwnedRecord>>,
    /// Dispatched and not finished, by offset; kept so a redelivery can run the record again.
    running: HashMap<i64, Arc<OwnedRecord>>,
    /// Per-partition ordering: nothing of this partition runs before this instant (a record
    /// asked to be redelivered later; it waits at the front of `waiting`).
    held_until: Option<Instant>,
    /// Unordered processing: records to run again at their instant.
    delayed: Vec<(Instant, Arc<OwnedRecord>)>,
}

impl PartitionWork {
    fn buffered(&self) -> usize {
        self.waiting.len() + self.running.len() + self.delayed.len()
    }
}

/// Poll-loop state shared with the rebalance callbacks (which run inside `poll`).
struct LoopState {
    tracker: OffsetTracker,
    work: HashMap<TopicPartition, PartitionWork>,
    /// The first unrecovered handler failure.
    failure: Option<(TopicPartition, Offset, HandlerError)>,
    /// A fatal consumer error.
    fatal: Option<Error>,
    /// Partitions the last rebalance assigned, whose queues the poll loop must split off.
    to_split: Vec<TopicPartition>,
    /// Partitions the last rebalance revoked, whose queues the poll loop must drop.
    to_drop: Vec<TopicPartition>,
    ordering: Ordering,
}

/// Counts a finished record by outcome. Literal labels let `metrics` build each key once, in
/// a static, instead of a label vector per record.
fn count_outcome(outcome: Outcome) {
    let counter = match outcome {
        Outcome::Processed => {
            metrics::counter!("kafka_ops_records_total", "outcome" => "processed")
        }
        Outcome::Duplicate => {
            metrics::counter!("kafka_ops_records_total", "outcome" => "duplicate")
        }
        Outcome::Retried => metrics::counter!("kafka_ops_records_total", "outcome" => "retried"),
        Outcome::DeadLettered => {
            metrics::counter!("kafka_ops_records_total", "outcome" => "dead_lettered")
        }
        Outcome::Skipped => metrics::counter!("kafka_ops_records_total", "outcome" => "skipped"),
    };
    counter.increment(1);
}

/// When a redelivery asked for `at` (wall clock) is due, on the monotonic clock.
fn due_instant(at: Timestamp) -> Instant {
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    Instant::now() + at.saturating_since(now)
}

impl LoopState {
    fn apply(&mut self, completion: Completion, counters: &Counters) {
        let Completion {
            partition,
            offset,
            result,
        } = completion;
        let record = self
            .work
            .get_mut(&partition)
            .and_then(|work| work.running.remove(&offset.get()));
        let result = match result {
            Err(error) if error.disposition() == Disposition::Skip => {
                tracing::warn!(%partition, %offset, %error, "skipping the record as its handler asked");
                Ok(Outcome::Skipped)
            }
            other => other,
        };
        match result {
            Ok(outcome) => {
                let counter = match outcome {
                    Outcome::Duplicate => &counters.duplicates,
                    Outcome::Retried => &counters.retried,
                    Outcome::DeadLettered => &counters.dead_lettered,
                    Outcome::Skipped => &counters.skipped,
                    _ => &counters.processed,
                };
                bump(counter);
                count_outcome(outcome);
                self.tracker.complete(&partition, offset);
            }
            Err(error) => {
                if let Disposition::RedeliverAt(at) = error.disposition()
                    && let (Some(record), Some(work)) = (record, self.work.get_mut(&partition))
                {
                    bump(&counters.redelivered);
                    tracing::debug!(%partition, %offset, %at, "redelivery requested");
                    let due = due_instant(at);
                    match self.ordering {
                        // The record goes back to the front and its partition waits for it.
                        Ordering::PerPartition => {
                            work.waiting.push_front(record);
                            work.held_until = Some(due);
                        }
                        Ordering::Unordered => work.delayed.push((due, record)),
                    }
                    return;
                }
                bump(&counters.failed);
                metrics::counter!("kafka_ops_records_total", "outcome" => "failed").increment(1);
                tracing::error!(%partition, %offset, %error, "handler failed; stopping without committing past it");
                if self.failure.is_none() {
                    self.failure = Some((partition, offset, error));
                }
            }
        }
    }

    fn running_in(&self, partitions: &[TopicPartition]) -> usize {
        partitions
            .iter()
            .filter_map(|tp| self.work.get(tp))
            .map(|w| w.running.len())
            .sum()
    }

    fn running_total(&self) -> usize {
        self.work.values().map(|w| w.running.len()).sum()
    }
}

struct Shared {
    control: Arc<Control>,
    state: Mutex<LoopState>,
    events: Mutex<Receiver<LoopEvent>>,
    revoke_timeout: Duration,
}

impl Shared {
    /// Applies every completion already waiting; returns how many events were seen.
    fn drain_events(&self, state: &mut LoopState) -> usize {
        let receiver = lock(&self.events);
        let mut seen = 0;
        while let Ok(event) = receiver.try_recv() {
            seen += 1;
            if let LoopEvent::Completion(completion) = event {
                state.apply(completion, &self.control.counters);
            }
        }
        seen
    }

    /// Waits up to `timeout` for an event, then applies everything waiting.
    fn wait_for_event(&self, timeout: Duration) {
        let first = lock(&self.events).recv_timeout(timeout);
        let mut state = lock(&self.state);
        if let Ok(LoopEvent::Completion(completion)) = first {
            state.apply(completion, &self.control.counters);
        }
        self.drain_events(&mut state);
    }

    fn publish_in_flight(&self, state: &LoopState) {
        self.control.counters.in_flight.store(
            state.tracker.total_in_flight() as u64,
            AtomicOrdering::Relaxed,
        );
    }

    /// Commits the safe offsets of `only` (or of every tracked partition) and waits for the
    /// broker's answer. Commits are synchronous on purpose: the poll thread is not a latency
    /// path (handlers run elsewhere), and a confirmed commit is what the tracker may rely on.
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&[TopicPartition]>,
    ) -> KafkaResult<()> {
        let candidates = {
            let state = lock(&self.state);
            match only {
                Some(partitions) => state.tracker.commit_candidates_for(partitions),
                None => state.tracker.commit_candidates(),
            }
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(candidates.len());
        for (tp, offset) in &candidates {
            list.add_partition_offset(
                &tp.topic,
                tp.partition,
                rdkafka::Offset::Offset(offset.get()),
            )?;
        }
        // No lock is held here: librdkafka may run callbacks that take it.
        let result = consumer.commit(&list, CommitMode::Sync);
        match &result {
            Ok(()) => {
                bump(&self.control.counters.commits);
                metrics::counter!("kafka_ops_commits_total", "result" => "ok").increment(1);
                let mut state = lock(&self.state);
                for (tp, offset) in &candidates {
                    state.tracker.mark_committed(tp, *offset);
                }
            }
            Err(error) => {
                bump(&self.control.counters.commit_failures);
                metrics::counter!("kafka_ops_commits_total", "result" => "error").increment(1);
                tracing::warn!(%error, "offset commit failed; it will be retried");
            }
        }
        result
    }
}

/// The consumer context: rebalance callbacks, run on the poll thread.
struct DriverContext {
    shared: Arc<Shared>,
}

impl ClientContext for DriverContext {}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for DriverContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        bump(&shared.control.counters.rebalances);
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = partitions_of(list);
                tracing::info!(partitions = ?revoked, "partitions revoked");
                {
                    // Records not started yet belong to the next owner now.
                    let mut state = lock(&shared.state);
                    for tp in &revoked {
                        if let Some(work) = state.work.get_mut(tp) {
                            work.waiting.clear();
                            work.delayed.clear();
                            work.held_until = None;
                        }
                    }
                }
                // Give the revoked partitions' running records a bounded chance to finish, so
                // their offsets are committed by us rather than redone by the next owner.
                let deadline = Instant::now() + shared.revoke_timeout;
                loop {
                    let running = {
                        let mut state = lock(&shared.state);
                        shared.drain_events(&mut state);
                        state.running_in(&revoked)
                    };
                    let now = Instant::now();
                    if running == 0 || now >= deadline {
                        break;
                    }
                    shared.wait_for_event((deadline - now).min(Duration::from_millis(50)));
                }
                if !consumer.assignment_lost()
                    && let Err(error) = shared.commit(consumer, Some(&revoked))
                {
                    tracing::warn!(%error, "commit on revoke failed");
                }
                let mut state = lock(&shared.state);
                for tp in &revoked {
                    state.tracker.forget(tp);
                    state.work.remove(tp);
                    state.to_split.retain(|t| t != tp);
                }
                state.to_drop.extend(revoked.iter().cloned());
                shared.publish_in_flight(&state);
                lock(&shared.control.assigned).retain(|tp| !revoked.contains(tp));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(%error, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions_of(list);
            tracing::info!(partitions = ?assigned, "partitions assigned");
            if self.shared.control.paused.load(AtomicOrdering::SeqCst)
                && let Err(error) = consumer.pause(list)
            {
                tracing::warn!(%error, "could not pause newly assigned partitions");
            }
            {
                let mut state = lock(&self.shared.state);
                for tp in &assigned {
                    state.work.entry(tp.clone()).or_default();
                    state.to_drop.retain(|t| t != tp);
                }
                state.to_split.extend(assigned.iter().cloned());
            }
            let mut current = lock(&self.shared.control.assigned);
            for tp in assigned {
                if !current.contains(&tp) {
                    current.push(tp);
                }
            }
            current.sort();
        }
    }
}

/// Stops the poll thread when the future awaiting it is dropped: otherwise the thread would run
/// on unobserved, and a runtime being dropped would wait for it forever.
struct ShutdownOnDrop(Option<Arc<Control>>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(control) = self.0.take() {
            control.shutdown.store(true, AtomicOrdering::SeqCst);
        }
    }
}

/// Runs a handler over a subscription. See the [module documentation](self).
pub struct Driver<H> {
    consumer_config: ClientConfig,
    config: DriverConfig,
    handler: Arc<H>,
    control: Arc<Control>,
}

impl<H> fmt::Debug for Driver<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field(
                "consumer_config",
                &crate::kafka::redacted_config(&self.consumer_config),
            )
            .field("config", &self.config)
            .finish()
    }
}

impl<H: Handler> Driver<H> {
    /// A driver for the consumer `consumer_config` describes (it must set `group.id`; auto-commit
    /// and auto offset store are turned off because the driver commits).
    pub fn new(consumer_config: ClientConfig, config: DriverConfig, handler: H) -> Self {
        Self::with_handle(consumer_config, config, handler, DriverHandle::new())
    }

    /// A driver controlled through `handle`, created beforehand with [`DriverHandle::new`] so
    /// layers inside `handler` can hold it.
    pub fn with_handle(
        consumer_config: ClientConfig,
        config: DriverConfig,
        handler: H,
        handle: DriverHandle,
    ) -> Self {
        Driver {
            consumer_config,
            config,
            handler: Arc::new(handler),
            control: handle.control,
        }
    }

    /// A handle to control and observe the driver; valid before, during and after [`run`](Self::run).
    pub fn handle(&self) -> DriverHandle {
        DriverHandle {
            control: self.control.clone(),
        }
    }

    /// Runs until [`DriverHandle::shutdown`] or an unrecovered handler error.
    ///
    /// Returns the final report, or the handler's error (after committing everything that
    /// finished before it), or a consumer error. Dropping the returned future (a cancelled task,
    /// a runtime shutting down) shuts the driver down the same way as the handle would.
    pub async fn run(self) -> Result<DriverReport, Error> {
        self.config.validate()?;
        if self
            .consumer_config
            .get("group.id")
            .is_none_or(str::is_empty)
        {
            return Err(Error::Config(
                "the consumer configuration must set group.id".into(),
            ));
        }
        let runtime = tokio::runtime::Handle::current();
        let mut on_drop = ShutdownOnDrop(Some(self.control.clone()));
        let result = tokio::task::spawn_blocking(move || self.run_blocking(runtime))
            .await
            .map_err(|e| Error::Task(Box::new(e)));
        on_drop.0 = None;
        result?
    }

    fn run_blocking(self, runtime: tokio::runtime::Handle) -> Result<DriverReport, Error> {
        let started = Instant::now();
        let (sender, receiver) = mpsc::channel::<LoopEvent>();
        let shared = Arc::new(Shared {
            control: self.control.clone(),
            state: Mutex::new(LoopState {
                tracker: OffsetTracker::new(),
                work: HashMap::default(),
                failure: None,
                fatal: None,
                to_split: Vec::new(),
                to_drop: Vec::new(),
                ordering: self.config.ordering,
            }),
            events: Mutex::new(receiver),
            revoke_timeout: self.config.revoke_timeout,
        });
        let mut consumer_config = self.consumer_config.clone();
        consumer_config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let mut consumer: BaseConsumer<DriverContext> = consumer_config
            .create_with_context(DriverContext {
                shared: shared.clone(),
            })
            .map_err(|e| kafka_error("create consumer", e))?;
        {
            let wake = sender.clone();
            consumer.set_nonempty_callback(move || {
                let _ = wake.send(LoopEvent::Wakeup);
            });
        }
        // Partition queues are split off an `Arc` of the consumer.
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| kafka_error("subscribe", e))?;
        self.control.running.store(true, AtomicOrdering::SeqCst);
        *lock(&self.control.stopped_on) = None;
        let mut run = RunLoop {
            driver: &self,
            shared: &shared,
            consumer: &consumer,
            sender,
            runtime,
            queues: HashMap::default(),
            topics: std::cell::RefCell::new(HashMap::default()),
            last_commit: Instant::now(),
            next_queue: 0,
            inline_polls: Cell::new(true),
            slow_inline_polls: Cell::new(0),
        };
        run.poll_until_stopped();
        let abandoned = run.finish();
        // The partition queues hold the consumer: drop them before it.
        drop(run);
        consumer.unsubscribe();
        drop(consumer);
        self.control.running.store(false, AtomicOrdering::SeqCst);

        let mut state = lock(&shared.state);
        if let Some(error) = state.fatal.take() {
            return Err(error);
        }
        if let Some((partition, offset, source)) = state.failure.take() {
            *lock(&self.control.stopped_on) = Some(StoppedOn {
                group: self
                    .consumer_config
                    .get("group.id")
                    .unwrap_or_default()
                    .to_string(),
                partition: partition.clone(),
                offset,
                class: source.class(),
                error: source.cause().to_string(),
            });
            return Err(Error::Handler {
                partition,
                offset: offset.get(),
                source,
            });
        }
        Ok(DriverReport {
            stats: self.handle().stats(),
            elapsed: started.elapsed(),
            abandoned,
        })
    }
}

/// Records the consumer hands over per poll call before the loop does its housekeeping.
const POLL_BATCH: usize = 1_024;

/// How long a handler's first poll may hold the poll thread before handlers stop being polled
/// there (see `RunLoop::spawn`).
const INLINE_POLL_BUDGET: Duration = Duration::from_millis(1);

/// Inline polls over [`INLINE_POLL_BUDGET`] in a row that end inline polls for the run. One is
/// not enough: a hash table growing, a page fault or the thread losing its core makes a single
/// poll slow now and then, and ending inline polls for that costs every later record a task.
const SLOW_INLINE_POLLS_IN_A_ROW: u32 = 3;

struct RunLoop<'a, H> {
    driver: &'a Driver<H>,
    shared: &'a Arc<Shared>,
    consumer: &'a Arc<BaseConsumer<DriverContext>>,
    sender: Sender<LoopEvent>,
    runtime: tokio::runtime::Handle,
    /// Each assigned partition's own librdkafka queue: records are taken from it only while
    /// there is room, so backpressure never needs pause/resume (whose purge and refetch would
    /// cost more than the work) and the consumer queue stays free for rebalance events.
    queues: HashMap<TopicPartition, PartitionQueue<DriverContext>>,
    /// Interned topic names, so records share one allocation per topic.
    topics: std::cell::RefCell<HashMap<String, Arc<str>>>,
    last_commit: Instant,
    /// Where the next round of queue pulls starts, so no partition is always served last.
    next_queue: usize,
    /// Whether handlers get their first poll on the poll thread.
    inline_polls: Cell<bool>,
    /// Inline polls over the budget since the last one within it.
    slow_inline_polls: Cell<u32>,
}

use rdkafka::consumer::base_consumer::PartitionQueue;

impl<H: Handler> RunLoop<'_, H> {
    fn control(&self) -> &Control {
        &self.driver.control
    }

    fn config(&self) -> &DriverConfig {
        &self.driver.config
    }

    fn should_stop(&self) -> bool {
        if self.control().shutdown.load(AtomicOrdering::SeqCst) {
            return true;
        }
        let state = lock(&self.shared.state);
        state.failure.is_some() || state.fatal.is_some()
    }

    fn mark_polled(&self) {
        let elapsed = self.control().started.elapsed().as_millis();
        self.control().counters.last_poll.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1,
            AtomicOrdering::Relaxed,
        );
    }

    fn poll_until_stopped(&mut self) {
        while !self.should_stop() {
            let mut progress = {
                let mut state = lock(&self.shared.state);
                let events = self.shared.drain_events(&mut state);
                let dispatched = self.dispatch_ready(&mut state);
                self.shared.publish_in_flight(&state);
                events + dispatched
            };
            self.set_paused(self.control().user_paused.load(AtomicOrdering::SeqCst));
            if self.last_commit.elapsed() >= self.config().commit_interval {
                self.observe_positions();
                // Failures are counted and logged inside; the next interval retries.
                let _ = self.shared.commit(self.consumer.as_ref(), None);
                self.last_commit = Instant::now();
            }
            progress += self.serve_consumer_queue();
            progress += self.pull_partition_queues();
            if progress == 0 {
                // Nothing to do: sleep until a record finishes, a queue gets messages, a held
                // record is due, or the poll interval passes (to keep serving the group).
                let wait = self.next_due().map_or(self.config().poll_timeout, |due| {
                    due.saturating_duration_since(Instant::now())
                        .min(self.config().poll_timeout)
                });
                self.shared.wait_for_event(wait);
            }
        }
    }

    /// Lets the tracker step over transaction markers (and records aborted under
    /// `read_committed`): librdkafka hides them but moves the consumer's position past them.
    /// Only called from the running loop, where every record taken from librdkafka has been
    /// tracked, so a position never skips a record that is not done.
    fn observe_positions(&self) {
        let positions = match self.consumer.position() {
            Ok(positions) => positions,
            Err(error) => {
                tracing::debug!(%error, "could not read the consumer's positions");
                return;
            }
        };
        let mut state = lock(&self.shared.state);
        for element in positions.elements() {
            if let rdkafka::Offset::Offset(position) = element.offset()
                && let Ok(position) = Offset::new(position)
            {
                let tp = TopicPartition::new(element.topic(), element.partition());
                state.tracker.observe_position(&tp, position);
            }
        }
    }

    /// The earliest instant a held or delayed record becomes due.
    fn next_due(&self) -> Option<Instant> {
        let state = lock(&self.shared.state);
        state
            .work
            .values()
            .flat_map(|w| {
                w.held_until
                    .into_iter()
                    .chain(w.delayed.iter().map(|(at, _)| *at))
            })
            .min()
    }

    /// Serves the consumer's own queue: rebalance and error events, and records of partitions
    /// whose queue is not split off (yet). Then splits or drops partition queues as the
    /// rebalances asked. Returns how many records and events it handled.
    fn serve_consumer_queue(&mut self) -> usize {
        let mut handled = 0;
        for _ in 0..POLL_BATCH {
            let message = self.consumer.poll(Duration::ZERO);
            self.mark_polled();
            match message {
                None => break,
                Some(message) => {
                    handled += 1;
                    self.take(message);
                }
            }
        }
        self.apply_queue_changes();
        handled
    }

    fn apply_queue_changes(&mut self) {
        let (to_drop, to_split) = {
            let mut state = lock(&self.shared.state);
            (
                std::mem::take(&mut state.to_drop),
                std::mem::take(&mut state.to_split),
            )
        };
        for tp in to_drop {
            self.queues.remove(&tp);
        }
        for tp in to_split {
            match self.consumer.split_partition_queue(&tp.topic, tp.partition) {
                Some(mut queue) => {
                    let wake = self.sender.clone();
                    queue.set_nonempty_callback(move || {
                        let _ = wake.send(LoopEvent::Wakeup);
                    });
                    self.queues.insert(tp, queue);
                }
                None => {
                    tracing::warn!(%tp, "could not split the partition's queue; its records come through the consumer queue");
                }
            }
        }
    }

    /// How many more records of `tp` may be taken from librdkafka now.
    fn room_for(&self, state: &LoopState, tp: &TopicPartition) -> usize {
        if self.control().paused.load(AtomicOrdering::SeqCst) {
            return 0;
        }
        let total_room = self
            .config()
            .max_in_flight
            .saturating_sub(state.tracker.total_in_flight());
        let buffered = state.work.get(tp).map_or(0, PartitionWork::buffered);
        let partition_room = match self.config().ordering {
            Ordering::PerPartition => self.config().partition_buffer.saturating_sub(buffered),
            Ordering::Unordered => total_room,
        };
        total_room.min(partition_room)
    }

    /// Takes records from the partition queues that have room, round-robin. Returns how many.
    fn pull_partition_queues(&mut self) -> usize {
        let mut partitions: Vec<TopicPartition> = self.queues.keys().cloned().collect();
        if partitions.is_empty() {
            return 0;
        }
        partitions.sort();
        let start = self.next_queue % partitions.len();
        self.next_queue = self.next_queue.wrapping_add(1);
        partitions.rotate_left(start);
        let mut taken = 0;
        for tp in partitions {
            let room = self.room_for(&lock(&self.shared.state), &tp);
            for _ in 0..room.min(POLL_BATCH) {
                let Some(queue) = self.queues.get(&tp) else {
                    break;
                };
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(message) => {
                        taken += 1;
                        self.take(message);
                    }
                }
            }
        }
        if taken > 0 {
            self.mark_polled();
        }
        taken
    }

    /// Handles one thing the consumer delivered: a record, or an error.
    fn take(&self, message: KafkaResult<rdkafka::message::BorrowedMessage<'_>>) {
        match message {
            Ok(message) => {
                bump(&self.control().counters.polled);
                match record_from_message(&message) {
                    Ok(record) => {
                        let topic = {
                            let mut topics = self.topics.borrow_mut();
                            match topics.get(message.topic()) {
                                Some(topic) => topic.clone(),
                                None => {
                                    let topic: Arc<str> = Arc::from(message.topic());
                                    topics.insert(message.topic().to_string(), topic.clone());
                                    topic
                                }
                            }
                        };
                        self.accept(topic, record.into_owned());
                    }
                    Err(error) => {
                        tracing::error!(%error, "unreadable message from the consumer");
                        lock(&self.shared.state).fatal.get_or_insert(error);
                    }
                }
            }
            Err(error) => {
                bump(&self.control().counters.poll_errors);
                if classify(&error) == ErrorClass::Fatal {
                    tracing::error!(%error, "fatal consumer error");
                    lock(&self.shared.state)
                        .fatal
                        .get_or_insert(kafka_error("poll", error));
                } else {
                    tracing::warn!(%error, "consumer error");
                }
            }
        }
    }

    fn set_paused(&self, pause: bool) {
        let control = self.control();
        if control.paused.load(AtomicOrdering::SeqCst) == pause {
            return;
        }
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                tracing::warn!(%error, "could not read the assignment to pause/resume");
                return;
            }
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                control.paused.store(pause, AtomicOrdering::SeqCst);
                tracing::debug!(pause, "assignment pause state changed");
            }
            Err(error) => tracing::warn!(%error, pause, "could not change the pause state"),
        }
    }

    /// Tracks a received record and dispatches it, or queues it behind its partition's running
    /// record.
    fn accept(&self, topic: Arc<str>, record: OwnedRecord) {
        let tp = TopicPartition {
            topic,
            partition: record.partition,
        };
        let mut state = lock(&self.shared.state);
        if let Err(error) = state.tracker.track(&tp, record.offset) {
            // A partition re-read from an earlier offset without a revoke (a seek by someone
            // else): start its bookkeeping over rather than commit wrong offsets.
            tracing::warn!(%error, "restarting offset tracking for the partition");
            state.tracker.forget(&tp);
            if let Some(work) = state.work.get_mut(&tp) {
                *work = PartitionWork::default();
            }
            if let Err(error) = state.tracker.track(&tp, record.offset) {
                state.fatal.get_or_insert(error);
                return;
            }
        }
        let record = Arc::new(record);
        match self.config().ordering {
            Ordering::Unordered => self.spawn(tp, record, &mut state),
            Ordering::PerPartition => {
                state.work.entry(tp).or_default().waiting.push_back(record);
            }
        }
    }

    /// Starts every record that may run now: the head of each idle, unheld partition
    /// (per-partition ordering) and every delayed record that is due. Returns how many.
    fn dispatch_ready(&self, state: &mut LoopState) -> usize {
        // A record that completed inline frees its partition at once: go round again, a
        // bounded number of times so the consumer is still served often.
        let mut total = 0;
        while total < POLL_BATCH {
            let dispatched = self.dispatch_ready_once(state);
            if dispatched == 0 {
                break;
            }
            total += dispatched;
        }
        total
    }

    fn dispatch_ready_once(&self, state: &mut LoopState) -> usize {
        if state.failure.is_some() || self.control().shutdown.load(AtomicOrdering::SeqCst) {
            return 0;
        }
        let now = Instant::now();
        let mut ready: Vec<(TopicPartition, Arc<OwnedRecord>)> = Vec::new();
        for (tp, work) in state.work.iter_mut() {
            if work.held_until.is_some_and(|until| until <= now) {
                work.held_until = None;
            }
            if work.running.is_empty()
                && work.held_until.is_none()
                && let Some(record) = work.waiting.pop_front()
            {
                ready.push((tp.clone(), record));
            }
            if !work.delayed.is_empty() {
                let (due, later): (Vec<_>, Vec<_>) =
                    work.delayed.drain(..).partition(|(at, _)| *at <= now);
                work.delayed = later;
                ready.extend(due.into_iter().map(|(_, record)| (tp.clone(), record)));
            }
        }
        let count = ready.len();
        for (tp, record) in ready {
            self.spawn(tp, record, state);
        }
        count
    }

    /// Starts `record`'s handler. Its first poll runs right here, on the poll thread: a handler
    /// that finishes without waiting on anything (most successful records, through most layers)
    /// completes without a task, a channel message and a thread wake-up. One that waits goes on
    /// as a tokio task. Handlers holding the poll thread longer than [`INLINE_POLL_BUDGET`]
    /// [`SLOW_INLINE_POLLS_IN_A_ROW`] times in a row end inline polls for the run, so CPU-heavy
    /// handlers keep running in parallel on the runtime's workers.
    fn spawn(&self, tp: TopicPartition, record: Arc<OwnedRecord>, state: &mut LoopState) {
        let offset = record.offset;
        state
            .work
            .entry(tp.clone())
            .or_default()
            .running
            .insert(offset.get(), record.clone());
        let handler = self.driver.handler.clone();
        let span = tracing::debug_span!("record", topic = %tp.topic, partition = tp.partition, offset = offset.get());
        let mut handling: Pin<Box<dyn Future<Output = Result<Outcome, HandlerError>> + Send>> =
            Box::pin(async move {
                AssertUnwindSafe(handler.handle(&record))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "non-string panic".into());
                        Err(HandlerError::fatal(format!("handler panicked: {message}")))
                    })
            });
        if self.inline_polls.get() {
            let started = Instant::now();
            let polled = {
                let _runtime = self.runtime.enter();
                let _span = span.enter();
                handling
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            };
            if started.elapsed() > INLINE_POLL_BUDGET {
                let slow = self.slow_inline_polls.get() + 1;
                self.slow_inline_polls.set(slow);
                if slow >= SLOW_INLINE_POLLS_IN_A_ROW {
                    tracing::debug!(
                        "handlers held the poll thread for over {INLINE_POLL_BUDGET:?} {slow} times in a row; they run as tasks from now on"
                    );
                    self.inline_polls.set(false);
                }
            } else {
                self.slow_inline_polls.set(0);
            }
            if let Poll::Ready(result) = polled {
                state.apply(
                    Completion {
                        partition: tp,
                        offset,
                        result,
                    },
                    &self.control().counters,
                );
                return;
            }
        }
        // Polling again from the task registers the real waker, whatever the first poll left.
        let sender = self.sender.clone();
        self.runtime.spawn(
            async move {
                let result = handling.await;
                // The receiver is gone only after the driver stopped; the record then stays
                // uncommitted and is redelivered, which is the at-least-once contract.
                let _ = sender.send(LoopEvent::Completion(Completion {
                    partition: tp,
                    offset,
                    result,
                }));
            }
            .instrument(span),
        );
    }

    /// Stops dispatching, waits (bounded) for running records, and commits synchronously.
    /// Returns the number of records left unfinished.
    fn finish(&mut self) -> u64 {
        self.set_paused(true);
        let deadline = Instant::now() + self.config().shutdown_timeout;
        loop {
            let running = {
                let mut state = lock(&self.shared.state);
                self.shared.drain_events(&mut state);
                state.running_total()
            };
            let now = Instant::now();
            if running == 0 || now >= deadline {
                break;
            }
            self.shared
                .wait_for_event((deadline - now).min(Duration::from_millis(50)));
            // Keep serving the group (heartbeats, rebalance callbacks) while waiting. A record
            // returned here is not tracked, hence not committed: the next owner reads it.
            let _ = self.consumer.poll(Duration::ZERO);
            self.apply_queue_changes();
        }
        // A rebalance racing the shutdown makes the coordinator refuse commits for a moment:
        // keep serving the group and retry while the shutdown bound allows.
        for attempt in 1..=5 {
            match self.shared.commit(self.consumer.as_ref(), None) {
                Ok(()) => break,
                Err(error)
                    if classify(&error) == ErrorClass::Transient && Instant::now() < deadline =>
                {
                    tracing::info!(%error, attempt, "final commit refused; retrying");
                    let _ = self.consumer.poll(Duration::from_millis(200));
                    self.apply_queue_changes();
                }
                Err(error) => {
                    tracing::warn!(%error, "final commit failed; unfinished offsets will be redelivered");
                    break;
                }
            }
        }
        let state = lock(&self.shared.state);
        self.shared.publish_in_flight(&state);
        state.running_total() as u64
    }
}
