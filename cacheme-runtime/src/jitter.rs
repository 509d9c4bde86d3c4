//! Spreading the expiries of a store's values (`ttl_jitter`), so that keys
//! written together (a warm-up, a `get_m`, a fleet restarting) do not all
//! expire, and reach the source, in the same instant.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// How far below its store's TTL a written value's TTL may be drawn
/// (`ttl_jitter = "10%"` or `ttl_jitter = "30s"`).
///
/// Each write draws its TTL uniformly from `[ttl - spread, ttl]`: never
/// above the store's TTL, and never below one millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlJitter {
    /// A share of the TTL, in percent (1 to 99).
    Percent(u8),
    /// A duration below the TTL.
    Span(Duration),
}

impl TtlJitter {
    /// The most a TTL of `ttl` is shortened by.
    pub const fn spread(self, ttl: Duration) -> Duration {
        let spread = match self {
            TtlJitter::Percent(percent) => {
                let nanos = ttl.as_nanos() / 100 * percent as u128;
                Duration::from_nanos(if nanos > u64::MAX as u128 {
                    u64::MAX
                } else {
                    nanos as u64
                })
            }
            TtlJitter::Span(span) => span,
        };
        if spread.as_nanos() > ttl.as_nanos() {
            ttl
        } else {
            spread
        }
    }

    /// A TTL drawn for one write of a value whose store's TTL is `ttl`.
    pub fn draw(self, ttl: Duration) -> Duration {
        let spread = self.spread(ttl).as_millis() as u64;
        let cut = if spread == 0 { 0 } else { random() % (spread + 1) };
        ttl.saturating_sub(Duration::from_millis(cut))
            .max(Duration::from_millis(1))
    }
}

/// A fast per-thread pseudo-random number (xorshift64*, seeded from the
/// process's random hasher keys): good enough to spread expiries, and no
/// lock or dependency on the write path.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_within_the_spread_below_the_ttl_and_differ() {
        let ttl = Duration::from_secs(100);
        for jitter in [TtlJitter::Percent(10), TtlJitter::Span(Duration::from_secs(10))] {
            let draws: Vec<Duration> = (0..1000).map(|_| jitter.draw(ttl)).collect();
            assert!(
                draws.iter().all(|d| *d <= ttl && *d >= Duration::from_secs(90)),
                "{jitter:?}"
            );
            let lowest = draws.iter().min().unwrap();
            let highest = draws.iter().max().unwrap();
            assert!(highest.as_secs_f64() - lowest.as_secs_f64() > 5.0, "{jitter:?} spreads");
        }
    }

    #[test]
    fn a_draw_is_never_zero_nor_above_the_ttl() {
        let tiny = Duration::from_millis(1);
        assert_eq!(TtlJitter::Percent(99).draw(tiny), tiny);
        assert_eq!(TtlJitter::Span(Duration::from_secs(5)).spread(tiny), tiny);
        for _ in 0..100 {
            assert!(TtlJitter::Span(Duration::from_secs(5)).draw(Duration::from_secs(2)) >= tiny);
        }
        assert_eq!(
            TtlJitter::Percent(50).spread(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
    }
}
