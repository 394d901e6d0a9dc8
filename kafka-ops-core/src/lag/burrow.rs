//! Burrow-style evaluation of a partition's recent commits.
//!
//! A single lag number cannot tell a busy consumer that keeps up from a dead one. Burrow looks
//! at a sliding window of the last N commits of each partition and asks, in order:
//!
//! 1. current lag ≤ allowed → **OK** (a consumer that is caught up is never in error);
//! 2. time since the last commit > the window's span, unless a recent end-offset sample shows the
//!    consumer was caught up → **STOP**;
//! 3. the committed offset went down somewhere in the window → **REWIND**;
//! 4. some commit in the window had lag ≤ allowed → **OK**;
//! 5. every commit in the window is at the same offset → **STALL**;
//! 6. the lag never decreased between consecutive commits → **WARN** (falling behind);
//! 7. otherwise → **OK** (lag is high but the consumer is catching up).
//!
//! The window is only judged once it holds at least `min_complete` of its size; until then the
//! partition is OK with [`Rule::IncompleteWindow`]. Every result names the rule that fired.
//!
//! ```
//! use kafka_ops_core::lag::burrow::{evaluate_partition, BurrowConfig, CommitSample, PartitionStatus, Rule};
//! use kafka_ops_core::{Offset, Timestamp};
//!
//! let config = BurrowConfig { window: 3, min_complete: 1.0, allowed_lag: 0 };
//! let commit = |offset, lag, at| CommitSample {
//!     offset: Offset::new(offset).unwrap(), lag: Some(lag), at: Timestamp::from_millis(at),
//! };
//! // Committing, but the lag only grows: WARN.
//! let window = [commit(10, 5, 0), commit(20, 8, 1_000), commit(30, 12, 2_000)];
//! let result = evaluate_partition(&window, Some(12), &[], Timestamp::from_millis(2_500), &config);
//! assert_eq!((result.status, result.rule), (PartitionStatus::Warning, Rule::LagNotDecreasing));
//! ```

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::types::{Offset, Timestamp};

/// How partitions are judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BurrowConfig {
    /// Number of commits in the window (Burrow's `intervals`, default 10).
    pub window: usize,
    /// Fraction of the window that must be filled before judging (0.0–1.0, default 0.5).
    pub min_complete: f64,
    /// Lag at or below which a partition counts as caught up (Burrow uses 0; default 0).
    pub allowed_lag: u64,
}

impl Default for BurrowConfig {
    fn default() -> Self {
        BurrowConfig {
            window: 10,
            min_complete: 0.5,
            allowed_lag: 0,
        }
    }
}

impl BurrowConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), Error> {
        if self.window < 2 {
            return Err(Error::Config(format!(
                "burrow window must hold at least 2 commits, got {}",
                self.window
            )));
        }
        if !(0.0..=1.0).contains(&self.min_complete) {
            return Err(Error::Config(format!(
                "burrow min_complete must be within 0.0..=1.0, got {}",
                self.min_complete
            )));
        }
        Ok(())
    }
}

/// One commit of a partition, as the evaluator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSample {
    /// The committed offset.
    pub offset: Offset,
    /// The lag at the time of the commit, when known.
    pub lag: Option<u64>,
    /// When the commit was made (or first observed).
    pub at: Timestamp,
}

/// A partition's status, with Burrow's names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum PartitionStatus {
    /// Keeping up, or catching up.
    #[default]
    Ok,
    /// Committing, but falling further behind.
    #[serde(rename = "WARN")]
    Warning,
    /// Committing the same offset over and over while lag exists.
    Stall,
    /// Stopped committing while lag exists.
    Stop,
    /// The committed offset moved backwards.
    Rewind,
}

impl PartitionStatus {
    /// Burrow's name: OK, WARN, STALL, STOP, REWIND.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionStatus::Ok => "OK",
            PartitionStatus::Warning => "WARN",
            PartitionStatus::Stall => "STALL",
            PartitionStatus::Stop => "STOP",
            PartitionStatus::Rewind => "REWIND",
        }
    }

    /// Whether Burrow counts this as an error (STOP, STALL, REWIND).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            PartitionStatus::Stall | PartitionStatus::Stop | PartitionStatus::Rewind
        )
    }
}

