//! The driver's shared controls and counters, and the handle that reads and sets them from any
//! thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{DriverStats, Prefetched};
use crate::handler::{ConsumerControl, Outcome, StoppedOn};
use crate::kafka::lock;
use crate::scheduler::Finished;
use crate::types::TopicPartition;

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) polled: AtomicU64,
    pub(super) processed: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) commit_failures: AtomicU64,
    pub(super) rebalances: AtomicU64,
    pub(super) poll_errors: AtomicU64,
    pub(super) redelivered: AtomicU64,
    pub(super) rereads: AtomicU64,
    pub(super) in_flight: AtomicU64,
    /// Milliseconds since `Control::started` of the last poll, plus one (0 = never).
    pub(super) last_poll: AtomicU64,
}

impl Counters {
    /// Counts a finished record, here and in the `kafka_ops_records_total` metric.
    pub(super) fn record(&self, finished: Finished) {
        match finished {
            Finished::Done(outcome) => {
                bump(match outcome {
                    Outcome::Duplicate => &self.duplicates,
                    Outcome::Retried => &self.retried,
                    Outcome::DeadLettered => &self.dead_lettered,
                    Outcome::Skipped => &self.skipped,
                    Outcome::Processed => &self.processed,
                });
                count_outcome(outcome);
            }
            Finished::Redelivered { .. } => bump(&self.redelivered),
            Finished::Failed => {
                bump(&self.failed);
                metrics::counter!("kafka_ops_records_total", "outcome" => "failed").increment(1);
            }
        }
    }
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

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, AtomicOrdering::Relaxed);
}

pub(super) struct Control {
    pub(super) started: Instant,
    pub(super) shutdown: AtomicBool,
    pub(super) user_paused: AtomicBool,
    pub(super) paused: AtomicBool,
    pub(super) running: AtomicBool,
    pub(super) counters: Counters,
    pub(super) assigned: Mutex<Vec<TopicPartition>>,
    pub(super) stopped_on: Mutex<Option<StoppedOn>>,
    /// From librdkafka's latest statistics.
    pub(super) prefetched: Mutex<Option<Prefetched>>,
}

/// Controls a running [`Driver`](super::Driver) from any thread or task. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    pub(super) control: Arc<Control>,
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
    /// A handle for a driver not built yet (see [`Driver::with_handle`](super::Driver::with_handle)): layers that must pause
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
                prefetched: Mutex::new(None),
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
            rereads: get(&c.rereads),
            in_flight: get(&c.in_flight),
            paused: self.is_paused(),
            assigned: lock(&self.control.assigned).clone(),
            prefetched: lock(&self.control.prefetched).clone(),
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

/// Stops the poll thread when the future awaiting it is dropped: otherwise the thread would run
/// on unobserved, and a runtime being dropped would wait for it forever.
pub(super) struct ShutdownOnDrop(pub(super) Option<Arc<Control>>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(control) = self.0.take() {
            control.shutdown.store(true, AtomicOrdering::SeqCst);
        }
    }
}
