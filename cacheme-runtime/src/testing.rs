//! Tools for testing code that uses cacheme: a clock the test drives, so
//! expiry, stale values and refresh-ahead are tested without sleeping (as
//! Caffeine's fake `Ticker` and sturdyc's `TestClock`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A clock that stands still until the test moves it.
///
/// Give it to a client with [`ClientBuilder::clock`](crate::ClientBuilder::clock)
/// (it then also drives the default memory backend), and to a memory
/// backend of your own with [`MemoryBackend::with_clock`](crate::MemoryBackend::with_clock).
/// It decides how old a value is: the memory backend's expiry and the
/// freshness of stores with `stale_for` or `refresh_after`. Remote servers
/// (Redis, memcached) expire keys by their own time, which this clock does
/// not move: test with TTLs longer than the test and advance this clock
/// past the freshness you test.
///
/// Clones share one time: advancing one advances all.
///
/// ```
/// use cacheme::testing::TestClock;
/// use std::time::Duration;
///
/// let clock = TestClock::new();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.elapsed(), Duration::from_secs(90));
/// ```
#[derive(Clone)]
pub struct TestClock(Arc<Frozen>);

struct Frozen {
    instant: Instant,
    unix_ms: u64,
    advanced_ns: AtomicU64,
}

impl TestClock {
    /// A clock stopped at the present moment.
    pub fn new() -> Self {
        TestClock(Arc::new(Frozen {
            instant: Instant::now(),
            unix_ms: crate::clock::system_unix_ms(),
            advanced_ns: AtomicU64::new(0),
        }))
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .advanced_ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_add(ns)));
    }

    /// How far the clock has been moved since it was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.0.advanced_ns.load(Ordering::SeqCst))
    }

    pub(crate) fn instant(&self) -> Instant {
        self.0.instant.checked_add(self.elapsed()).unwrap_or(self.0.instant)
    }

    pub(crate) fn unix_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.unix_ms.saturating_add(elapsed)
    }
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock::new()
    }
}

impl fmt::Debug for TestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClock").field("elapsed", &self.elapsed()).finish()
    }
}