/// The rule that decided a partition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// No commits recorded yet.
    NoCommits,
    /// Too few commits in the window to judge.
    IncompleteWindow,
    /// The current lag is unknown (end offset unreadable or no commit).
    LagUnknown,
    /// Rule 1: current lag ≤ allowed.
    CurrentLagWithinAllowed,
    /// Rule 2: no commit for longer than the window spans.
    Stopped,
    /// Rule 3: the committed offset went down.
    Rewound,
    /// Rule 4: some commit in the window was caught up.
    LagWithinAllowedInWindow,
    /// Rule 5: every commit is at the same offset.
    Stalled,
    /// Rule 6: lag never decreased between commits.
    LagNotDecreasing,
    /// Rule 7: lag is high but decreasing somewhere.
    CatchingUp,
}

/// A partition's evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartitionEvaluation {
    /// The status.
    pub status: PartitionStatus,
    /// The rule that decided it.
    pub rule: Rule,
    /// How full the window is (0.0–1.0).
    pub complete: f64,
    /// The current lag used.
    pub current_lag: Option<u64>,
}

/// Evaluates one partition.
///
/// - `window`: the last commits, oldest first (only the newest `config.window` are used);
/// - `current_lag`: the lag now (end offset now − last commit);
/// - `recent_end_offsets`: recent end-offset samples, used by the STOP rule to see that the
///   consumer was caught up a moment ago (a sample counts when it lies between the last committed
///   offset and that offset plus the allowed lag);
/// - `now`: the evaluation time.
pub fn evaluate_partition(
    window: &[CommitSample],
    current_lag: Option<u64>,
    recent_end_offsets: &[Offset],
    now: Timestamp,
    config: &BurrowConfig,
) -> PartitionEvaluation {
    let size = config.window.max(1);
    let window = &window[window.len().saturating_sub(size)..];
    let complete = window.len() as f64 / size as f64;
    let verdict = |status, rule| PartitionEvaluation {
        status,
        rule,
        complete,
        current_lag,
    };

    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return verdict(PartitionStatus::Ok, Rule::NoCommits);
    };
    let Some(current_lag) = current_lag else {
        return verdict(PartitionStatus::Ok, Rule::LagUnknown);
    };
    if complete < config.min_complete {
        return verdict(PartitionStatus::Ok, Rule::IncompleteWindow);
    }
    let allowed = config.allowed_lag;
    if current_lag <= allowed {
        return verdict(PartitionStatus::Ok, Rule::CurrentLagWithinAllowed);
    }

    let silent_for = now.as_millis().saturating_sub(last.at.as_millis());
    let span = last.at.as_millis().saturating_sub(first.at.as_millis());
    // Caught up means the end stood within the allowed lag at or above the last commit: the
    // consumer had nothing left to read and so nothing to commit. An end below the last commit is
    // a sample from before that commit and says nothing about the consumer since. Burrow counts
    // such samples too; here they matter more, as an end-offset table that keeps idle runs as two
    // points can hand over samples from long before the last commit.
    let recently_caught_up = recent_end_offsets
        .iter()
        .any(|end| *end >= last.offset && end.saturating_distance(last.offset) <= allowed);
    if silent_for > span && !recently_caught_up {
        return verdict(PartitionStatus::Stop, Rule::Stopped);
    }
    if window.windows(2).any(|w| w[1].offset < w[0].offset) {
        return verdict(PartitionStatus::Rewind, Rule::Rewound);
    }
    if window
        .iter()
        .any(|c| c.lag.is_some_and(|lag| lag <= allowed))
    {
        return verdict(PartitionStatus::Ok, Rule::LagWithinAllowedInWindow);
    }
    if window.windows(2).all(|w| w[1].offset == w[0].offset) {
        return verdict(PartitionStatus::Stall, Rule::Stalled);
    }
    if lag_never_decreased(window) {
        return verdict(PartitionStatus::Warning, Rule::LagNotDecreasing);
    }
    verdict(PartitionStatus::Ok, Rule::CatchingUp)
}

