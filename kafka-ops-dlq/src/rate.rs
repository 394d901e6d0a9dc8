//! A token bucket, for replaying at a bounded rate.

use std::time::{Duration, Instant};

use crate::error::DlqError;

/// Allows `rate` events per second on average and bursts of up to `burst`. Pure: the caller
/// passes the time (from a [`Clock`](kafka_ops_core::Clock)).
///
/// ```
/// use std::time::{Duration, Instant};
/// use kafka_ops_dlq::rate::TokenBucket;
///
/// let start = Instant::now();
/// let mut bucket = TokenBucket::new(10.0, 2, start).unwrap();
/// assert!(bucket.try_take(start).is_ok());
/// assert!(bucket.try_take(start).is_ok());
/// // Empty: the next token comes 100 ms later.
/// assert_eq!(bucket.try_take(start), Err(Duration::from_millis(100)));
/// assert!(bucket.try_take(start + Duration::from_millis(100)).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. `rate` must be positive and finite, `burst` at least 1.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Result<Self, DlqError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(DlqError::Config(format!(
                "rate must be a positive number of records per second, not {rate}"
            )));
        }
        if burst == 0 {
            return Err(DlqError::Config("burst must be at least 1".into()));
        }
        let burst = f64::from(burst);
        Ok(TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        })
    }

    /// Takes one token at `now`, or answers how long until one is there (taking nothing).
    /// Times earlier than the last one seen count as the last one.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(elapsed) = now.checked_duration_since(self.last) {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        // Rounded up to the microsecond, so waiting that long always yields the token.
        let micros = (missing / self.rate * 1e6).ceil();
        Err(Duration::from_micros(micros as u64))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_settings_are_refused() {
        let now = Instant::now();
        assert!(TokenBucket::new(0.0, 1, now).is_err());
        assert!(TokenBucket::new(f64::NAN, 1, now).is_err());
        assert!(TokenBucket::new(-3.0, 1, now).is_err());
        assert!(TokenBucket::new(1.0, 0, now).is_err());
    }

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut bucket = TokenBucket::new(4.0, 3, t0).unwrap();
        for _ in 0..3 {
            bucket.try_take(t0).unwrap();
        }
        assert_eq!(bucket.try_take(t0), Err(ms(250)));
        assert_eq!(bucket.try_take(t0 + ms(100)), Err(ms(150)));
        bucket.try_take(t0 + ms(250)).unwrap();
        // A long pause fills the bucket to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            bucket.try_take(later).unwrap();
        }
        assert!(bucket.try_take(later).is_err());
    }

    proptest! {
        /// Over any run of takes, what was granted never exceeds burst + rate × elapsed, and
        /// waiting the answered time always yields a token.
        #[test]
        fn never_exceeds_rate_and_burst(
            rate in 0.5_f64..5_000.0,
            burst in 1_u32..50,
            steps in proptest::collection::vec(0_u64..20_000, 1..300),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst, t0).unwrap();
            let mut now = t0;
            let mut granted = 0_u64;
            for step in steps {
                now += Duration::from_micros(step);
                match bucket.try_take(now) {
                    Ok(()) => granted += 1,
                    Err(wait) => {
                        let mut probe = bucket.clone();
                        prop_assert!(probe.try_take(now + wait).is_ok());
                    }
                }
                let allowed = f64::from(burst) + rate * (now - t0).as_secs_f64();
                prop_assert!(granted as f64 <= allowed + 1e-9);
            }
        }
    }
}
