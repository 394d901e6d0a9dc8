//! A retry budget shared by every worker and every layer that retries: retries are allowed at a
//! floor rate plus a share of successful calls, so a failing downstream cannot turn every record
//! into a retry storm — in place or through retry tiers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kafka_ops_core::budget::{Budget, BudgetStats, RetryUse};
use kafka_ops_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

use crate::error::RecoveryError;

/// A retry budget's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries always allowed per second, whatever the success rate.
    pub min_retries_per_second: f64,
    /// Retries earned per successful call (0.2: one retry per five successes).
    pub retry_ratio: f64,
    /// How long unspent retries are kept: the balance never exceeds what this span earns.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            min_retries_per_second: 10.0,
            retry_ratio: 0.2,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Balance {
    tokens: f64,
    earned_in_window: f64,
    refilled_at: Instant,
    stats: BudgetStats,
}

/// A token bucket of retries. Cheap to clone; clones share the budget.
///
/// It implements core's [`Budget`], so one budget can be handed to the retry layer (through
/// [`RetryPolicy::with_budget`](crate::RetryPolicy::with_budget)) and to the dead-letter
/// crate's retry tiers: during an outage, in-place retries and tier sends together take no
/// more than the floor rate plus what successes earned, and what the budget refuses goes to
/// the dead-letter topic (or waits, paused) instead of flooding the tiers.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    clock: Arc<dyn Clock>,
    balance: Arc<Mutex<Balance>>,
}

impl RetryBudget {
    /// A budget on the system clock.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, RecoveryError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A budget timed by `clock`, starting full at its floor.
    pub fn with_clock(
        config: RetryBudgetConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RecoveryError> {
        let valid = |v: f64| v.is_finite() && v >= 0.0;
        if !valid(config.min_retries_per_second)
            || !valid(config.retry_ratio)
            || config.window.is_zero()
        {
            return Err(RecoveryError::Config(format!(
                "retry budget needs non-negative rates and a positive window: {config:?}"
            )));
        }
        let now = clock.now();
        let floor = config.min_retries_per_second * config.window.as_secs_f64();
        Ok(RetryBudget {
            config,
            clock,
            balance: Arc::new(Mutex::new(Balance {
                tokens: floor,
                earned_in_window: 0.0,
                refilled_at: now,
                stats: BudgetStats::default(),
            })),
        })
    }

    fn refill(&self, balance: &mut Balance) {
        let now = self.clock.now();
        let elapsed = now
            .saturating_duration_since(balance.refilled_at)
            .as_secs_f64();
        balance.refilled_at = now;
        let window = self.config.window.as_secs_f64();
        // Earnings from successes fade over the window, the floor refills continuously.
        balance.earned_in_window *= (1.0 - elapsed / window).max(0.0);
        let cap = self.config.min_retries_per_second * window + balance.earned_in_window;
        balance.tokens = (balance.tokens + elapsed * self.config.min_retries_per_second).min(cap);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Balance> {
        let mut balance = self.balance.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut balance);
        balance
    }

    /// Records a successful call: it earns `retry_ratio` retries.
    pub fn record_success(&self) {
        let mut balance = self.lock();
        balance.tokens += self.config.retry_ratio;
        balance.earned_in_window += self.config.retry_ratio;
        balance.stats.successes += 1;
    }

    /// Takes one in-place retry from the budget; `false` when it is spent (do not retry now).
    pub fn try_withdraw(&self) -> bool {
        self.try_spend(RetryUse::InPlace)
    }

    /// Retries available now.
    pub fn available(&self) -> f64 {
        self.lock().tokens
    }
}

impl Budget for RetryBudget {
    fn try_spend(&self, use_: RetryUse) -> bool {
        let mut balance = self.lock();
        let granted = balance.tokens >= 1.0;
        if granted {
            balance.tokens -= 1.0;
        } else {
            let exhausted = match use_ {
                RetryUse::InPlace => {
                    metrics::counter!("kafka_ops_retry_budget_exhausted_total", "use" => "in_place")
                }
                _ => metrics::counter!("kafka_ops_retry_budget_exhausted_total", "use" => "tier"),
            };
            exhausted.increment(1);
        }
        balance.stats.count(use_, granted);
        granted
    }

    fn record_success(&self) {
        RetryBudget::record_success(self);
    }

