//! Consumer liveness from the poll loop itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kafka_ops_core::kafka::driver::DriverHandle;
use rdkafka::ClientConfig;

use crate::error::HealthError;
use crate::model::{Check, HealthProbe, ProbeKind};

/// What a poll loop tells about itself. Cheap to read: the driver updates it as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopVitals {
    /// Whether the loop runs.
    pub running: bool,
    /// When it last polled the consumer.
    pub last_poll: Option<Instant>,
    /// Rebalances (assignments and revocations) seen so far.
    pub rebalances: u64,
    /// Successful commits so far.
    pub commits: u64,
    /// Failed commits so far.
    pub commit_failures: u64,
    /// Partitions assigned now.
    pub assigned: usize,
}

/// A poll loop whose vitals a liveness probe reads; implemented by core's [`DriverHandle`].
pub trait LoopVitalsSource: Send + Sync {
    /// The vitals now.
    fn vitals(&self) -> LoopVitals;
}

impl LoopVitalsSource for DriverHandle {
    fn vitals(&self) -> LoopVitals {
        let stats = self.stats();
        LoopVitals {
            running: self.is_running(),
            last_poll: self.last_poll(),
            rebalances: stats.rebalances,
            commits: stats.commits,
            commit_failures: stats.commit_failures,
            assigned: stats.assigned.len(),
        }
    }
}

/// Liveness of a consumer's poll loop: unhealthy when it is not running or has not polled within
/// the bound (by default librdkafka's `max.poll.interval.ms`, after which the group evicts the
/// member anyway); degraded on a rebalance storm (more rebalances within a window than allowed)
/// or on repeated commit failures with no successful commit between them.
pub struct ConsumerLivenessProbe {
    source: Arc<dyn LoopVitalsSource>,
    max_poll_gap: Duration,
    storm_rebalances: u64,
    storm_window: Duration,
    commit_failure_limit: u64,
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    /// (when, rebalances so far) samples within the storm window.
    rebalances: VecDeque<(Instant, u64)>,
    /// Commit failures since the last check that saw a successful commit.
    failures_since_success: u64,
    last: Option<LoopVitals>,
}

impl std::fmt::Debug for ConsumerLivenessProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLivenessProbe")
            .field("max_poll_gap", &self.max_poll_gap)
            .field("storm_rebalances", &self.storm_rebalances)
            .field("storm_window", &self.storm_window)
            .field("commit_failure_limit", &self.commit_failure_limit)
            .finish()
    }
}

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_millis(300_000);

impl ConsumerLivenessProbe {
    /// A liveness probe of `source` with librdkafka's default poll bound (300 s), at most 10
    /// rebalances in 5 minutes, and at most 3 commit failures in a row.
    pub fn new(source: Arc<dyn LoopVitalsSource>) -> Self {
        ConsumerLivenessProbe {
            source,
            max_poll_gap: DEFAULT_MAX_POLL_INTERVAL,
            storm_rebalances: 10,
            storm_window: Duration::from_secs(300),
            commit_failure_limit: 3,
            history: Mutex::new(History::default()),
        }
    }

    /// Takes the poll bound from the consumer's `max.poll.interval.ms` (librdkafka's default
    /// when it is unset).
    pub fn for_consumer(
        source: Arc<dyn LoopVitalsSource>,
        consumer_config: &ClientConfig,
    ) -> Result<Self, HealthError> {
        let gap = match consumer_config.get("max.poll.interval.ms") {
            None => DEFAULT_MAX_POLL_INTERVAL,
            Some(value) => value
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    HealthError::Config(format!("max.poll.interval.ms is not a number: {value:?}"))
                })?,
        };
        Ok(Self::new(source).with_max_poll_gap(gap))
    }

    /// Unhealthy when the loop has not polled for longer than `gap`.
    pub fn with_max_poll_gap(mut self, gap: Duration) -> Self {
        self.max_poll_gap = gap;
        self
    }

    /// Degraded when more than `rebalances` happen within `window`.
    pub fn with_rebalance_storm(mut self, rebalances: u64, window: Duration) -> Self {
        self.storm_rebalances = rebalances;
        self.storm_window = window;
        self
    }

    /// Degraded after `failures` commit failures with no successful commit between them.
    pub fn with_commit_failure_limit(mut self, failures: u64) -> Self {
        self.commit_failure_limit = failures;
        self
    }
}

#[async_trait]
impl HealthProbe for ConsumerLivenessProbe {
    fn name(&self) -> &str {
        "consumer_liveness"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Liveness
    }

