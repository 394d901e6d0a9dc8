//! What to do with a failed record: retry in place, hand to a retry tier, dead-letter, skip or
//! stop — from core's error class and the user's rules.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafka_ops_core::ErrorClass;
use kafka_ops_core::handler::{Disposition, HandlerError};
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::RetryBudget;

/// A retry policy's decision for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the record again here after this delay.
    RetryAfter(Duration),
    /// Hand the record to a non-blocking retry tier.
    RetryTier,
    /// Route it to the dead-letter topic.
    DeadLetter,
    /// Commit past it.
    Skip,
    /// Stop the consumer without committing past it.
    Stop,
}

impl Decision {
    /// The disposition that carries this decision to outer layers and the driver (`None` for a
    /// retry in place, which never leaves the layer).
    pub fn disposition(self) -> Option<Disposition> {
        match self {
            Decision::RetryAfter(_) => None,
            Decision::RetryTier => Some(Disposition::RetryLater),
            Decision::DeadLetter => Some(Disposition::DeadLetter),
            Decision::Skip => Some(Disposition::Skip),
            Decision::Stop => Some(Disposition::Stop),
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Retry in place with backoff (then the policy's exhaustion decision).
    Retry,
    /// Hand to a retry tier at once.
    RetryTier,
    /// Dead-letter at once.
    DeadLetter,
    /// Skip.
    Skip,
    /// Stop the consumer.
    Stop,
}

type Predicate = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

/// Which failures a rule applies to.
#[derive(Clone)]
pub enum Matcher {
    /// Errors of this class.
    Class(ErrorClass),
    /// Errors whose message (or any cause's) contains this text.
    MessageContains(String),
    /// Errors the predicate accepts (match on the error type with `downcast_ref`).
    Predicate(Predicate),
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Class(class) => write!(f, "Class({class:?})"),
            Matcher::MessageContains(text) => write!(f, "MessageContains({text:?})"),
            Matcher::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

impl Matcher {
    /// Errors whose cause is of type `E` (anywhere in the chain's first link).
    pub fn error_type<E: std::error::Error + 'static>() -> Self {
        Matcher::Predicate(Arc::new(|error: &HandlerError| {
            error.downcast_ref::<E>().is_some()
        }))
    }

    fn matches(&self, error: &HandlerError) -> bool {
        match self {
            Matcher::Class(class) => error.class() == *class,
            Matcher::MessageContains(text) => error
                .cause_chain(16)
                .iter()
                .any(|message| message.contains(text.as_str())),
            Matcher::Predicate(predicate) => predicate(error),
        }
    }
}

/// A user rule: failures it matches get its action instead of the class default.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Which failures.
    pub matcher: Matcher,
    /// What to do.
    pub action: RuleAction,
}

/// Decides per failure. Rules are tried in order; the first match wins; without a match,
/// transient errors are retried, permanent ones dead-lettered, fatal ones stop the consumer.
/// Retries in place follow the backoff schedule and, when one is set, a shared retry budget;
/// when either runs out, the record goes to the retry tier (if the consumer has tiers) or the
/// dead-letter topic.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The in-place retry schedule.
    pub backoff: BackoffPolicy,
    /// User rules, first match wins.
    pub rules: Vec<Rule>,
    /// Whether retry tiers exist to hand exhausted records to.
    pub retry_tiers: bool,
    /// A budget shared across workers.
    pub budget: Option<RetryBudget>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(BackoffPolicy::runbook())
    }
}

impl RetryPolicy {
    /// A policy retrying in place on `backoff`, dead-lettering when exhausted.
    pub fn new(backoff: BackoffPolicy) -> Self {
        RetryPolicy {
            backoff,
            rules: Vec::new(),
            retry_tiers: false,
            budget: None,
        }
    }

    /// Adds a rule (tried after the ones added before).
    pub fn rule(mut self, matcher: Matcher, action: RuleAction) -> Self {
        self.rules.push(Rule { matcher, action });
        self
    }

    /// Exhausted records go to the retry tiers instead of the dead-letter topic.
    pub fn with_retry_tiers(mut self) -> Self {
        self.retry_tiers = true;
        self
    }

