//! Runs probes concurrently, each under its own timeout, and combines their reports.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use kafka_ops_core::handler::panic_message;
use kafka_ops_core::{Clock, SystemClock};
use tokio::sync::watch;

use crate::model::{Check, HealthProbe, HealthReport, ProbeKind, ProbeReport, Status};

struct Entry {
    probe: Arc<dyn HealthProbe>,
    timeout: Duration,
}

/// Runs a set of probes at once, each bounded by a timeout: a hung probe becomes "unhealthy:
/// timed out after …", never a hung checker.
///
/// Every result is logged through `tracing` and exported through `metrics`: the gauge
/// `kafka_ops_health_status{probe}` (0 healthy, 1 degraded, 2 unhealthy) and the histogram
/// `kafka_ops_health_probe_duration_seconds{probe}`.
pub struct HealthChecker {
    probes: Vec<Entry>,
    default_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field(
                "probes",
                &self
                    .probes
                    .iter()
                    .map(|e| e.probe.name())
                    .collect::<Vec<_>>(),
            )
            .field("default_timeout", &self.default_timeout)
            .finish()
    }
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecker {
    /// The timeout a probe gets unless it is added with its own.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A checker without probes.
    pub fn new() -> Self {
        HealthChecker {
            probes: Vec::new(),
            default_timeout: Self::DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the timeout of probes added without their own (later additions included).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        for entry in &mut self.probes {
            if entry.timeout == self.default_timeout {
                entry.timeout = timeout;
            }
        }
        self.default_timeout = timeout;
        self
    }

    /// Stamps reports with this clock's wall time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a probe under the default timeout.
    pub fn probe(self, probe: impl HealthProbe + 'static) -> Self {
        let timeout = self.default_timeout;
        self.probe_arc(Arc::new(probe), timeout)
    }

    /// Adds a probe under its own timeout.
    pub fn probe_with_timeout(self, probe: impl HealthProbe + 'static, timeout: Duration) -> Self {
        self.probe_arc(Arc::new(probe), timeout)
    }

    /// Adds a shared probe under `timeout`.
    pub fn probe_arc(mut self, probe: Arc<dyn HealthProbe>, timeout: Duration) -> Self {
        self.probes.push(Entry { probe, timeout });
        self
    }

    /// The number of probes.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    /// Whether there are no probes.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Runs every probe concurrently and combines the reports.
    pub async fn check(&self) -> HealthReport {
        self.check_only(|_| true).await
    }

    /// Runs, concurrently, only the probes of the kinds `wanted` accepts and combines their
    /// reports: a liveness endpoint asked on demand must not wait for (or write through)
    /// readiness and informational probes.
    pub async fn check_only(&self, wanted: impl Fn(ProbeKind) -> bool) -> HealthReport {
        let reports = join_all(
            self.probes
                .iter()
                .filter(|entry| wanted(entry.probe.kind()))
                .map(|entry| self.run(entry)),
        )
        .await;
        HealthReport::from_probes(reports, self.clock.wall())
    }

    async fn run(&self, entry: &Entry) -> ProbeReport {
        let probe = &entry.probe;
        // tokio's clock: the same as the system's, except in tests that pause time.
        let started = tokio::time::Instant::now();
        // A panicking probe is unhealthy, not the end of the checker: unwinding through
        // `check` would end a spawned checker's task and leave its last report standing.
        let checked = AssertUnwindSafe(probe.check()).catch_unwind();
        let check = match tokio::time::timeout(entry.timeout, checked).await {
            Ok(Ok(Ok(check))) => check,
            Ok(Ok(Err(error))) => Check::unhealthy(format!("check failed: {error}")),
            Ok(Err(panic)) => {
                Check::unhealthy(format!("probe panicked: {}", panic_message(panic.as_ref())))
            }
            Err(_) => Check::unhealthy(format!("timed out after {:?}", entry.timeout)),
        };
        let latency = started.elapsed();
        let name = probe.name().to_string();
        metrics::gauge!("kafka_ops_health_status", "probe" => name.clone())
            .set(check.status.gauge_value());
        metrics::histogram!("kafka_ops_health_probe_duration_seconds", "probe" => name.clone())
            .record(latency.as_secs_f64());
        match check.status {
            Status::Healthy => {
                tracing::debug!(probe = %name, severity = %check.severity, ?latency, message = %check.message, "health probe healthy")
            }
            Status::Degraded => {
                tracing::warn!(probe = %name, severity = %check.severity, ?latency, message = %check.message, "health probe degraded")
            }
            Status::Unhealthy => {
                tracing::error!(probe = %name, severity = %check.severity, ?latency, message = %check.message, "health probe unhealthy")
            }
        }
        ProbeReport {
            name,
            kind: probe.kind(),
            status: check.status,
            severity: check.severity,
            message: check.message,
            details: check.details,
            extent: check.extent,
            latency,
            checked_at: self.clock.wall(),
        }
    }

    /// Runs the checker every `interval` on the current tokio runtime and keeps the last report,
    /// so frequent readers (HTTP probes) never wait for the cluster. The task stops when the
    /// returned [`CachedHealth`] and all its clones are dropped.
    pub fn spawn(self, interval: Duration) -> CachedHealth {
        let (sender, receiver) = watch::channel(None);
        let checker = Arc::new(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let report = Arc::new(checker.check().await);
                if sender.send(Some(report)).is_err() {
                    break;
                }
            }
        });
        CachedHealth { receiver }
    }
}