/// Whether the known lags never decrease from one commit to the next (unknown lags are skipped).
fn lag_never_decreased(window: &[CommitSample]) -> bool {
    let mut previous: Option<u64> = None;
    for lag in window.iter().filter_map(|c| c.lag) {
        if previous.is_some_and(|p| lag < p) {
            return false;
        }
        previous = Some(lag);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(offset: i64, lag: u64, at: i64) -> CommitSample {
        CommitSample {
            offset: Offset::new(offset).unwrap(),
            lag: Some(lag),
            at: Timestamp::from_millis(at),
        }
    }
    fn cfg(window: usize) -> BurrowConfig {
        BurrowConfig {
            window,
            min_complete: 1.0,
            allowed_lag: 0,
        }
    }
    fn eval(window: &[CommitSample], lag: u64, now: i64) -> (PartitionStatus, Rule) {
        let e = evaluate_partition(
            window,
            Some(lag),
            &[],
            Timestamp::from_millis(now),
            &cfg(window.len()),
        );
        (e.status, e.rule)
    }

    #[test]
    fn caught_up_is_ok_whatever_the_history() {
        let w = [c(10, 5, 0), c(5, 9, 1_000)];
        assert_eq!(
            eval(&w, 0, 1_000_000),
            (PartitionStatus::Ok, Rule::CurrentLagWithinAllowed)
        );
    }

    #[test]
    fn stop_when_silent_longer_than_the_window_spans() {
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 5, 2_000)];
        assert_eq!(eval(&w, 7, 4_001), (PartitionStatus::Stop, Rule::Stopped));
        // Exactly the span is not yet a stop; the flat lag then reads as falling behind.
        assert_eq!(
            eval(&w, 7, 4_000),
            (PartitionStatus::Warning, Rule::LagNotDecreasing)
        );
    }

    #[test]
    fn recent_catch_up_delays_stop() {
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 5, 2_000)];
        let recent = [Offset::new(30).unwrap(), Offset::new(40).unwrap()];
        let e = evaluate_partition(
            &w,
            Some(10),
            &recent,
            Timestamp::from_millis(9_000),
            &cfg(3),
        );
        assert_ne!(e.status, PartitionStatus::Stop);
    }

    fn ends(offsets: &[i64]) -> Vec<Offset> {
        offsets.iter().map(|o| Offset::new(*o).unwrap()).collect()
    }

    #[test]
    fn an_end_sample_older_than_the_last_commit_does_not_delay_stop() {
        // The end was at 25 before the consumer committed 30; that says nothing about whether
        // the consumer later ran out of work.
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 5, 2_000)];
        let e = evaluate_partition(
            &w,
            Some(10),
            &ends(&[25]),
            Timestamp::from_millis(9_000),
            &cfg(3),
        );
        assert_eq!((e.status, e.rule), (PartitionStatus::Stop, Rule::Stopped));
    }

    #[test]
    fn a_dead_consumer_on_a_topic_idle_after_a_burst_is_stopped() {
        // Samples 25 (before the last commit), then a burst to 40 that has sat there since: the
        // consumer at 30 had work all along and did not commit for longer than its window spans.
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 10, 2_000)];
        let e = evaluate_partition(
            &w,
            Some(10),
            &ends(&[25, 40, 40]),
            Timestamp::from_millis(60_000),
            &cfg(3),
        );
        assert_eq!((e.status, e.rule), (PartitionStatus::Stop, Rule::Stopped));
    }

    #[test]
    fn an_idle_caught_up_partition_is_not_stopped() {
        // The end sat at the last commit (nothing to do, so nothing to commit) until new records
        // arrived a moment ago.
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 0, 2_000)];
        let e = evaluate_partition(
            &w,
            Some(10),
            &ends(&[25, 30, 30, 40]),
            Timestamp::from_millis(60_000),
            &cfg(3),
        );
        assert_eq!(
            (e.status, e.rule),
            (PartitionStatus::Ok, Rule::LagWithinAllowedInWindow)
        );
    }

    #[test]
    fn caught_up_means_at_most_the_allowed_lag_above_the_last_commit() {
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 5, 2_000)];
        let mut config = cfg(3);
        config.allowed_lag = 3;
        let status = |end: i64| {
            evaluate_partition(
                &w,
                Some(10),
                &ends(&[end]),
                Timestamp::from_millis(9_000),
                &config,
            )
            .status
        };
        assert_eq!(status(26), PartitionStatus::Stop);
        assert_eq!(status(29), PartitionStatus::Stop);
        assert_ne!(status(30), PartitionStatus::Stop);
        assert_ne!(status(33), PartitionStatus::Stop);
        assert_eq!(status(34), PartitionStatus::Stop);
    }

    #[test]
    fn rewind_is_reported_even_if_the_window_saw_zero_lag() {
        // The order follows the design: REWIND is checked before "some lag was zero".
        let w = [c(30, 0, 0), c(10, 20, 1_000), c(15, 15, 2_000)];
        assert_eq!(
            eval(&w, 15, 2_500),
            (PartitionStatus::Rewind, Rule::Rewound)
        );
    }

    #[test]
    fn zero_lag_in_window_is_ok() {
        let w = [c(10, 0, 0), c(20, 5, 1_000), c(30, 8, 2_000)];
        assert_eq!(
            eval(&w, 8, 2_500),
            (PartitionStatus::Ok, Rule::LagWithinAllowedInWindow)
        );
    }

    #[test]
    fn stall_when_all_commits_are_equal() {
        let w = [c(10, 5, 0), c(10, 6, 1_000), c(10, 7, 2_000)];
        assert_eq!(eval(&w, 7, 2_500), (PartitionStatus::Stall, Rule::Stalled));
    }

    #[test]
    fn warn_when_lag_never_decreases() {
        let w = [c(10, 5, 0), c(20, 5, 1_000), c(30, 9, 2_000)];
        assert_eq!(
            eval(&w, 9, 2_500),
            (PartitionStatus::Warning, Rule::LagNotDecreasing)
        );
    }

    #[test]
    fn ok_when_catching_up() {
        let w = [c(10, 9, 0), c(20, 4, 1_000), c(30, 6, 2_000)];
        assert_eq!(eval(&w, 6, 2_500), (PartitionStatus::Ok, Rule::CatchingUp));
    }

    #[test]
    fn allowed_lag_generalizes_zero() {
        let w = [c(10, 3, 0), c(20, 5, 1_000), c(30, 9, 2_000)];
        let mut config = cfg(3);
        config.allowed_lag = 3;
        let e = evaluate_partition(&w, Some(9), &[], Timestamp::from_millis(2_500), &config);
        assert_eq!(e.rule, Rule::LagWithinAllowedInWindow);
        let e = evaluate_partition(&w, Some(3), &[], Timestamp::from_millis(2_500), &config);
        assert_eq!(e.rule, Rule::CurrentLagWithinAllowed);
    }

    #[test]
    fn incomplete_windows_are_not_judged() {
        let w = [c(10, 5, 0), c(10, 6, 1_000)];
        let config = BurrowConfig {
            window: 10,
            min_complete: 0.5,
            allowed_lag: 0,
        };
        let e = evaluate_partition(&w, Some(6), &[], Timestamp::from_millis(9_999_999), &config);
        assert_eq!(
            (e.status, e.rule),
            (PartitionStatus::Ok, Rule::IncompleteWindow)
        );
        assert!((e.complete - 0.2).abs() < 1e-9);
    }

    #[test]
    fn only_the_newest_window_counts() {
        // An old rewind falls out of a 3-commit window.
        let w = [
            c(50, 1, 0),
            c(10, 5, 1_000),
            c(20, 6, 2_000),
            c(30, 9, 3_000),
        ];
        let e = evaluate_partition(&w, Some(9), &[], Timestamp::from_millis(3_500), &cfg(3));
        assert_eq!(e.status, PartitionStatus::Warning);
    }

    #[test]
    fn empty_or_unknown_is_ok_and_says_why() {
        let e = evaluate_partition(&[], Some(5), &[], Timestamp::from_millis(0), &cfg(3));
        assert_eq!(e.rule, Rule::NoCommits);
        let e = evaluate_partition(&[c(1, 1, 0)], None, &[], Timestamp::from_millis(0), &cfg(1));
        assert_eq!(e.rule, Rule::LagUnknown);
    }

    #[test]
    fn config_is_validated() {
        assert!(BurrowConfig::default().validate().is_ok());
        assert!(
            BurrowConfig {
                window: 1,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            BurrowConfig {
                min_complete: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn caught_up_partitions_are_never_in_error(
            commits in proptest::collection::vec((0i64..1000, 0u64..100, 0i64..10_000), 1..12),
            now in 0i64..100_000,
        ) {
            let mut window: Vec<CommitSample> = commits.iter().map(|(o, l, t)| c(*o, *l, *t)).collect();
            window.sort_by_key(|s| s.at);
            let e = evaluate_partition(&window, Some(0), &[], Timestamp::from_millis(now), &BurrowConfig::default());
            prop_assert_eq!(e.status, PartitionStatus::Ok);
        }

        #[test]
        fn statuses_match_rules(
            commits in proptest::collection::vec((0i64..1000, 0u64..100, 0i64..10_000), 1..12),
            lag in 0u64..100,
            now in 0i64..100_000,
        ) {
            let mut window: Vec<CommitSample> = commits.iter().map(|(o, l, t)| c(*o, *l, *t)).collect();
            window.sort_by_key(|s| s.at);
            let e = evaluate_partition(&window, Some(lag), &[], Timestamp::from_millis(now), &cfg(12));
            let expected = match e.rule {
                Rule::Stopped => PartitionStatus::Stop,
                Rule::Rewound => PartitionStatus::Rewind,
                Rule::Stalled => PartitionStatus::Stall,
                Rule::LagNotDecreasing => PartitionStatus::Warning,
                _ => PartitionStatus::Ok,
            };
            prop_assert_eq!(e.status, expected);
        }
    }
}