    /// Retries in place also need a token from `budget`.
    pub fn with_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Decides what to do after `error`, advancing `backoff` when it retries.
    pub fn decide(&self, error: &HandlerError, backoff: &mut Backoff) -> Decision {
        let action = self
            .rules
            .iter()
            .find(|rule| rule.matcher.matches(error))
            .map(|rule| rule.action)
            .unwrap_or(match error.class() {
                ErrorClass::Transient => RuleAction::Retry,
                ErrorClass::Permanent => RuleAction::DeadLetter,
                _ => RuleAction::Stop,
            });
        let exhausted = if self.retry_tiers {
            Decision::RetryTier
        } else {
            Decision::DeadLetter
        };
        match action {
            RuleAction::Retry => match backoff.next_delay() {
                Some(delay) if self.budget.as_ref().is_none_or(RetryBudget::try_withdraw) => {
                    Decision::RetryAfter(delay)
                }
                _ => exhausted,
            },
            RuleAction::RetryTier => Decision::RetryTier,
            RuleAction::DeadLetter => Decision::DeadLetter,
            RuleAction::Skip => Decision::Skip,
            RuleAction::Stop => Decision::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::RetryBudgetConfig;
    use kafka_ops_core::{Clock, ManualClock};

    #[derive(Debug, thiserror::Error)]
    #[error("schema registry said 404")]
    struct UnknownSchema;

    fn backoff(policy: &RetryPolicy) -> Backoff {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        Backoff::new(policy.backoff, clock, 1)
    }

    #[test]
    fn classes_decide_by_default_and_the_runbook_schedule_then_dead_letters() {
        let policy = RetryPolicy::default();
        let mut schedule = backoff(&policy);
        let timeout = HandlerError::transient("downstream timed out");
        let decisions: Vec<Decision> = (0..4)
            .map(|_| policy.decide(&timeout, &mut schedule))
            .collect();
        assert_eq!(
            decisions,
            vec![
                Decision::RetryAfter(Duration::from_secs(10)),
                Decision::RetryAfter(Duration::from_secs(15)),
                Decision::RetryAfter(Duration::from_millis(22_500)),
                Decision::DeadLetter,
            ]
        );
        assert_eq!(
            policy.decide(&HandlerError::permanent("bad json"), &mut backoff(&policy)),
            Decision::DeadLetter
        );
        assert_eq!(
            policy.decide(&HandlerError::fatal("auth revoked"), &mut backoff(&policy)),
            Decision::Stop
        );
        let tiers = RetryPolicy::default().with_retry_tiers();
        let mut schedule = backoff(&tiers);
        for _ in 0..3 {
            tiers.decide(&timeout, &mut schedule);
        }
        assert_eq!(tiers.decide(&timeout, &mut schedule), Decision::RetryTier);
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let policy = RetryPolicy::default()
            .rule(Matcher::error_type::<UnknownSchema>(), RuleAction::Skip)
            .rule(
                Matcher::MessageContains("rate limited".into()),
                RuleAction::RetryTier,
            )
            .rule(
                Matcher::Class(ErrorClass::Transient),
                RuleAction::DeadLetter,
            );
        let mut schedule = backoff(&policy);
        assert_eq!(
            policy.decide(&HandlerError::transient(UnknownSchema), &mut schedule),
            Decision::Skip
        );
        assert_eq!(
            policy.decide(&HandlerError::transient("429: rate limited"), &mut schedule),
            Decision::RetryTier
        );
        assert_eq!(
            policy.decide(&HandlerError::transient("timeout"), &mut schedule),
            Decision::DeadLetter
        );
        assert_eq!(schedule.attempts(), 0, "no rule retried");
    }

    #[test]
    fn a_spent_budget_stops_retries_in_place() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let budget = RetryBudget::with_clock(
            RetryBudgetConfig {
                min_retries_per_second: 0.1,
                retry_ratio: 0.0,
                window: Duration::from_secs(10),
            },
            clock,
        )
        .unwrap();
        let policy = RetryPolicy::new(BackoffPolicy::constant(Duration::from_millis(5), 10))
            .with_budget(budget);
        let error = HandlerError::transient("down");
        let mut first = backoff(&policy);
        let mut second = backoff(&policy);
        assert_eq!(
            policy.decide(&error, &mut first),
            Decision::RetryAfter(Duration::from_millis(5))
        );
        // One token for the whole window, shared: the other record goes on at once.
        assert_eq!(policy.decide(&error, &mut second), Decision::DeadLetter);
    }
}
