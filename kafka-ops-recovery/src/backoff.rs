//! Backoff schedules: how long to wait before each retry, and when to give up.
//!
//! A [`BackoffPolicy`] is plain configuration (serde, humantime durations); a [`Backoff`] is one
//! schedule in progress, driven by an injected [`Clock`] (for the elapsed-time limit) and a
//! seedable random source (for jitter), so every schedule is reproducible in tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

use crate::error::RecoveryError;

/// How random a delay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The computed delay exactly.
    #[default]
    None,
    /// Uniform in `[0, delay]` ("full jitter").
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]` ("equal jitter").
    Equal,
    /// Uniform in `[initial, previous × 3]`, capped ("decorrelated jitter"): spreads retries of
    /// many clients without the schedule collapsing to zero.
    Decorrelated,
}

/// A backoff schedule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffPolicy {
    /// The first delay.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Each delay is the previous one times this (1.0: constant).
    pub multiplier: f64,
    /// No delay is longer.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Retries before giving up (`None`: no limit).
    pub max_attempts: Option<u32>,
    /// Give up once this much time passed since the schedule started (`None`: no limit).
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Option<Duration>,
    /// Randomisation.
    pub jitter: Jitter,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy::runbook()
    }
}

impl BackoffPolicy {
    /// The self-healing runbook's policy: 3 attempts, 10 s initial delay, multiplier 1.5, at
    /// most 120 s — waits of 10 s, 15 s and 22.5 s, then escalate.
    pub fn runbook() -> Self {
        BackoffPolicy {
            initial_delay: Duration::from_secs(10),
            multiplier: 1.5,
            max_delay: Duration::from_secs(120),
            max_attempts: Some(3),
            max_elapsed: None,
            jitter: Jitter::None,
        }
    }

    /// The same delay every time, `attempts` times.
    pub fn constant(delay: Duration, attempts: u32) -> Self {
        BackoffPolicy {
            initial_delay: delay,
            multiplier: 1.0,
            max_delay: delay,
            max_attempts: Some(attempts),
            max_elapsed: None,
            jitter: Jitter::None,
        }
    }

    /// Exponential growth from `initial` by `multiplier`, capped at `max_delay`, `attempts`
    /// times.
    pub fn exponential(
        initial: Duration,
        multiplier: f64,
        max_delay: Duration,
        attempts: u32,
    ) -> Self {
        BackoffPolicy {
            initial_delay: initial,
            multiplier,
            max_delay,
            max_attempts: Some(attempts),
            max_elapsed: None,
            jitter: Jitter::None,
        }
    }

    /// The same policy with `jitter`.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same policy giving up after `elapsed`.
    pub fn with_max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = Some(elapsed);
        self
    }

    /// Checks the settings are usable.
    pub fn validate(&self) -> Result<(), RecoveryError> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(RecoveryError::Config(format!(
                "backoff multiplier must be a number ≥ 1, got {}",
                self.multiplier
            )));
        }
        if self.max_delay < self.initial_delay {
            return Err(RecoveryError::Config(format!(
                "backoff max_delay {:?} is shorter than initial_delay {:?}",
                self.max_delay, self.initial_delay
            )));
        }
        Ok(())
    }

    /// The delay before retry number `attempt` (0-based) without jitter or limits.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(i32::try_from(attempt).unwrap_or(i32::MAX));
        let secs = self.initial_delay.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// A schedule on the system clock with a random seed.
    pub fn start(&self) -> Backoff {
        Backoff::new(*self, Arc::new(SystemClock), fastrand::u64(..))
    }
}

/// One schedule in progress: call [`next_delay`](Self::next_delay) after each failure.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    clock: Arc<dyn Clock>,
    rng: fastrand::Rng,
    started: Instant,
    attempt: u32,
    previous: Duration,
}

impl Backoff {
    /// A schedule timed by `clock`, its jitter drawn from a generator seeded with `seed`.
    pub fn new(policy: BackoffPolicy, clock: Arc<dyn Clock>, seed: u64) -> Self {
        let started = clock.now();
        Backoff {
            policy,
            clock,
            rng: fastrand::Rng::with_seed(seed),
            started,
            attempt: 0,
            previous: policy.initial_delay,
        }
    }

    /// Retries handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The wait before the next retry, or `None` when the schedule gives up (attempts used up,
    /// or the wait would end past the elapsed-time limit).
    pub fn next_delay(&mut self) -> Option<Duration> {
        let policy = self.policy;
        if policy.max_attempts.is_some_and(|max| self.attempt >= max) {
            return None;
        }
        let base = policy.base_delay(self.attempt);
        let delay = match policy.jitter {
            Jitter::None => base,
            Jitter::Full => self.uniform(Duration::ZERO, base),
            Jitter::Equal => base / 2 + self.uniform(Duration::ZERO, base / 2),
            Jitter::Decorrelated => {
                let upper = (self.previous * 3).min(policy.max_delay);
                self.uniform(policy.initial_delay.min(upper), upper)
            }
        };
        if let Some(limit) = policy.max_elapsed {
            let elapsed = self.clock.now().saturating_duration_since(self.started);
            if elapsed + delay > limit {
                return None;
            }
        }
        self.attempt += 1;
        self.previous = delay.max(policy.initial_delay);
        Some(delay)
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.started = self.clock.now();
        self.attempt = 0;
        self.previous = self.policy.initial_delay;
    }

    fn uniform(&mut self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return low;
        }
        let span = u64::try_from((high - low).as_nanos()).unwrap_or(u64::MAX);
        low + Duration::from_nanos(self.rng.u64(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::ManualClock;
    use proptest::prelude::*;

    fn schedule(policy: BackoffPolicy) -> (Backoff, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (Backoff::new(policy, clock.clone(), 7), clock)
    }

    fn drain(backoff: &mut Backoff) -> Vec<Duration> {
        std::iter::from_fn(|| backoff.next_delay())
            .take(100)
            .collect()
    }

    #[test]
    fn the_runbook_policy_waits_10_15_22_5_then_escalates() {
        let (mut backoff, _) = schedule(BackoffPolicy::runbook());
        assert_eq!(
            drain(&mut backoff),
            vec![
                Duration::from_secs(10),
                Duration::from_secs(15),
                Duration::from_millis(22_500)
            ]
        );
        assert_eq!(backoff.next_delay(), None);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn constant_and_capped_exponential() {
        let (mut constant, _) = schedule(BackoffPolicy::constant(Duration::from_secs(2), 3));
        assert_eq!(drain(&mut constant), vec![Duration::from_secs(2); 3]);
        let (mut capped, _) = schedule(BackoffPolicy::exponential(
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(5),
            5,
        ));
        let secs: Vec<u64> = drain(&mut capped).iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn the_elapsed_limit_stops_a_schedule_that_would_overrun_it() {
        let policy = BackoffPolicy::constant(Duration::from_secs(10), 100)
            .with_max_elapsed(Duration::from_secs(35));
        let (mut backoff, clock) = schedule(policy);
        let mut waits = 0;
        while let Some(delay) = backoff.next_delay() {
            clock.advance(delay);
            waits += 1;
        }
        // 10 + 10 + 10 = 30 s; a fourth wait would end at 40 s, past 35 s.
        assert_eq!(waits, 3);
    }

    #[test]
    fn the_same_seed_gives_the_same_jittered_schedule() {
        let policy =
            BackoffPolicy::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10), 8)
                .with_jitter(Jitter::Decorrelated);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let a = drain(&mut Backoff::new(policy, clock.clone(), 42));
        let b = drain(&mut Backoff::new(policy, clock.clone(), 42));
        let c = drain(&mut Backoff::new(policy, clock, 43));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let mut policy = BackoffPolicy::runbook();
        policy.multiplier = 0.5;
        assert!(matches!(policy.validate(), Err(RecoveryError::Config(_))));
        let mut policy = BackoffPolicy::runbook();
        policy.max_delay = Duration::from_secs(1);
        assert!(policy.validate().is_err());
        assert!(BackoffPolicy::runbook().validate().is_ok());
    }

    #[test]
    fn settings_deserialize_strictly() {
        let policy: BackoffPolicy = serde_json::from_str(
            r#"{"initial_delay": "10s", "multiplier": 1.5, "max_delay": "120s", "max_attempts": 3}"#,
        )
        .unwrap();
        assert_eq!(policy, BackoffPolicy::runbook());
        // A misspelt field must not fall back to the default in silence.
        let error =
            serde_json::from_str::<BackoffPolicy>(r#"{"initial_dealy": "1s"}"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `initial_dealy`"),
            "{error}"
        );
    }

    proptest! {
        #[test]
        fn jittered_delays_stay_within_their_bounds(
            initial_ms in 1u64..1_000,
            multiplier in 1.0f64..4.0,
            cap_factor in 1u64..50,
            attempts in 1u32..20,
            seed in any::<u64>(),
            jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)],
        ) {
            let initial = Duration::from_millis(initial_ms);
            let cap = initial * u32::try_from(cap_factor).unwrap();
            let policy = BackoffPolicy::exponential(initial, multiplier, cap, attempts).with_jitter(jitter);
            let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
            let delays = drain(&mut Backoff::new(policy, clock, seed));
            prop_assert_eq!(delays.len(), attempts as usize);
            let mut previous = initial;
            for (n, delay) in delays.iter().enumerate() {
                let base = policy.base_delay(u32::try_from(n).unwrap());
                prop_assert!(*delay <= cap, "{:?} above the cap {:?}", delay, cap);
                match jitter {
                    Jitter::None => prop_assert_eq!(*delay, base),
                    Jitter::Full => prop_assert!(*delay <= base),
                    Jitter::Equal => prop_assert!(*delay >= base / 2 && *delay <= base),
                    Jitter::Decorrelated => {
                        prop_assert!(*delay >= initial.min(cap));
                        prop_assert!(*delay <= (previous * 3).min(cap));
                    }
                }
                previous = (*delay).max(initial);
            }
        }

        #[test]
        fn without_jitter_delays_never_shrink(
            initial_ms in 1u64..10_000,
            multiplier in 1.0f64..3.0,
            attempts in 1u32..30,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let policy = BackoffPolicy::exponential(initial, multiplier, initial * 100, attempts);
            let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
            let delays = drain(&mut Backoff::new(policy, clock, 0));
            prop_assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}
