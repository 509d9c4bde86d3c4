//! TTLs to the millisecond on a server that counts whole seconds.
//!
//! memcached keeps an item's expiry in whole seconds on a clock that ticks
//! once a second, and reads an expiry over 30 days as an absolute unix
//! time. So a TTL of up to 30 days is kept by the client:
//!
//! - the exact deadline (unix milliseconds) is written into the item's
//!   32-bit client flags: the top bit says "has a deadline", the other 31
//!   bits hold the deadline modulo 2^31 ms (about 24.8 days);
//! - the server's own expiry is the TTL rounded up to whole seconds plus
//!   one second of margin, so the server frees the item shortly after it
//!   has died and never before;
//! - reads ask for the flags and the remaining server TTL (`mg k f t`); the
//!   remaining TTL is within a few seconds of the deadline, which is enough
//!   to recover the full deadline from its 31 low bits, and an item past its
//!   deadline is a miss (get, get_many, exists, incr, locks alike).
//!
//! TTLs over 30 days (where a second does not matter) use the server's
//! expiry alone, rounded up to whole seconds. Values stay raw bytes: nothing
//! is added to them, so counters stay plain decimal text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::Ttl;

/// Client-flag bit marking an item whose deadline is in the other bits.
pub(crate) const DEADLINE_FLAG: u32 = 1 << 31;

/// The deadline is kept modulo this many milliseconds.
const WRAP: i64 = 1 << 31;

/// memcached reads an expiry above this many seconds as a unix time.
const RELATIVE_LIMIT_SECS: u64 = 30 * 24 * 60 * 60;

/// The longest TTL whose deadline is kept in the flags.
pub(crate) const PRECISE_LIMIT: Duration = Duration::from_secs(RELATIVE_LIMIT_SECS);

/// Seconds the server keeps an item past its deadline, so its coarse clock
/// never drops it early.
const GRACE_SECS: u64 = 1;

/// Milliseconds since the unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// How an item is written: its client flags and the server's expiry (`T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Client flags (`F`).
    pub(crate) flags: u32,
    /// Server expiry (`T`): 0 for none, seconds, or a unix time past 30 days.
    pub(crate) exptime: u64,
}

impl Stamp {
    /// No expiry.
    pub(crate) const FOREVER: Stamp = Stamp { flags: 0, exptime: 0 };

    /// The `ms` flags for this stamp.
    pub(crate) fn tokens(self) -> String {
        format!("F{} T{}", self.flags, self.exptime)
    }
}

/// The stamp of a value written now with `ttl`. A TTL under a millisecond
/// counts as one millisecond.
pub(crate) fn stamp(ttl: Ttl, now_ms: i64) -> Stamp {
    let Some(ttl) = ttl.map(crate::backend::clamp_ttl) else {
        return Stamp::FOREVER;
    };
    if ttl > PRECISE_LIMIT {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        return Stamp {
            flags: 0,
            exptime: server_exptime(secs, now_ms),
        };
    }
    let millis = i64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(i64::MAX)
        .max(1);
    at_deadline(now_ms.saturating_add(millis), now_ms)
}

/// The stamp that keeps an existing, live item's expiry (`flags` and
/// remaining server TTL `server_ttl` as read with it).
pub(crate) fn keep(flags: u32, server_ttl: i64, now_ms: i64) -> Stamp {
    match deadline(flags, server_ttl, now_ms) {
        Some(deadline) => at_deadline(deadline, now_ms),
        None if server_ttl >= 0 => Stamp {
            flags,
            exptime: server_exptime(server_ttl.max(1).unsigned_abs(), now_ms),
        },
        None => Stamp { flags, exptime: 0 },
    }
}

fn at_deadline(deadline: i64, now_ms: i64) -> Stamp {
    let left = deadline.saturating_sub(now_ms).max(1).unsigned_abs();
    Stamp {
        flags: DEADLINE_FLAG | u32::try_from(deadline.rem_euclid(WRAP)).unwrap_or(0),
        exptime: server_exptime(left.div_ceil(1000) + GRACE_SECS, now_ms),
    }
}

/// memcached's `T` for `secs` from now: relative up to 30 days, else an
/// absolute unix time (capped at the largest the server parses, 2^31 - 1).
fn server_exptime(secs: u64, now_ms: i64) -> u64 {
    if secs <= RELATIVE_LIMIT_SECS {
        return secs;
    }
    let now_secs = now_ms.max(0).unsigned_abs() / 1000;
    now_secs.saturating_add(secs).min(i32::MAX.unsigned_abs().into())
}

