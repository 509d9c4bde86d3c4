//! The dates a value of a store with `stale_for` or `refresh_after` is
//! stored with, so any process can tell how fresh it is when it reads it:
//! when it was written, until when it is fresh (its TTL), and until when
//! it may still be served by the fail-safe (TTL + `stale_for`; the backend
//! drops it then).
//!
//! Layout: a 4-byte mark (`C1 'c' 'm' 01`; `C1` is never the first byte
//! of MessagePack), then three little-endian `u64` of milliseconds since
//! the Unix epoch (written, fresh until, stale until), then the codec's
//! bytes. A value without the mark (written before the store had these
//! options) is read as fresh until the backend expires it.

use std::time::Duration;

use crate::spec::StoreSpec;

const MARK: [u8; 4] = [0xC1, b'c', b'm', 1];
const HEADER: usize = MARK.len() + 24;

/// A stored value's dates, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dates {
    pub(crate) written: u64,
    pub(crate) fresh_until: u64,
    pub(crate) stale_until: u64,
}

/// How old a stored value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Age {
    /// Within its TTL.
    Fresh,
    /// Within its TTL, and older than the store's `refresh_after`.
    Due,
    /// Past its TTL, within `stale_for`: served only by the fail-safe.
    Stale,
    /// Past both: as good as missing.
    Dead,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Dates {
    /// The dates of a value written `now` by `spec`'s store (its TTL drawn
    /// with the store's jitter).
    pub(crate) fn new(now: u64, spec: &StoreSpec) -> Self {
        Self::lasting(now, spec.write_ttl(), spec)
    }

    /// The dates of a value written `now` that is fresh for `ttl` (then
    /// kept the store's `stale_for`).
    pub(crate) fn lasting(now: u64, ttl: Duration, spec: &StoreSpec) -> Self {
        let fresh_until = now.saturating_add(millis(ttl));
        Dates {
            written: now,
            fresh_until,
            stale_until: fresh_until.saturating_add(spec.stale_for.map_or(0, millis)),
        }
    }

    /// How old the value is at `now`.
    pub(crate) fn age(&self, now: u64, spec: &StoreSpec) -> Age {
        if now >= self.stale_until {
            Age::Dead
        } else if now >= self.fresh_until {
            if spec.stale_for.is_some() {
                Age::Stale
            } else {
                Age::Dead
            }
        } else if spec
            .refresh_after
            .is_some_and(|after| now >= self.written.saturating_add(self.refresh_delay(after)))
        {
            Age::Due
        } else {
            Age::Fresh
        }
    }

    /// How long after it was written this value is due for refresh:
    /// `after`, less up to a tenth of it, drawn from the value's own dates
    /// (so every process agrees, and values written together are not all
    /// refreshed in the same instant).
    fn refresh_delay(&self, after: Duration) -> u64 {
        let after = millis(after);
        let mut mixed = self.written ^ self.fresh_until.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
        mixed ^= mixed >> 33;
        mixed = mixed.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        mixed ^= mixed >> 33;
        after - mixed % (after / 10 + 1)
    }

    /// The dates of a stale value served again by the fail-safe: fresh
    /// for the store's throttle from `now` (never past its stale end), so
    /// the source is not asked for the key meanwhile.
    pub(crate) fn throttled(self, now: u64, spec: &StoreSpec) -> Self {
        Dates {
            written: now,
            fresh_until: now.saturating_add(millis(spec.throttle())).min(self.stale_until),
            stale_until: self.stale_until,
        }
    }

    /// How long the backend should keep the value from `now`: until its
    /// stale end (at least a millisecond).
    pub(crate) fn keep_for(&self, now: u64) -> Duration {
        Duration::from_millis(self.stale_until.saturating_sub(now).max(1))
    }
}

/// `payload` stored with `dates`.
pub(crate) fn wrap(dates: Dates, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(&MARK);
    for date in [dates.written, dates.fresh_until, dates.stale_until] {
        bytes.extend_from_slice(&date.to_le_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

/// The dates and payload of a stored value, if it has dates.
pub(crate) fn open(bytes: &[u8]) -> Option<(Dates, &[u8])> {
    if bytes.len() < HEADER || bytes[..MARK.len()] != MARK {
        return None;
    }
    let date = |i: usize| {
        let at = MARK.len() + 8 * i;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    };
    let dates = Dates {
        written: date(0),
        fresh_until: date(1),
        stale_until: date(2),
    };
    Some((dates, &bytes[HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyTemplate;

    static SPEC: StoreSpec = StoreSpec::new(
        "S",
        KeyTemplate {
            source: "s",
            parts: &[],
        },
        Duration::from_secs(60),
    )
    .stale_for(Some(Duration::from_secs(600)))
    .refresh_after(Some(Duration::from_secs(40)));

    #[test]
    fn dates_round_trip_and_judge_age() {
        let dates = Dates::new(1_000, &SPEC);
        assert_eq!((dates.fresh_until, dates.stale_until), (61_000, 661_000));
        let bytes = wrap(dates, b"payload");
        assert_eq!(open(&bytes), Some((dates, &b"payload"[..])));
        assert_eq!(dates.age(1_000, &SPEC), Age::Fresh);
        assert_eq!(dates.age(36_999, &SPEC), Age::Fresh, "due at most a tenth early");
        assert_eq!(dates.age(41_000, &SPEC), Age::Due);
        assert_eq!(dates.age(61_000, &SPEC), Age::Stale);
        assert_eq!(dates.age(661_000, &SPEC), Age::Dead);
        assert_eq!(dates.keep_for(61_000), Duration::from_secs(600));
    }

    #[test]
    fn refreshes_are_spread_over_a_tenth_of_refresh_after() {
        let after = Duration::from_secs(40);
        let delays: std::collections::HashSet<u64> = (0..100u64)
            .map(|i| Dates::new(i * 7, &SPEC).refresh_delay(after))
            .collect();
        assert!(delays.iter().all(|d| (36_000..=40_000).contains(d)), "{delays:?}");
        assert!(delays.len() > 50, "values written together are spread: {delays:?}");
    }

    #[test]
    fn a_throttled_value_is_fresh_for_the_throttle_never_past_its_stale_end() {
        let dates = Dates::new(0, &SPEC).throttled(100_000, &SPEC);
        assert_eq!(dates.fresh_until, 105_000);
        assert_eq!(dates.age(104_999, &SPEC), Age::Fresh);
        let late = Dates::new(0, &SPEC).throttled(659_000, &SPEC);
        assert_eq!(late.fresh_until, 660_000);
    }

    #[test]
    fn values_without_dates_and_short_ones_are_not_opened() {
        assert_eq!(open(b"plain"), None);
        assert_eq!(open(&MARK), None);
        assert_eq!(
            open(&[
                0xC1, b'c', b'm', 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]),
            None
        );
    }
}