    async fn check(&self) -> Result<Check, HealthError> {
        let vitals = self.source.vitals();
        let now = Instant::now();
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.rebalances.push_back((now, vitals.rebalances));
        while history
            .rebalances
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.storm_window)
        {
            history.rebalances.pop_front();
        }
        let in_window = history
            .rebalances
            .front()
            .map_or(0, |(_, first)| vitals.rebalances.saturating_sub(*first));
        let previous = history
            .last
            .as_ref()
            .map(|last| (last.commits, last.commit_failures));
        history.failures_since_success = match previous {
            None => 0,
            Some((commits, _)) if vitals.commits > commits => 0,
            Some((_, failures)) => {
                history.failures_since_success + vitals.commit_failures.saturating_sub(failures)
            }
        };
        let failures = history.failures_since_success;
        history.last = Some(vitals.clone());
        drop(history);

        let since_poll = vitals.last_poll.map(|at| now.saturating_duration_since(at));
        let check = if !vitals.running {
            Check::unhealthy("the poll loop is not running")
        } else if since_poll.is_none_or(|gap| gap > self.max_poll_gap) {
            Check::unhealthy(match since_poll {
                Some(gap) => format!(
                    "the poll loop has not polled for {gap:?} (bound {:?})",
                    self.max_poll_gap
                ),
                None => "the poll loop has never polled".to_string(),
            })
        } else if in_window > self.storm_rebalances {
            Check::degraded(format!(
                "rebalance storm: {in_window} rebalances within {:?}",
                self.storm_window
            ))
        } else if failures >= self.commit_failure_limit {
            Check::degraded(format!("{failures} commit failures in a row"))
        } else {
            Check::healthy(format!("polling; {} partitions assigned", vitals.assigned))
        };
        Ok(check
            .with_detail("running", vitals.running)
            .with_detail(
                "since_last_poll_ms",
                since_poll.map(|d| d.as_millis() as u64),
            )
            .with_detail("rebalances", vitals.rebalances)
            .with_detail("rebalances_in_window", in_window)
            .with_detail("commit_failures", vitals.commit_failures)
            .with_detail("commit_failures_in_a_row", failures)
            .with_detail("assigned_partitions", vitals.assigned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    struct Scripted(Mutex<LoopVitals>);

    impl LoopVitalsSource for Scripted {
        fn vitals(&self) -> LoopVitals {
            self.0.lock().unwrap().clone()
        }
    }

    fn vitals() -> LoopVitals {
        LoopVitals {
            running: true,
            last_poll: Some(Instant::now()),
            rebalances: 1,
            commits: 0,
            commit_failures: 0,
            assigned: 4,
        }
    }

    #[tokio::test]
    async fn healthy_degraded_and_unhealthy_paths() {
        let source = Arc::new(Scripted(Mutex::new(vitals())));
        let probe = ConsumerLivenessProbe::new(source.clone())
            .with_max_poll_gap(Duration::from_secs(10))
            .with_rebalance_storm(3, Duration::from_secs(60))
            .with_commit_failure_limit(2);
        assert_eq!(probe.check().await.unwrap().status, Status::Healthy);

        // Two failed commits and no success between: degraded.
        {
            let mut v = source.0.lock().unwrap();
            v.commit_failures = 2;
            v.last_poll = Some(Instant::now());
        }
        let check = probe.check().await.unwrap();
        assert_eq!(check.status, Status::Degraded, "{check:?}");
        assert_eq!(check.message, "2 commit failures in a row");

        // A successful commit clears it.
        source.0.lock().unwrap().commits = 1;
        assert_eq!(probe.check().await.unwrap().status, Status::Healthy);

        // Five rebalances within the window: a storm.
        source.0.lock().unwrap().rebalances = 6;
        let check = probe.check().await.unwrap();
        assert_eq!(check.status, Status::Degraded);
        assert!(
            check.message.starts_with("rebalance storm: 5 rebalances"),
            "{check:?}"
        );

        // A poll loop that stopped polling is unhealthy, whatever else.
        source.0.lock().unwrap().last_poll = Some(Instant::now() - Duration::from_secs(11));
        let check = probe.check().await.unwrap();
        assert_eq!(check.status, Status::Unhealthy);
        assert!(check.message.contains("has not polled for"), "{check:?}");

        source.0.lock().unwrap().running = false;
        assert_eq!(
            probe.check().await.unwrap().message,
            "the poll loop is not running"
        );
    }

    #[test]
    fn the_bound_comes_from_max_poll_interval() {
        let source: Arc<dyn LoopVitalsSource> = Arc::new(Scripted(Mutex::new(vitals())));
        let mut config = ClientConfig::new();
        let probe = ConsumerLivenessProbe::for_consumer(source.clone(), &config).unwrap();
        assert_eq!(probe.max_poll_gap, DEFAULT_MAX_POLL_INTERVAL);
        config.set("max.poll.interval.ms", "45000");
        let probe = ConsumerLivenessProbe::for_consumer(source.clone(), &config).unwrap();
        assert_eq!(probe.max_poll_gap, Duration::from_secs(45));
        config.set("max.poll.interval.ms", "soon");
        assert!(matches!(
            ConsumerLivenessProbe::for_consumer(source, &config),
            Err(HealthError::Config(_))
        ));
    }
}