/// The last report of a checker running on an interval (see [`HealthChecker::spawn`]).
#[derive(Debug, Clone)]
pub struct CachedHealth {
    receiver: watch::Receiver<Option<Arc<HealthReport>>>,
}

impl CachedHealth {
    /// The last report, if a check finished yet.
    pub fn latest(&self) -> Option<Arc<HealthReport>> {
        self.receiver.borrow().clone()
    }

    /// The last report, waiting for the first check to finish if none has yet. `None` only when
    /// the checker task is gone.
    pub async fn current(&self) -> Option<Arc<HealthReport>> {
        let mut receiver = self.receiver.clone();
        let result = receiver.wait_for(Option::is_some).await;
        result.ok().and_then(|report| report.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HealthError;
    use crate::model::ProbeKind;
    use async_trait::async_trait;
    use kafka_ops_core::Severity;

    struct Fixed {
        name: &'static str,
        kind: ProbeKind,
        delay: Duration,
        result: fn() -> Result<Check, HealthError>,
    }

    #[async_trait]
    impl HealthProbe for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> ProbeKind {
            self.kind
        }
        async fn check(&self) -> Result<Check, HealthError> {
            tokio::time::sleep(self.delay).await;
            (self.result)()
        }
    }

    fn fixed(
        name: &'static str,
        kind: ProbeKind,
        delay_ms: u64,
        result: fn() -> Result<Check, HealthError>,
    ) -> Fixed {
        Fixed {
            name,
            kind,
            delay: Duration::from_millis(delay_ms),
            result,
        }
    }

    #[tokio::test]
    async fn a_panicking_probe_is_unhealthy_and_the_checker_goes_on() {
        let checker = HealthChecker::new()
            .probe(fixed("fine", ProbeKind::Liveness, 0, || {
                Ok(Check::healthy("fine"))
            }))
            .probe(fixed("broken", ProbeKind::Readiness, 0, || {
                panic!("index out of bounds")
            }));
        let report = checker.check().await;
        let broken = report.probe("broken").unwrap();
        assert_eq!(broken.status, Status::Unhealthy);
        assert_eq!(broken.message, "probe panicked: index out of bounds");
        assert_eq!(report.probe("fine").unwrap().status, Status::Healthy);
        // A spawned checker keeps reporting after the panic.
        let cached = checker.spawn(Duration::from_millis(10));
        let first = cached.current().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let later = cached.latest().unwrap();
        assert!(later.checked_at >= first.checked_at);
        assert!(!Arc::ptr_eq(&first, &later), "a new report was made");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_times_out_without_holding_the_others() {
        let checker = HealthChecker::new()
            .with_default_timeout(Duration::from_secs(2))
            .probe(fixed("fast", ProbeKind::Liveness, 10, || {
                Ok(Check::healthy("fine"))
            }))
            .probe(fixed("hung", ProbeKind::Readiness, 3_600_000, || {
                Ok(Check::healthy("never"))
            }));
        let started = tokio::time::Instant::now();
        let report = checker.check().await;
        // Concurrent: the whole check took the longest timeout, not the sum.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let hung = report.probe("hung").unwrap();
        assert_eq!(hung.status, Status::Unhealthy);
        assert_eq!(hung.severity, Severity::Critical);
        assert_eq!(hung.message, "timed out after 2s");
        assert_eq!(report.probe("fast").unwrap().status, Status::Healthy);
        assert_eq!(report.live, Status::Healthy);
        assert_eq!(report.ready, Status::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_run_concurrently_under_their_own_timeouts() {
        let checker = HealthChecker::new()
            .probe_with_timeout(
                fixed("a", ProbeKind::Readiness, 300, || Ok(Check::healthy("a"))),
                Duration::from_millis(100),
            )
            .probe(fixed("b", ProbeKind::Readiness, 300, || {
                Ok(Check::degraded("b"))
            }))
            .probe(fixed("c", ProbeKind::Readiness, 300, || {
                Ok(Check::healthy("c"))
            }));
        let started = tokio::time::Instant::now();
        let report = checker.check().await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(report.probe("a").unwrap().message, "timed out after 100ms");
        assert_eq!(report.probe("b").unwrap().status, Status::Degraded);
        assert_eq!(report.probe("c").unwrap().status, Status::Healthy);
        assert_eq!(
            report.probe("b").unwrap().latency,
            Duration::from_millis(300)
        );
    }

    #[tokio::test]
    async fn a_failing_check_is_unhealthy_with_its_error() {
        let report = HealthChecker::new()
            .probe(fixed("broken", ProbeKind::Readiness, 0, || {
                Err(HealthError::Config("no brokers configured".into()))
            }))
            .check()
            .await;
        let broken = report.probe("broken").unwrap();
        assert_eq!(broken.status, Status::Unhealthy);
        assert_eq!(
            broken.message,
            "check failed: invalid health configuration: no brokers configured"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_checker_caches_the_last_report() {
        let cached = HealthChecker::new()
            .probe(fixed("slow", ProbeKind::Liveness, 500, || {
                Ok(Check::healthy("ok"))
            }))
            .spawn(Duration::from_secs(10));
        assert!(cached.latest().is_none());
        let first = cached.current().await.unwrap();
        assert_eq!(first.status, Status::Healthy);
        // Reading again does not run the probes again.
        let again = cached.latest().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
}
