//! A retry budget shared by every layer that retries.
//!
//! In-place retries (kafka-ops-recovery's retry layer) and retry-tier sends (kafka-ops-dlq's
//! retry topics) are both retries against a downstream that failed. During an outage, a budget
//! on the first alone moves the flood to the second: every transient failure becomes a tier
//! record, to be retried again later. One [`Budget`], handed to both, bounds them together; a
//! layer whose retry the budget refuses gives the record up (to the dead-letter topic, or it
//! holds it while the consumer pauses), and the budget's [`BudgetStats`] say how often.
//!
//! The trait is here because the crates that spend from it do not depend on each other;
//! kafka-ops-recovery's `RetryBudget` implements it (retries at a floor rate plus a share of
//! successes, timed by an injected [`Clock`](crate::Clock)).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a retry is spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RetryUse {
    /// Running the record again where it failed.
    InPlace,
    /// Writing the record to a retry tier, to be run again after the tier's delay.
    Tier,
}

impl RetryUse {
    /// Lower-case name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryUse::InPlace => "in_place",
            RetryUse::Tier => "tier",
        }
    }
}

/// How a budget was used since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStats {
    /// In-place retries granted.
    pub in_place_granted: u64,
    /// In-place retries refused.
    pub in_place_refused: u64,
    /// Retry-tier sends granted.
    pub tier_granted: u64,
    /// Retry-tier sends refused.
    pub tier_refused: u64,
    /// Successes recorded.
    pub successes: u64,
}

impl BudgetStats {
    /// Counts one request for a retry of `use_`.
    pub fn count(&mut self, use_: RetryUse, granted: bool) {
        let counter = match (use_, granted) {
            (RetryUse::InPlace, true) => &mut self.in_place_granted,
            (RetryUse::InPlace, false) => &mut self.in_place_refused,
            (RetryUse::Tier, true) => &mut self.tier_granted,
            (RetryUse::Tier, false) => &mut self.tier_refused,
        };
        *counter += 1;
    }

    /// Retries granted, of any use.
    pub fn granted(&self) -> u64 {
        self.in_place_granted + self.tier_granted
    }

    /// Retries refused, of any use.
    pub fn refused(&self) -> u64 {
        self.in_place_refused + self.tier_refused
    }
}

/// A budget of retries shared by every layer that retries. Implementations are pure: they
/// hold their state and read time from an injected [`Clock`](crate::Clock), so their answers
/// are exact under a manual clock.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Budget: Send + Sync + fmt::Debug {
    /// Takes one retry for `use_`; `false` when the budget is spent (do not retry now).
    fn try_spend(&self, use_: RetryUse) -> bool;

    /// Records a record handled successfully (budgets that earn retries from successes do).
    fn record_success(&self);

    /// How long until one retry is available, when nothing else changes: zero when one is
    /// available now, `None` when only successes can bring one.
    fn until_available(&self) -> Option<Duration>;

    /// How the budget was used so far.
    fn stats(&self) -> BudgetStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_each_use_apart() {
        let mut stats = BudgetStats::default();
        stats.count(RetryUse::InPlace, true);
        stats.count(RetryUse::InPlace, true);
        stats.count(RetryUse::InPlace, false);
        stats.count(RetryUse::Tier, true);
        stats.count(RetryUse::Tier, false);
        stats.count(RetryUse::Tier, false);
        assert_eq!(
            stats,
            BudgetStats {
                in_place_granted: 2,
                in_place_refused: 1,
                tier_granted: 1,
                tier_refused: 2,
                successes: 0,
            }
        );
        assert_eq!((stats.granted(), stats.refused()), (3, 3));
        assert_eq!(RetryUse::Tier.as_str(), "tier");
    }
}