    fn until_available(&self) -> Option<Duration> {
        let balance = self.lock();
        let missing = 1.0 - balance.tokens;
        if missing <= 0.0 {
            return Some(Duration::ZERO);
        }
        let rate = self.config.min_retries_per_second;
        // The floor alone refills up to a window's worth: below one retry it never brings one.
        let floor_cap = rate * self.config.window.as_secs_f64();
        if rate <= 0.0 || floor_cap < 1.0 {
            return None;
        }
        Some(Duration::from_secs_f64(missing / rate))
    }

    fn stats(&self) -> BudgetStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::ManualClock;

    fn budget(min_per_sec: f64, ratio: f64) -> (RetryBudget, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let config = RetryBudgetConfig {
            min_retries_per_second: min_per_sec,
            retry_ratio: ratio,
            window: Duration::from_secs(10),
        };
        (
            RetryBudget::with_clock(config, clock.clone()).unwrap(),
            clock,
        )
    }

    #[test]
    fn the_floor_allows_its_rate_and_no_more() {
        let (budget, clock) = budget(1.0, 0.0);
        // A full window's floor: 10 retries at once, then none.
        assert_eq!((0..20).filter(|_| budget.try_withdraw()).count(), 10);
        clock.advance(Duration::from_secs(3));
        assert_eq!((0..20).filter(|_| budget.try_withdraw()).count(), 3);
    }

    #[test]
    fn successes_earn_retries() {
        let (budget, _) = budget(0.0, 0.25);
        assert!(!budget.try_withdraw());
        for _ in 0..8 {
            budget.record_success();
        }
        // Eight successes at 0.25 earn two retries.
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 2);
    }

    #[test]
    fn a_failing_downstream_cannot_retry_every_record() {
        let (budget, clock) = budget(2.0, 0.1);
        let mut retried = 0;
        // 100 failing records a second for 10 s, nothing succeeding.
        for _ in 0..10 {
            retried += (0..100).filter(|_| budget.try_withdraw()).count();
            clock.advance(Duration::from_secs(1));
        }
        // The initial window's floor (20) plus 2 a second for 9 s.
        assert_eq!(retried, 38);
    }

    #[test]
    fn clones_share_one_budget_and_bad_settings_are_refused() {
        let (budget, _) = budget(0.1, 0.0);
        let other = budget.clone();
        assert!(budget.try_withdraw());
        assert!(!other.try_withdraw());
        let bad = RetryBudgetConfig {
            retry_ratio: f64::NAN,
            ..RetryBudgetConfig::default()
        };
        assert!(RetryBudget::new(bad).is_err());
    }

    #[test]
    fn settings_deserialize_strictly() {
        let config: RetryBudgetConfig =
            serde_json::from_str(r#"{"retry_ratio": 0.5, "window": "30s"}"#).unwrap();
        assert_eq!(config.window, Duration::from_secs(30));
        let error =
            serde_json::from_str::<RetryBudgetConfig>(r#"{"retry_ration": 0.5}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn in_place_retries_and_tier_sends_draw_on_one_budget() {
        let (budget, clock) = budget(1.0, 0.5);
        let shared: Arc<dyn Budget> = Arc::new(budget.clone());
        // Ten retries in the window's floor, taken by either use.
        assert_eq!((0..4).filter(|_| budget.try_withdraw()).count(), 4);
        assert_eq!(
            (0..10).filter(|_| shared.try_spend(RetryUse::Tier)).count(),
            6
        );
        assert!(!budget.try_withdraw());
        assert_eq!(shared.until_available(), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_millis(250));
        assert_eq!(shared.until_available(), Some(Duration::from_millis(750)));
        clock.advance(Duration::from_millis(750));
        assert_eq!(shared.until_available(), Some(Duration::ZERO));
        assert!(shared.try_spend(RetryUse::Tier));
        shared.record_success();
        shared.record_success();
        assert!(budget.try_withdraw(), "two successes at 0.5 earned one");
        assert_eq!(
            shared.stats(),
            BudgetStats {
                in_place_granted: 5,
                in_place_refused: 1,
                tier_granted: 7,
                tier_refused: 4,
                successes: 2,
            }
        );
    }

    #[test]
    fn a_budget_without_a_floor_waits_for_successes() {
        let (earning, clock) = budget(0.0, 1.0);
        assert!(!earning.try_spend(RetryUse::Tier));
        assert_eq!(earning.until_available(), None);
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(earning.until_available(), None);
        earning.record_success();
        assert_eq!(earning.until_available(), Some(Duration::ZERO));
        // A floor too low to fill one retry in a window never brings one either.
        let (tiny, _) = budget(0.05, 0.0);
        while tiny.try_withdraw() {}
        assert_eq!(tiny.until_available(), None);
    }
}
