//! A circuit breaker: closed → open when the recent failure (or slow-call) rate crosses its
//! threshold, half-open after the open duration to let a few probe calls through, closed again
//! when they succeed.
//!
//! The state machine is pure over an injected [`Clock`]; [`CircuitBreakerLayer`](crate::layer)
//! wires it to a consumer so an open breaker pauses fetching instead of failing every record.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use kafka_ops_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

use crate::error::RecoveryError;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected until the open duration ends.
    Open,
    /// A limited number of probe calls pass; their outcomes decide.
    HalfOpen,
}

/// Which recent calls the rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last N calls.
    Count(usize),
    /// The calls of the last span of time.
    #[serde(with = "humantime_serde")]
    Time(Duration),
}

/// A circuit breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The calls rates are computed over.
    pub window: SlidingWindow,
    /// Failed calls, percent of the window, at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow calls, percent of the window, at or above which the breaker opens (100: only when
    /// every call is slow).
    pub slow_call_rate_threshold: f64,
    /// A call taking this long or longer is slow.
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Duration,
    /// Calls in the window before any rate is judged (a count window must hold at least this
    /// many).
    pub minimum_calls: usize,
    /// How long the breaker stays open the first time.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Each consecutive opening lasts this many times longer (1.0: always the same).
    pub open_duration_multiplier: f64,
    /// The longest an opening lasts.
    #[serde(with = "humantime_serde")]
    pub max_open_duration: Duration,
    /// Probe calls let through while half-open; all must succeed to close.
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: SlidingWindow::Count(20),
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(5),
            minimum_calls: 10,
            open_duration: Duration::from_secs(30),
            open_duration_multiplier: 1.0,
            max_open_duration: Duration::from_secs(300),
            half_open_calls: 3,
        }
    }
}

impl BreakerConfig {
    /// Checks the settings are usable.
    pub fn validate(&self) -> Result<(), RecoveryError> {
        let percent = |v: f64| v.is_finite() && v > 0.0 && v <= 100.0;
        let problem = if !percent(self.failure_rate_threshold)
            || !percent(self.slow_call_rate_threshold)
        {
            Some("rate thresholds must be percentages in (0, 100]")
        } else if self.minimum_calls == 0 || self.half_open_calls == 0 {
            Some("minimum_calls and half_open_calls must be at least 1")
        } else if matches!(self.window, SlidingWindow::Count(0))
            || self.window == SlidingWindow::Time(Duration::ZERO)
        {
            Some("the sliding window must not be empty")
        } else if matches!(self.window, SlidingWindow::Count(n) if n < self.minimum_calls) {
            // Rates are judged only once the window holds minimum_calls calls: a smaller count
            // window never does, and the breaker would never open.
            Some("a count window must hold at least minimum_calls calls")
        } else if !self.open_duration_multiplier.is_finite() || self.open_duration_multiplier < 1.0
        {
            Some("open_duration_multiplier must be ≥ 1")
        } else if self.max_open_duration < self.open_duration {
            Some("max_open_duration must be at least open_duration")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(RecoveryError::Config(format!("circuit breaker: {problem}"))),
            None => Ok(()),
        }
    }
}

/// How a call through the breaker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It worked (or failed in a way that says nothing about the protected resource).
    Success,
    /// The protected resource failed.
    Failure,
}

/// A state change, as listeners see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The breaker's name.
    pub breaker: String,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why.
    pub reason: String,
    /// Counts the breaker's transitions: listeners are called outside the breaker's lock, so
    /// two changes made on different threads may reach them out of order; the one with the
    /// higher sequence happened last.
    pub sequence: u64,
}

/// Permission for one call; give it back with [`CircuitBreaker::record`].
///
/// A half-open probe dropped without a recorded outcome (its call was cancelled, or never made)
/// is returned to the breaker, so another call can probe in its place.
#[derive(Debug)]
#[must_use = "record the call's outcome with CircuitBreaker::record"]
pub struct Permit {
    started: Instant,
    generation: u64,
    /// For a half-open probe until its outcome is recorded: the breaker to return it to.
    probe: Option<Weak<Mutex<Inner>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // A probe is counted when it is taken: one that never reports would hold its slot for
        // good, and a half-open breaker whose slots are all held refuses every call forever.
        let Some(inner) = self.probe.take().and_then(|inner| inner.upgrade()) else {
            return;
        };
        let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.generation == self.generation && inner.state == BreakerState::HalfOpen {
            inner.probes_started = inner.probes_started.saturating_sub(1);
        }
    }
}

