//! Schedules from the `backoff` crate (feature `backoff-adapter`), for code that already holds a
//! `backoff::ExponentialBackoff`. The crate is unmaintained, so it never enters the default
//! dependency graph.

use crate::backoff::{BackoffPolicy, Jitter};

impl From<&backoff::ExponentialBackoff> for BackoffPolicy {
    /// Initial interval, multiplier, maximum interval and maximum elapsed time carry over.
    /// `backoff` randomises each interval by ± its randomization factor; the closest schedule
    /// here is equal jitter (half fixed, half random), used whenever the factor is positive.
    fn from(source: &backoff::ExponentialBackoff) -> Self {
        BackoffPolicy {
            initial_delay: source.initial_interval,
            multiplier: source.multiplier.max(1.0),
            max_delay: source.max_interval.max(source.initial_interval),
            max_attempts: None,
            max_elapsed: source.max_elapsed_time,
            jitter: if source.randomization_factor > 0.0 {
                Jitter::Equal
            } else {
                Jitter::None
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn settings_carry_over() {
        let source = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(200),
            multiplier: 3.0,
            max_interval: Duration::from_secs(9),
            max_elapsed_time: Some(Duration::from_secs(60)),
            randomization_factor: 0.0,
            ..backoff::ExponentialBackoff::default()
        };
        let policy = BackoffPolicy::from(&source);
        assert_eq!(policy.initial_delay, Duration::from_millis(200));
        assert_eq!(policy.base_delay(2), Duration::from_millis(1_800));
        assert_eq!(policy.base_delay(5), Duration::from_secs(9));
        assert_eq!(policy.max_elapsed, Some(Duration::from_secs(60)));
        assert_eq!(policy.jitter, Jitter::None);
        let randomised = backoff::ExponentialBackoff::default();
        assert_eq!(BackoffPolicy::from(&randomised).jitter, Jitter::Equal);
    }
}
