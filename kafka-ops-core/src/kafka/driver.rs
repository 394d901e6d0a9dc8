//! The consumer driver: poll → handle → track → commit, with at-least-once guarantees.
//!
//! A [`Driver`] owns a consumer on a dedicated thread (librdkafka's poll, commit and rebalance
//! calls block) and runs the [`Handler`] for each record as a tokio task, up to
//! [`DriverConfig::max_in_flight`] at once. Records may finish out of order; an
//! [`OffsetTracker`] decides what is safe to commit, so the driver:
//!
//! - never commits past a record whose handling has not finished (or failed);
//! - commits finished offsets periodically, and when partitions are revoked and when it shuts
//!   down, after waiting (bounded) for their in-flight records; every commit waits for the
//!   broker's answer, so what the tracker believes committed is committed;
//! - applies backpressure by pausing the assignment when too many records are buffered, so the
//!   poll loop stays alive for the group without reading more than it can hold;
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, Message, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{Error, ErrorClass};
use crate::handler::{ConsumerControl, Disposition, Handler, HandlerError, Outcome};
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
    /// Records buffered or running at once before the assignment is paused.
    pub max_in_flight: usize,
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
        if self.max_in_flight == 0 {
            return Err(Error::Config("max_in_flight must be at least 1".into()));
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
    /// Whether the assignment is paused (by the handle or by backpressure).
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

    /// Whether the assignment is paused (by [`pause`](Self::pause) or by backpressure).
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

/// Poll-loop state shared with the rebalance and commit callbacks (which run inside `poll`).
struct LoopState {
    tracker: OffsetTracker,
    /// Records received but not yet dispatched (per-partition ordering).
    queued: HashMap<TopicPartition, VecDeque<OwnedRecord>>,
    /// Partitions with a record running (per-partition ordering).
    busy: HashMap<TopicPartition, usize>,
    /// The first unrecovered handler failure.
    failure: Option<(TopicPartition, Offset, HandlerError)>,
    /// A fatal consumer error.
    fatal: Option<Error>,
    /// Records a handler asked to see again later ([`Disposition::RedeliverAt`]), not yet applied.
    redeliveries: Vec<(TopicPartition, Offset, Timestamp)>,
    /// Partitions paused until a redelivery is due.
    deferred: HashMap<TopicPartition, Instant>,
}

impl LoopState {
    fn apply(&mut self, completion: Completion, counters: &Counters) {
        let Completion {
            partition,
            offset,
            result,
        } = completion;
        if let Some(running) = self.busy.get_mut(&partition) {
            *running = running.saturating_sub(1);
        }
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
                metrics::counter!("kafka_ops_records_total", "outcome" => outcome.as_str())
                    .increment(1);
                self.tracker.complete(&partition, offset);
            }
            Err(error) => {
                if let Disposition::RedeliverAt(at) = error.disposition() {
                    bump(&counters.redelivered);
                    tracing::debug!(%partition, %offset, %at, "redelivery requested");
                    // Hold the partition at once: nothing after this record may run before it.
                    // The poll loop seeks back and sets the real due time.
                    self.queued.remove(&partition);
                    self.deferred.insert(
                        partition.clone(),
                        Instant::now() + Duration::from_secs(3_600),
                    );
                    self.redeliveries.push((partition, offset, at));
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
}

struct Shared {
    control: Arc<Control>,
    state: Mutex<LoopState>,
    completions: Mutex<Receiver<Completion>>,
    revoke_timeout: Duration,
}

impl Shared {
    /// Applies every completion already waiting.
    fn drain_completions(&self, state: &mut LoopState) {
        let receiver = lock(&self.completions);
        while let Ok(completion) = receiver.try_recv() {
            state.apply(completion, &self.control.counters);
        }
    }

    /// Waits up to `timeout` for one completion, then applies everything waiting.
    fn wait_for_completion(&self, timeout: Duration) {
        let first = lock(&self.completions).recv_timeout(timeout);
        let mut state = lock(&self.state);
        if let Ok(completion) = first {
            state.apply(completion, &self.control.counters);
        }
        self.drain_completions(&mut state);
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
                    let mut state = lock(&shared.state);
                    for tp in &revoked {
                        state.queued.remove(tp);
                    }
                }
                // Give the revoked partitions' running records a bounded chance to finish, so
                // their offsets are committed by us rather than redone by the next owner.
                let deadline = Instant::now() + shared.revoke_timeout;
                loop {
                    let running: usize = {
                        let mut state = lock(&shared.state);
                        shared.drain_completions(&mut state);
                        revoked
                            .iter()
                            .map(|tp| *state.busy.get(tp).unwrap_or(&0))
                            .sum()
                    };
                    let now = Instant::now();
                    if running == 0 || now >= deadline {
                        break;
                    }
                    shared.wait_for_completion((deadline - now).min(Duration::from_millis(50)));
                }
                if !consumer.assignment_lost()
                    && let Err(error) = shared.commit(consumer, Some(&revoked))
                {
                    tracing::warn!(%error, "commit on revoke failed");
                }
                let mut state = lock(&shared.state);
                for tp in &revoked {
                    state.tracker.forget(tp);
                    state.busy.remove(tp);
                    state.deferred.remove(tp);
                }
                state
                    .redeliveries
                    .retain(|(tp, _, _)| !revoked.contains(tp));
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
    /// finished before it), or a consumer error.
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
        tokio::task::spawn_blocking(move || self.run_blocking(runtime))
            .await
            .map_err(|e| Error::Task(Box::new(e)))?
    }

    fn run_blocking(self, runtime: tokio::runtime::Handle) -> Result<DriverReport, Error> {
        let started = Instant::now();
        let (sender, receiver) = mpsc::channel::<Completion>();
        let shared = Arc::new(Shared {
            control: self.control.clone(),
            state: Mutex::new(LoopState {
                tracker: OffsetTracker::new(),
                queued: HashMap::new(),
                busy: HashMap::new(),
                failure: None,
                fatal: None,
                redeliveries: Vec::new(),
                deferred: HashMap::new(),
            }),
            completions: Mutex::new(receiver),
            revoke_timeout: self.config.revoke_timeout,
        });
        let mut consumer_config = self.consumer_config.clone();
        consumer_config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer<DriverContext> = consumer_config
            .create_with_context(DriverContext {
                shared: shared.clone(),
            })
            .map_err(|e| kafka_error("create consumer", e))?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| kafka_error("subscribe", e))?;
        self.control.running.store(true, AtomicOrdering::SeqCst);
        let mut run = RunLoop {
            driver: &self,
            shared: &shared,
            consumer: &consumer,
            sender,
            runtime,
            topics: HashMap::new(),
            last_commit: Instant::now(),
        };
        run.poll_until_stopped();
        let abandoned = run.finish();
        drop(run);
        consumer.unsubscribe();
        drop(consumer);
        self.control.running.store(false, AtomicOrdering::SeqCst);

        let mut state = lock(&shared.state);
        if let Some(error) = state.fatal.take() {
            return Err(error);
        }
        if let Some((partition, offset, source)) = state.failure.take() {
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

struct RunLoop<'a, H> {
    driver: &'a Driver<H>,
    shared: &'a Arc<Shared>,
    consumer: &'a BaseConsumer<DriverContext>,
    sender: Sender<Completion>,
    runtime: tokio::runtime::Handle,
    /// Interned topic names, so records share one allocation per topic.
    topics: HashMap<String, Arc<str>>,
    last_commit: Instant,
}

impl<H: Handler> RunLoop<'_, H> {
    fn control(&self) -> &Control {
        &self.driver.control
    }

    fn should_stop(&self) -> bool {
        if self.control().shutdown.load(AtomicOrdering::SeqCst) {
            return true;
        }
        let state = lock(&self.shared.state);
        state.failure.is_some() || state.fatal.is_some()
    }

    fn poll_until_stopped(&mut self) {
        let config = &self.driver.config;
        while !self.should_stop() {
            let (in_flight, waiting) = {
                let mut state = lock(&self.shared.state);
                self.shared.drain_completions(&mut state);
                self.dispatch_queued(&mut state);
                self.shared.publish_in_flight(&state);
                let queued: usize = state.queued.values().map(VecDeque::len).sum();
                (state.tracker.total_in_flight(), queued > 0)
            };
            self.apply_redeliveries();
            self.resume_due_partitions();
            let saturated = in_flight >= config.max_in_flight;
            self.set_paused(self.control().user_paused.load(AtomicOrdering::SeqCst) || saturated);
            if self.last_commit.elapsed() >= config.commit_interval {
                // Failures are counted and logged inside; the next interval retries.
                let _ = self.shared.commit(self.consumer, None);
                self.last_commit = Instant::now();
            }
            // With records waiting on a partition's previous one (or a full buffer), a completion
            // is what unblocks progress: wait for it rather than for the broker.
            let poll_for = if saturated || waiting {
                self.shared.wait_for_completion(config.poll_timeout);
                Duration::ZERO
            } else {
                config.poll_timeout
            };
            self.poll_once(poll_for);
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
            // Partitions waiting for a redelivery stay paused until it is due.
            let deferred = lock(&self.shared.state).deferred.clone();
            let mut ready = TopicPartitionList::with_capacity(assignment.count());
            for element in assignment.elements() {
                if !deferred
                    .contains_key(&TopicPartition::new(element.topic(), element.partition()))
                {
                    ready.add_partition(element.topic(), element.partition());
                }
            }
            self.consumer.resume(&ready)
        };
        match result {
            Ok(()) => {
                control.paused.store(pause, AtomicOrdering::SeqCst);
                tracing::debug!(pause, "assignment pause state changed");
            }
            Err(error) => tracing::warn!(%error, pause, "could not change the pause state"),
        }
    }

    /// Seeks each partition with a requested redelivery back to the record and pauses it until
    /// the record is due.
    fn apply_redeliveries(&self) {
        let requests = std::mem::take(&mut lock(&self.shared.state).redeliveries);
        for (tp, offset, at) in requests {
            // A partition revoked since the request belongs to someone else now.
            if !lock(&self.control().assigned).contains(&tp) {
                continue;
            }
            {
                let mut state = lock(&self.shared.state);
                state.queued.remove(&tp);
                state.busy.remove(&tp);
                state.tracker.rewind(&tp, offset);
            }
            let mut list = TopicPartitionList::with_capacity(1);
            list.add_partition(&tp.topic, tp.partition);
            if let Err(error) = self.consumer.pause(&list) {
                tracing::warn!(%tp, %error, "could not pause the partition for a redelivery");
            }
            // No lock is held across librdkafka calls.
            if let Err(error) = self.consumer.seek(
                &tp.topic,
                tp.partition,
                rdkafka::Offset::Offset(offset.get()),
                Duration::from_secs(10),
            ) {
                tracing::warn!(%tp, %offset, %error, "could not seek back for a redelivery; it will come with the next assignment");
            }
            let now = Timestamp::from_system_time(std::time::SystemTime::now());
            let until = Instant::now() + at.saturating_since(now);
            lock(&self.shared.state).deferred.insert(tp, until);
        }
    }

    /// Resumes partitions whose redelivery is due (unless the whole assignment is paused: its
    /// resume will include them).
    fn resume_due_partitions(&self) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = {
            let mut state = lock(&self.shared.state);
            let due: Vec<TopicPartition> = state
                .deferred
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in &due {
                state.deferred.remove(tp);
            }
            due
        };
        if due.is_empty() || self.control().paused.load(AtomicOrdering::SeqCst) {
            return;
        }
        let mut list = TopicPartitionList::with_capacity(due.len());
        for tp in &due {
            list.add_partition(&tp.topic, tp.partition);
        }
        if let Err(error) = self.consumer.resume(&list) {
            tracing::warn!(%error, "could not resume partitions after a redelivery delay");
        }
    }

    fn poll_once(&mut self, timeout: Duration) {
        let message = self.consumer.poll(timeout);
        let elapsed = self.control().started.elapsed().as_millis();
        self.control().counters.last_poll.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1,
            AtomicOrdering::Relaxed,
        );
        match message {
            None => {}
            Some(Ok(message)) => {
                bump(&self.control().counters.polled);
                match record_from_message(&message) {
                    Ok(record) => {
                        let topic = match self.topics.get(message.topic()) {
                            Some(topic) => topic.clone(),
                            None => {
                                let topic: Arc<str> = Arc::from(message.topic());
                                self.topics
                                    .insert(message.topic().to_string(), topic.clone());
                                topic
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
            Some(Err(error)) => {
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

    /// Tracks a received record and dispatches it (or queues it behind its partition's
    /// running record).
    fn accept(&mut self, topic: Arc<str>, record: OwnedRecord) {
        let tp = TopicPartition {
            topic,
            partition: record.partition,
        };
        let mut state = lock(&self.shared.state);
        if state.deferred.contains_key(&tp) {
            // Fetched before the partition was held for a redelivery: the seek back re-reads it.
            return;
        }
        if let Err(error) = state.tracker.track(&tp, record.offset) {
            // A partition re-read from an earlier offset without a revoke (a seek by someone
            // else): start its bookkeeping over rather than commit wrong offsets.
            tracing::warn!(%error, "restarting offset tracking for the partition");
            state.tracker.forget(&tp);
            state.queued.remove(&tp);
            if let Err(error) = state.tracker.track(&tp, record.offset) {
                state.fatal.get_or_insert(error);
                return;
            }
        }
        match self.driver.config.ordering {
            Ordering::Unordered => self.spawn(tp, record, &mut state),
            Ordering::PerPartition => {
                state.queued.entry(tp).or_default().push_back(record);
                self.dispatch_queued(&mut state);
            }
        }
    }

    /// Starts the next queued record of every idle partition.
    fn dispatch_queued(&self, state: &mut LoopState) {
        if state.failure.is_some() || self.control().shutdown.load(AtomicOrdering::SeqCst) {
            return;
        }
        let ready: Vec<TopicPartition> = state
            .queued
            .iter()
            .filter(|(tp, queue)| {
                !queue.is_empty()
                    && state.busy.get(*tp).copied().unwrap_or(0) == 0
                    && !state.deferred.contains_key(*tp)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in ready {
            if let Some(record) = state.queued.get_mut(&tp).and_then(VecDeque::pop_front) {
                self.spawn(tp, record, state);
            }
        }
    }

    fn spawn(&self, tp: TopicPartition, record: OwnedRecord, state: &mut LoopState) {
        *state.busy.entry(tp.clone()).or_insert(0) += 1;
        let handler = self.driver.handler.clone();
        let sender = self.sender.clone();
        let offset = record.offset;
        let span = tracing::debug_span!("record", topic = %tp.topic, partition = tp.partition, offset = offset.get());
        self.runtime.spawn(
            async move {
                let result = AssertUnwindSafe(handler.handle(&record))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "non-string panic".into());
                        Err(HandlerError::fatal(format!("handler panicked: {message}")))
                    });
                // The receiver is gone only after the driver stopped; the record then stays
                // uncommitted and is redelivered, which is the at-least-once contract.
                let _ = sender.send(Completion {
                    partition: tp,
                    offset,
                    result,
                });
            }
            .instrument(span),
        );
    }

    /// Stops dispatching, waits (bounded) for running records, and commits synchronously.
    /// Returns the number of records left unfinished.
    fn finish(&mut self) -> u64 {
        self.set_paused(true);
        let deadline = Instant::now() + self.driver.config.shutdown_timeout;
        loop {
            let running: usize = {
                let mut state = lock(&self.shared.state);
                self.shared.drain_completions(&mut state);
                state.busy.values().sum()
            };
            let now = Instant::now();
            if running == 0 || now >= deadline {
                break;
            }
            self.shared
                .wait_for_completion((deadline - now).min(Duration::from_millis(50)));
            // Keep serving the group (heartbeats, rebalance callbacks) while waiting.
            let _ = self.consumer.poll(Duration::ZERO);
        }
        // A rebalance racing the shutdown makes the coordinator refuse commits for a moment:
        // keep serving the group and retry while the shutdown bound allows.
        for attempt in 1..=5 {
            match self.shared.commit(self.consumer, None) {
                Ok(()) => break,
                Err(error)
                    if classify(&error) == ErrorClass::Transient && Instant::now() < deadline =>
                {
                    tracing::info!(%error, attempt, "final commit refused; retrying");
                    let _ = self.consumer.poll(Duration::from_millis(200));
                }
                Err(error) => {
                    tracing::warn!(%error, "final commit failed; unfinished offsets will be redelivered");
                    break;
                }
            }
        }
        let state = lock(&self.shared.state);
        let running: usize = state.busy.values().sum();
        self.shared.publish_in_flight(&state);
        running as u64
    }
}
