//! The clock that times calls and backend commands.
//!
//! With feature `metrics`, a call is timed on every hit, so the clock is a
//! cost of the hit: quanta's TSC clock (calibrated once per process) read
//! raw, and scaled only for the difference. That skips what
//! `quanta::Instant::now` adds to each read (a per-thread check for a mock
//! clock and a scaling); `std::time::Instant::now` is a `clock_gettime`,
//! about twice the cost of either on the VMs measured (BENCHMARKS.md).
//! Without the feature only spans time calls, with the standard clock.

use std::time::Duration;

/// When something started.
#[derive(Clone, Copy)]
pub(crate) struct Started(
    #[cfg(feature = "metrics")] u64,
    #[cfg(not(feature = "metrics"))] std::time::Instant,
);

#[cfg(feature = "metrics")]
fn clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

impl Started {
    /// Now.
    pub(crate) fn now() -> Self {
        #[cfg(feature = "metrics")]
        return Started(clock().raw());
        #[cfg(not(feature = "metrics"))]
        Started(std::time::Instant::now())
    }

    /// The time since (zero if the clock went backwards, as a TSC read on
    /// another core may).
    pub(crate) fn elapsed(self) -> Duration {
        #[cfg(feature = "metrics")]
        {
            let clock = clock();
            clock.delta(self.0, clock.raw())
        }
        #[cfg(not(feature = "metrics"))]
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_is_measured() {
        let started = Started::now();
        std::thread::sleep(Duration::from_millis(20));
        let took = started.elapsed();
        // Generous bounds: the machine may be loaded.
        assert!(took >= Duration::from_millis(10), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
}
