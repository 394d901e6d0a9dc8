//! A group member that only holds its assignment, for tests of what brokers say about groups
//! with members.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::error::Error;
use crate::kafka::kafka_error;

/// A consumer subscribed on its own thread, polling (and dropping what it reads, committing
/// nothing) until it is dropped, when it leaves the group.
#[derive(Debug)]
pub struct Subscriber {
    stop: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    assigned: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Joins the group `consumer_config` names, subscribed to `topic`.
    pub fn join(consumer_config: &ClientConfig, topic: &str) -> Result<Self, Error> {
        let consumer: BaseConsumer = consumer_config
            .create()
            .map_err(|e| kafka_error("create subscriber", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error("subscribe", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(AtomicUsize::new(0));
        let (flag, ice, count) = (stop.clone(), frozen.clone(), assigned.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                if ice.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let _ = consumer.poll(Duration::from_millis(100));
                if let Ok(assignment) = consumer.assignment() {
                    count.store(assignment.count(), Ordering::SeqCst);
                }
            }
            consumer.unsubscribe();
            let _ = consumer.poll(Duration::from_millis(100));
        });
        Ok(Subscriber {
            stop,
            frozen,
            assigned,
            thread: Some(thread),
        })
    }

    /// Stops (or resumes) polling: a frozen member runs no rebalance callbacks, so it neither
    /// gives up nor takes partitions until it thaws (librdkafka still heartbeats for it).
    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    /// How many partitions it owns now.
    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::SeqCst)
    }

    /// Waits until it owns at least one partition.
    pub fn wait_assigned(&self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        while self.assigned() == 0 {
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    operation: "wait for an assignment",
                    timeout: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
