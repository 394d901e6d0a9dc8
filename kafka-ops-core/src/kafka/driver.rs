//! The consumer driver: poll → handle → track → commit, with at-least-once guarantees.
//!
//! A [`Driver`] owns a consumer on a dedicated thread (librdkafka's poll, commit and rebalance
//! calls block) and runs the [`Handler`] for each record, up to [`DriverConfig::max_in_flight`]
//! at once: a handler that finishes without waiting completes right on that thread (no task, no
//! wake-up); one that waits goes on as a tokio task; one that computes for long makes every
//! later handler run as a task. Records may finish out of order; a
//! [`Scheduler`] — pure, on core's clock, tested on its own —
//! decides what runs when and what is safe to commit, so the driver:
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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

use crate::clock::SystemClock;
use crate::error::Error;
use crate::ffi::MessageBatch;
#[cfg(doc)]
use crate::handler::{Disposition, Outcome};
use crate::handler::{Handler, StoppedOn};
use crate::kafka::{commit_by_hand, kafka_error, set_unless_set};
use crate::scheduler::{Ordering, Scheduler};
use crate::types::TopicPartition;

mod handle;
mod poll;
mod prefetch;
mod rebalance;

use crate::kafka::lock;
pub use handle::DriverHandle;
use handle::{Control, ShutdownOnDrop};
use poll::RunLoop;
pub use prefetch::Prefetched;
use rebalance::{DriverContext, LoopEvent, LoopState, Shared};

/// Driver settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverConfig {
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Records taken from librdkafka and not finished yet, at most; beyond it the driver stops
    /// taking records (librdkafka's own bounded queue holds the rest), without pausing. With
    /// unordered processing a partition also holds at most
    /// [`UNORDERED_WINDOW`](crate::scheduler::UNORDERED_WINDOW) times this from its first
    /// unfinished record on, finished or not (what is finished behind an unfinished record
    /// cannot be committed yet).
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

/// Prefetch bound per partition, in KiB, unless the consumer configuration sets
/// `queued.max.messages.kbytes`: one default fetch (`max.partition.fetch.bytes`, 1 MiB) queued
/// while the next is fetched.
const PARTITION_PREFETCH_KBYTES: &str = "1024";

/// How long a partition whose prefetch is full waits before fetching again, unless the
/// consumer configuration sets `fetch.queue.backoff.ms`.
const FULL_PREFETCH_BACKOFF_MS: &str = "10";

/// librdkafka's own default for `fetch.max.bytes` (one fetch request's answer, all partitions
/// of a broker), 50 MiB.
const FETCH_MAX_BYTES: &str = "52428800";

