//! The per-client circuit breaker: after consecutive cache failures
//! (errors or timeouts), typed stores skip the cache for a cooldown and go
//! straight to the source (still coalesced in the process); then one call
//! probes the cache, and its success closes the breaker again.
//!
//! Transitions are logged once each (a WARN when the cache is skipped, an
//! INFO when it is back), never once per call, so an outage does not flood
//! the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Consecutive failures that open the breaker, by default.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;

/// How long an open breaker skips the cache before a probe, by default.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    /// Skipping the cache until then.
    Open {
        until: Instant,
    },
    /// One call is probing the cache since then.
    Probing {
        since: Instant,
    },
}

/// What a failure or success changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The breaker opened: the cache is skipped.
    Opened,
    /// The breaker closed: the cache is used again.
    Closed,
}

/// A client's breaker (see the module docs).
#[derive(Debug)]
pub(crate) struct Breaker {
    /// False while closed with no failure counted: the hot path (every
    /// hit) then reads one atomic and takes no lock.
    tripped: AtomicBool,
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`. A
    /// threshold of 0 never opens.
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            tripped: AtomicBool::new(false),
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold,
            cooldown,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every state is valid: a panic elsewhere cannot leave a torn one.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this call may use the cache. While open, no; once the
    /// cooldown is over, one call (the probe) may, and the others wait for
    /// its verdict (a probe that never reports is replaced after another
    /// cooldown).
    pub(crate) fn admits(&self) -> bool {
        if !self.tripped.load(Ordering::Acquire) {
            return true;
        }
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Probing { since: until } if now < until => false,
            State::Open { .. } => {
                *state = State::Probing {
                    since: now + self.cooldown,
                };
                true
            }
            State::Probing { .. } => {
                *state = State::Probing {
                    since: now + self.cooldown,
                };
                true
            }
        }
    }

    /// Whether the breaker is open (or probing) now.
    pub(crate) fn is_open(&self) -> bool {
        self.tripped.load(Ordering::Acquire) && !matches!(*self.state(), State::Closed { .. })
    }

    /// The cache answered.
    pub(crate) fn success(&self) -> Option<Transition> {
        if !self.tripped.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.state();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        self.tripped.store(false, Ordering::Release);
        was_open.then_some(Transition::Closed)
    }

    /// The cache failed or timed out.
    pub(crate) fn failure(&self) -> Option<Transition> {
        let mut state = self.state();
        self.tripped.store(true, Ordering::Release);
        let now = Instant::now();
        match *state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if self.threshold > 0 && failures >= self.threshold {
                    *state = State::Open {
                        until: now + self.cooldown,
                    };
                    Some(Transition::Opened)
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            // The probe failed (or a call admitted before the breaker
            // opened did): stay open, quietly.
            State::Open { .. } | State::Probing { .. } => {
                *state = State::Open {
                    until: now + self.cooldown,
                };
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_after_the_cooldown_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_secs(5));
        assert!(breaker.admits());
        assert_eq!(breaker.failure(), None);
        assert_eq!(breaker.failure(), None);
        assert_eq!(breaker.failure(), Some(Transition::Opened));
        assert!(!breaker.admits(), "open: the cache is skipped");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.admits(), "the probe");
        assert!(!breaker.admits(), "one probe at a time");
        assert_eq!(breaker.failure(), None, "a failed probe stays open, quietly");
        assert!(!breaker.admits());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.admits());
        assert_eq!(breaker.success(), Some(Transition::Closed));
        assert!(breaker.admits() && breaker.admits());
        assert_eq!(breaker.success(), None, "closing is reported once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_and_a_lost_probe_is_replaced() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        breaker.failure();
        breaker.success();
        assert_eq!(breaker.failure(), None, "failures must be consecutive");
        assert_eq!(breaker.failure(), Some(Transition::Opened));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.admits(), "a probe that never reports...");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.admits(), "...is replaced after another cooldown");
        assert!(
            Breaker::new(0, Duration::from_secs(1)).failure().is_none(),
            "0 never opens"
        );
    }
}