/// A call refused because the breaker is open (or half-open with every probe taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The state that refused.
    pub state: BreakerState,
    /// When trying again makes sense.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    at: Instant,
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    forced_open: bool,
    open_until: Instant,
    consecutive_opens: u32,
    calls: VecDeque<Call>,
    probes_started: usize,
    probes_succeeded: usize,
    /// Bumped on every transition so permits from an earlier state are ignored.
    generation: u64,
}

type Listener = Box<dyn Fn(&StateChange) + Send + Sync>;

/// A circuit breaker. Cheap to share behind an `Arc`.
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    /// Shared with the probe permits, which return themselves when dropped unrecorded.
    inner: Arc<Mutex<Inner>>,
    listeners: Mutex<Vec<Listener>>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("config", &self.config)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker on the system clock.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Result<Self, RecoveryError> {
        Self::with_clock(name, config, Arc::new(SystemClock))
    }

    /// A closed breaker timed by `clock`.
    pub fn with_clock(
        name: impl Into<String>,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RecoveryError> {
        config.validate()?;
        let now = clock.now();
        Ok(CircuitBreaker {
            name: name.into(),
            config,
            clock,
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                forced_open: false,
                open_until: now,
                consecutive_opens: 0,
                calls: VecDeque::new(),
                probes_started: 0,
                probes_succeeded: 0,
                generation: 0,
            })),
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state now (an open breaker whose duration ended reads as half-open).
    pub fn state(&self) -> BreakerState {
        let mut changes = Vec::new();
        let state = {
            let mut inner = self.lock();
            self.half_open_if_due(&mut inner, &mut changes);
            inner.state
        };
        self.notify(changes);
        state
    }

    /// Calls `listener` on every state change (after the change, outside the breaker's lock).
    pub fn on_state_change(&self, listener: impl Fn(&StateChange) + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(listener));
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        let mut changes = Vec::new();
        let result = {
            let mut inner = self.lock();
            self.half_open_if_due(&mut inner, &mut changes);
            let now = self.clock.now();
            match self.rejected(&inner, now) {
                Some(rejected) => Err(rejected),
                None => {
                    let probe = inner.state == BreakerState::HalfOpen;
                    if probe {
                        inner.probes_started += 1;
                    }
                    Ok(Permit {
                        started: now,
                        generation: inner.generation,
                        probe: probe.then(|| Arc::downgrade(&self.inner)),
                    })
                }
            }
        };
        self.notify(changes);
        result
    }

    /// How a call asking now would be refused (`None`: it would be let through), without
    /// taking a permit — so asking cannot use up a half-open probe.
    pub(crate) fn rejection(&self) -> Option<Rejected> {
        let mut changes = Vec::new();
        let rejected = {
            let mut inner = self.lock();
            self.half_open_if_due(&mut inner, &mut changes);
            self.rejected(&inner, self.clock.now())
        };
        self.notify(changes);
        rejected
    }

    fn rejected(&self, inner: &Inner, now: Instant) -> Option<Rejected> {
        match inner.state {
            BreakerState::Closed => None,
            BreakerState::Open => Some(Rejected {
                state: BreakerState::Open,
                retry_after: if inner.forced_open {
                    self.config.open_duration
                } else {
                    inner.open_until.saturating_duration_since(now)
                },
            }),
            BreakerState::HalfOpen if inner.probes_started < self.config.half_open_calls => None,
            BreakerState::HalfOpen => Some(Rejected {
                state: BreakerState::HalfOpen,
                retry_after: (self.config.open_duration / 10).max(Duration::from_millis(10)),
            }),
        }
    }

    /// Records how a permitted call ended.
    pub fn record(&self, mut permit: Permit, outcome: CallOutcome) {
        // Recorded, a probe is not returned when the permit drops.
        let probe = permit.probe.take().is_some();
        let mut changes = Vec::new();
        {
            let mut inner = self.lock();
            let now = self.clock.now();
            if permit.generation != inner.generation {
                // The breaker moved on since this call started; its outcome is stale.
            } else if probe {
                match outcome {
                    CallOutcome::Failure => self.open(
                        &mut inner,
                        "a half-open probe call failed".into(),
                        &mut changes,
                    ),
                    CallOutcome::Success => {
                        inner.probes_succeeded += 1;
                        let succeeded = inner.probes_succeeded;
                        if succeeded >= self.config.half_open_calls {
                            inner.consecutive_opens = 0;
                            self.transition(
                                &mut inner,
                                BreakerState::Closed,
                                format!("{succeeded} probe calls succeeded"),
                                &mut changes,
                            );
                        }
                    }
                }
            } else if inner.state == BreakerState::Closed {
                let slow =
                    now.saturating_duration_since(permit.started) >= self.config.slow_call_duration;
                inner.calls.push_back(Call {
                    at: now,
                    failed: outcome == CallOutcome::Failure,
                    slow,
                });
                self.trim(&mut inner, now);
                if inner.calls.len() >= self.config.minimum_calls {
                    let total = inner.calls.len() as f64;
                    let failed =
                        inner.calls.iter().filter(|c| c.failed).count() as f64 * 100.0 / total;
                    let slow = inner.calls.iter().filter(|c| c.slow).count() as f64 * 100.0 / total;
                    if failed >= self.config.failure_rate_threshold {
                        self.open(
                            &mut inner,
                            format!(
                                "failure rate {failed:.0}% ≥ {}%",
                                self.config.failure_rate_threshold
                            ),
                            &mut changes,
                        );
                    } else if slow >= self.config.slow_call_rate_threshold {
                        self.open(
                            &mut inner,
                            format!(
                                "slow-call rate {slow:.0}% ≥ {}%",
                                self.config.slow_call_rate_threshold
                            ),
                            &mut changes,
                        );
                    }
                }
            }
        }
        self.notify(changes);
    }

    /// Opens the breaker until [`reset`](Self::reset), whatever the calls do.
    pub fn force_open(&self) {
        let mut changes = Vec::new();
        {
            let mut inner = self.lock();
            inner.forced_open = true;
            if inner.state != BreakerState::Open {
                self.transition(
                    &mut inner,
                    BreakerState::Open,
                    "forced open".into(),
                    &mut changes,
                );
            }
        }
        self.notify(changes);
    }

    /// Closes the breaker and forgets its history.
    pub fn reset(&self) {
        let mut changes = Vec::new();
        {
            let mut inner = self.lock();
            inner.forced_open = false;
            inner.consecutive_opens = 0;
            if inner.state != BreakerState::Closed {
                self.transition(
                    &mut inner,
                    BreakerState::Closed,
                    "reset".into(),
                    &mut changes,
                );
            }
            inner.calls.clear();
        }
        self.notify(changes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn trim(&self, inner: &mut Inner, now: Instant) {
        match self.config.window {
            SlidingWindow::Count(n) => {
                while inner.calls.len() > n {
                    inner.calls.pop_front();
                }
            }
            SlidingWindow::Time(span) => {
                while inner
                    .calls
                    .front()
                    .is_some_and(|c| now.saturating_duration_since(c.at) > span)
                {
                    inner.calls.pop_front();
                }
            }
        }
    }

    fn open(&self, inner: &mut Inner, reason: String, changes: &mut Vec<StateChange>) {
        let factor = self
            .config
            .open_duration_multiplier
            .powi(i32::try_from(inner.consecutive_opens).unwrap_or(i32::MAX));
        let secs = self.config.open_duration.as_secs_f64() * factor;
        let duration = if secs.is_finite() && secs < self.config.max_open_duration.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.config.max_open_duration
        };
        inner.consecutive_opens = inner.consecutive_opens.saturating_add(1);
        inner.open_until = self.clock.now() + duration;
        self.transition(
            inner,
            BreakerState::Open,
            format!("{reason}; open for {duration:?}"),
            changes,
        );
    }

    fn half_open_if_due(&self, inner: &mut Inner, changes: &mut Vec<StateChange>) {
        if inner.state == BreakerState::Open
            && !inner.forced_open
            && self.clock.now() >= inner.open_until
        {
            self.transition(
                inner,
                BreakerState::HalfOpen,
                "open duration ended".into(),
                changes,
            );
        }
    }

    fn transition(
        &self,
        inner: &mut Inner,
        to: BreakerState,
        reason: String,
        changes: &mut Vec<StateChange>,
    ) {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.calls.clear();
        inner.probes_started = 0;
        inner.probes_succeeded = 0;
        tracing::info!(breaker = %self.name, ?from, ?to, %reason, "circuit breaker state change");
        metrics::counter!("kafka_ops_breaker_transitions_total", "breaker" => self.name.clone(), "to" => format!("{to:?}")).increment(1);
        changes.push(StateChange {
            breaker: self.name.clone(),
            from,
            to,
            reason,
            sequence: inner.generation,
        });
    }

    fn notify(&self, changes: Vec<StateChange>) {
        if changes.is_empty() {
            return;
        }
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for change in &changes {
            for listener in listeners.iter() {
                listener(change);
            }
        }
    }
}

#[cfg(test)]
mod tests;