/// The configuration the driver's consumer is created with: `user`'s, with auto-commit, auto
/// offset store and partition EOF events off (the driver commits), and the prefetch bounded per
/// partition unless `user` bounds it.
///
/// The driver splits every assigned partition's queue off the consumer queue, and librdkafka
/// then applies `queued.min.messages` and `queued.max.messages.kbytes` to each partition's
/// queue instead of to the consumer queue: with its defaults (100 000 messages, 64 MiB) a
/// lagging consumer of 100 partitions would prefetch gigabytes. Once a partition's prefetch is
/// full, librdkafka waits `fetch.queue.backoff.ms` (a second by default) before fetching it
/// again, which would leave a partition drained in less time idle. librdkafka also caps
/// `fetch.max.bytes` (a whole fetch request's answer) at `queued.max.messages.kbytes` unless it
/// is set, which a per-partition bound would turn into 1 MiB per request to a broker for all its
/// partitions: it keeps its own default (50 MiB) unless `user` sets it or
/// `receive.message.max.bytes` (which must exceed it).
fn driver_consumer_config(user: &ClientConfig) -> ClientConfig {
    let mut config = user.clone();
    commit_by_hand(&mut config);
    set_unless_set(
        &mut config,
        &[
            ("queued.max.messages.kbytes", PARTITION_PREFETCH_KBYTES),
            ("fetch.queue.backoff.ms", FULL_PREFETCH_BACKOFF_MS),
        ],
    );
    if config.get("fetch.max.bytes").is_none() && config.get("receive.message.max.bytes").is_none()
    {
        config.set("fetch.max.bytes", FETCH_MAX_BYTES);
    }
    config
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
    /// Times a partition was read again from an earlier offset because a record arrived behind
    /// its position (see [`Accepted::Behind`](crate::scheduler::Accepted::Behind)).
    pub rereads: u64,
    /// Records buffered or running now.
    pub in_flight: u64,
    /// Whether the assignment is paused by the handle.
    pub paused: bool,
    /// Partitions currently assigned.
    pub assigned: Vec<TopicPartition>,
    /// What librdkafka has fetched and the driver not taken yet, as of its latest statistics;
    /// `None` until it reports any, which it does only when the consumer configuration sets
    /// `statistics.interval.ms`.
    #[serde(default)]
    pub prefetched: Option<Prefetched>,
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
    /// and auto offset store are turned off because the driver commits). Unless it sets them,
    /// librdkafka's prefetch is bounded to 1 MiB per assigned partition
    /// (`queued.max.messages.kbytes`) and a partition whose prefetch was full is fetched again
    /// after 10 ms (`fetch.queue.backoff.ms`): the driver reads each partition's own queue, and
    /// librdkafka's defaults would let each hold 64 MiB. A fetch request's answer keeps
    /// librdkafka's 50 MiB default (`fetch.max.bytes`), which it would otherwise lower to the
    /// per-partition bound.
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
            state: Mutex::new(LoopState::new(Scheduler::new(
                self.config.ordering,
                Arc::new(SystemClock),
            ))),
            events: Mutex::new(receiver),
            revoke_timeout: self.config.revoke_timeout,
        });
        let mut consumer: BaseConsumer<DriverContext> =
            driver_consumer_config(&self.consumer_config)
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
            queue_order: Vec::new(),
            topics: RefCell::new(HashMap::default()),
            header_names: RefCell::default(),
            batch: MessageBatch::with_capacity(poll::POLL_BATCH),
            pulled: Vec::new(),
            last_commit: Instant::now(),
            next_queue: 0,
            inline_polls: Cell::new(true),
            slow_inline_polls: Cell::new(0),
            inline_poll_count: Cell::new(0),
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
        if let Some((partition, offset, source)) = state.scheduler.take_failure() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_commits_through_the_driver_and_prefetches_a_bounded_amount_per_partition() {
        let mut user = ClientConfig::new();
        user.set("group.id", "billing")
            .set("enable.auto.commit", "true");
        let config = driver_consumer_config(&user);
        assert_eq!(config.get("group.id"), Some("billing"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("enable.partition.eof"), Some("false"));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(config.get("fetch.max.bytes"), Some("52428800"));
        config
            .create::<rdkafka::consumer::BaseConsumer>()
            .expect("librdkafka accepts the configuration");
    }

    #[test]
    fn a_prefetch_bound_the_user_set_is_kept() {
        let mut user = ClientConfig::new();
        user.set("queued.max.messages.kbytes", "65536")
            .set("fetch.queue.backoff.ms", "500")
            .set("fetch.max.bytes", "10485760");
        let config = driver_consumer_config(&user);
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("500"));
        assert_eq!(config.get("fetch.max.bytes"), Some("10485760"));
    }

    #[test]
    fn a_receive_limit_the_user_set_keeps_librdkafkas_own_fetch_limit() {
        let mut user = ClientConfig::new();
        user.set("receive.message.max.bytes", "4194304");
        let config = driver_consumer_config(&user);
        assert_eq!(config.get("fetch.max.bytes"), None);
        config
            .create::<rdkafka::consumer::BaseConsumer>()
            .expect("librdkafka accepts the configuration");
    }
}