/// The deadline (unix ms) of an item read with client flags `flags` and
/// remaining server TTL `server_ttl` (seconds, -1 for none); `None` when
/// the item has no deadline of ours.
pub(crate) fn deadline(flags: u32, server_ttl: i64, now_ms: i64) -> Option<i64> {
    if flags & DEADLINE_FLAG == 0 || server_ttl < 0 {
        return None;
    }
    let low = i64::from(flags & !DEADLINE_FLAG);
    let approx = now_ms.saturating_add(server_ttl.saturating_mul(1000));
    let base = approx - approx.rem_euclid(WRAP) + low;
    [base - WRAP, base, base + WRAP]
        .into_iter()
        .min_by_key(|candidate| (candidate - approx).abs())
}

/// Whether an item read with `flags` and `server_ttl` is still alive.
pub(crate) fn is_live(flags: u32, server_ttl: i64, now_ms: i64) -> bool {
    deadline(flags, server_ttl, now_ms).is_none_or(|deadline| now_ms < deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server would report as remaining TTL `elapsed_ms` after a
    /// write with `stamp`, its clock lagging by `lag_ms`.
    fn server_ttl(stamp: Stamp, elapsed_ms: i64, lag_ms: i64) -> i64 {
        i64::try_from(stamp.exptime).unwrap() - (elapsed_ms - lag_ms).div_euclid(1000)
    }

    #[test]
    fn deadlines_survive_the_round_trip_through_flags() {
        for now in [0, 1_700_000_000_123, 1_700_000_000_999, (1 << 31) - 5, 3 << 31] {
            for ttl_ms in [1, 300, 999, 1000, 1500, 60_000, 86_400_000, 29 * 86_400_000] {
                let stamp = stamp(Some(Duration::from_millis(ttl_ms)), now);
                assert_ne!(stamp.flags & DEADLINE_FLAG, 0);
                assert!(stamp.exptime * 1000 >= ttl_ms + 1000, "{ttl_ms}");
                for (elapsed, lag) in [(0, 0), (0, 999), (250, 600), (ttl_ms as i64 - 1, 0)] {
                    let elapsed = elapsed.min(ttl_ms as i64 - 1);
                    let ttl = server_ttl(stamp, elapsed, lag);
                    let read_at = now + elapsed;
                    assert_eq!(
                        deadline(stamp.flags, ttl, read_at),
                        Some(now + ttl_ms as i64),
                        "{now} {ttl_ms}"
                    );
                    assert!(is_live(stamp.flags, ttl, read_at));
                }
                assert!(!is_live(
                    stamp.flags,
                    server_ttl(stamp, ttl_ms as i64, 0),
                    now + ttl_ms as i64
                ));
            }
        }
    }

    #[test]
    fn sub_second_ttls_are_kept_and_never_zero() {
        let s = stamp(Some(Duration::from_micros(1)), 1000);
        assert_eq!(deadline(s.flags, 2, 1000), Some(1001));
        let s = stamp(Some(Duration::from_millis(1500)), 10_000);
        assert_eq!(s.exptime, 3, "1.5 s rounds up to 2 s, plus one second of margin");
        assert!(is_live(s.flags, 2, 11_499) && !is_live(s.flags, 1, 11_500));
    }

    #[test]
    fn long_ttls_use_the_server_clock_and_absolute_times() {
        let now = 1_700_000_000_000;
        let s = stamp(Some(Duration::from_secs(40 * 86_400)), now);
        assert_eq!(s.flags, 0);
        assert_eq!(s.exptime, 1_700_000_000 + 40 * 86_400);
        let s = stamp(Some(Duration::from_secs(200 * 365 * 86_400)), now);
        assert_eq!(s.exptime, i32::MAX as u64, "capped at what memcached parses");
        for huge in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            assert_eq!(stamp(Some(huge), now).exptime, i32::MAX as u64, "{huge:?}");
        }
        assert_eq!(stamp(None, now), Stamp::FOREVER);
        assert!(is_live(0, 5, now) && is_live(0, -1, now));
    }

    #[test]
    fn keeping_a_stamp_keeps_the_deadline() {
        let now = 1_700_000_000_000;
        let s = stamp(Some(Duration::from_millis(400)), now);
        let kept = keep(s.flags, server_ttl(s, 100, 0), now + 100);
        assert_eq!(kept.flags, s.flags);
        assert_eq!(deadline(kept.flags, 1, now + 200), Some(now + 400));
        assert_eq!(keep(0, -1, now), Stamp::FOREVER);
        assert_eq!(keep(0, 0, now).exptime, 1);
    }
}
