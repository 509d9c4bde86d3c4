//! The time the cache judges freshness by: the system's, or a
//! [`TestClock`](crate::testing::TestClock) a test drives.
//!
//! Deadlines of the miss path (cache budgets, lock waits, timeouts) are
//! real time, as the servers' are; what a clock decides is how old a value
//! is: the memory backend's expiry and the freshness dates of stores with
//! `stale_for` or `refresh_after`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::testing::TestClock;

/// The system clock, or a test's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Clock(Option<TestClock>);

impl Clock {
    /// A clock that a test drives.
    pub(crate) fn driven(clock: &TestClock) -> Self {
        Clock(Some(clock.clone()))
    }

    /// Whether this is the system's clock (no test drives it).
    pub(crate) fn is_system(&self) -> bool {
        self.0.is_none()
    }

    /// Now, as a monotonic instant (for in-process expiry).
    pub(crate) fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(clock) => clock.instant(),
        }
    }

    /// Now, in milliseconds since the Unix epoch (for dates written into
    /// values other processes read).
    pub(crate) fn unix_ms(&self) -> u64 {
        match &self.0 {
            None => system_unix_ms(),
            Some(clock) => clock.unix_ms(),
        }
    }
}

/// The system's time in milliseconds since the Unix epoch (0 before it).
pub(crate) fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
