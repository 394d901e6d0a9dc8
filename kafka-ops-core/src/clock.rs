//! Time as an injected dependency.
//!
//! Pure logic (time lag, verdicts, backoff, circuit breakers, leases) never reads the system clock
//! directly: it asks a [`Clock`], so tests drive time with a [`ManualClock`] and get exact answers.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::types::Timestamp;

/// A source of time: a monotonic clock for measuring intervals, and the wall clock for comparing
/// with Kafka's record and commit timestamps.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic now: use it for timeouts, backoff and "how long since".
    fn now(&self) -> Instant;

    /// Wall-clock now: use it where the time is compared with Kafka timestamps.
    fn wall(&self) -> Timestamp;

    /// Wall-clock now to within the kernel's tick (1–10 ms behind [`wall`](Clock::wall)), for
    /// deadlines of seconds and more that are taken on every record (leases, TTLs), where
    /// reading the precise clock would be a measurable share of the work. The default is
    /// [`wall`](Clock::wall): clocks that have nothing cheaper, and test clocks, stay exact.
    fn coarse_wall(&self) -> Timestamp {
        self.wall()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wall(&self) -> Timestamp {
        (**self).wall()
    }
    fn coarse_wall(&self) -> Timestamp {
        (**self).coarse_wall()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wall(&self) -> Timestamp {
        (**self).wall()
    }
    fn coarse_wall(&self) -> Timestamp {
        (**self).coarse_wall()
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
    /// `CLOCK_REALTIME_COARSE` on Linux (the time of the last tick, read without asking the
    /// hardware: a fraction of the precise clock's cost); the precise clock elsewhere.
    fn coarse_wall(&self) -> Timestamp {
        coarse_wall_millis().map_or_else(|| self.wall(), Timestamp::from_millis)
    }
}

/// The wall clock in milliseconds as of the kernel's last tick (`CLOCK_REALTIME_COARSE`); the
/// epoch for readings before it, as [`Timestamp::from_system_time`] does.
#[cfg(target_os = "linux")]
fn coarse_wall_millis() -> Option<i64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    Some((now.tv_sec.saturating_mul(1_000) + now.tv_nsec / 1_000_000).max(0))
}

/// No coarse clock here: callers fall back to the precise one.
#[cfg(not(target_os = "linux"))]
fn coarse_wall_millis() -> Option<i64> {
    None
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use kafka_ops_core::{Clock, ManualClock};
/// use kafka_ops_core::Timestamp;
///
/// let clock = ManualClock::at(Timestamp::from_millis(1_000));
/// let start = clock.now();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now() - start, Duration::from_secs(2));
/// assert_eq!(clock.wall(), Timestamp::from_millis(3_000));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

#[derive(Debug, Clone, Copy)]
struct ManualState {
    monotonic: Instant,
    wall: Timestamp,
}

impl ManualClock {
    /// A manual clock whose wall time starts at `wall`.
    pub fn at(wall: Timestamp) -> Self {
        Self {
            state: Arc::new(Mutex::new(ManualState {
                monotonic: Instant::now(),
                wall,
            })),
        }
    }

    /// A manual clock starting at the Unix epoch plus one day (a fixed, readable origin).
    pub fn new() -> Self {
        Self::at(Timestamp::from_millis(86_400_000))
    }

    fn with<R>(&self, f: impl FnOnce(&mut ManualState) -> R) -> R {
        // A panic while holding this lock cannot leave the two fields inconsistent, so a poisoned
        // lock is still usable.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        self.with(|s| {
            s.monotonic += by;
            s.wall = s.wall.plus(by);
        });
    }

    /// Sets the wall clock (it may go backwards, as a real wall clock can); the monotonic clock
    /// is unchanged.
    pub fn set_wall(&self, wall: Timestamp) {
        self.with(|s| s.wall = wall);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall = self.with(|s| s.wall);
        f.debug_struct("ManualClock").field("wall", &wall).finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.with(|s| s.monotonic)
    }
    fn wall(&self) -> Timestamp {
        self.with(|s| s.wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        let t0 = a.now();
        b.advance(Duration::from_millis(1500));
        assert_eq!(a.now() - t0, Duration::from_millis(1500));
        assert_eq!(a.wall(), Timestamp::from_millis(86_401_500));
        a.set_wall(Timestamp::from_millis(5));
        assert_eq!(b.wall(), Timestamp::from_millis(5));
        assert_eq!(a.now() - t0, Duration::from_millis(1500));
    }

    #[test]
    fn system_clock_is_monotonic_and_recent() {
        let c = SystemClock;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(c.wall().as_millis() > 1_600_000_000_000);
    }

    #[test]
    fn clocks_work_through_references_and_arcs() {
        fn wall_of(c: impl Clock) -> Timestamp {
            c.wall()
        }
        let manual = ManualClock::at(Timestamp::from_millis(7));
        assert_eq!(wall_of(&manual), Timestamp::from_millis(7));
        let shared: Arc<dyn Clock> = Arc::new(manual);
        assert_eq!(wall_of(shared), Timestamp::from_millis(7));
    }

    #[test]
    fn the_coarse_wall_clock_never_leads_the_precise_one_and_trails_it_by_little() {
        let clock = SystemClock;
        for _ in 0..100 {
            let before = clock.wall();
            let coarse = clock.coarse_wall();
            let after = clock.wall();
            assert!(coarse <= after, "{coarse:?} after {after:?}");
            // A tick is 1-10 ms; the wide margin is for a stalled VM, not for the clock (a wrong
            // unit or clock would be off by far more).
            assert!(
                coarse.as_millis() >= before.as_millis() - 1_000,
                "{coarse:?} long before {before:?}"
            );
        }
    }

    #[test]
    fn test_clocks_stay_exact_and_wrappers_keep_a_clocks_coarse_reading() {
        #[derive(Debug)]
        struct Ticking;
        impl Clock for Ticking {
            fn now(&self) -> Instant {
                Instant::now()
            }
            fn wall(&self) -> Timestamp {
                Timestamp::from_millis(1_001)
            }
            fn coarse_wall(&self) -> Timestamp {
                Timestamp::from_millis(1_000)
            }
        }
        let manual = ManualClock::at(Timestamp::from_millis(7));
        assert_eq!(manual.coarse_wall(), Timestamp::from_millis(7));
        let shared: Arc<dyn Clock> = Arc::new(Ticking);
        assert_eq!(shared.coarse_wall(), Timestamp::from_millis(1_000));
        assert_eq!(
            <&Ticking as Clock>::coarse_wall(&&Ticking),
            Timestamp::from_millis(1_000)
        );
    }
}
