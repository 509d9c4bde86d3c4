//! Counters as Redis stores them: canonical decimal 64-bit integers.
//!
//! Backends without a native counter (memory, and later file) use these
//! helpers so that every backend accepts and rejects exactly what Redis's
//! `INCRBY` does: `"42"` and `"-7"` are counters, `"+1"`, `"007"`, `" 1"`
//! and `"1.5"` are not.

use crate::error::{Error, Result};

/// Parses a stored counter; `None` when the bytes are not a canonical
/// decimal `i64`.
pub fn parse(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let n: i64 = text.parse().ok()?;
    // Reject the forms Redis rejects ("+1", "01", "-0") by round-tripping.
    (n.to_string() == text).then_some(n)
}

/// Adds `delta` to the counter stored as `current` (absent = 0) and returns
/// the new value, or the error Redis would give.
pub fn apply(provider: &'static str, key: &str, current: Option<&[u8]>, delta: i64) -> Result<i64> {
    let value = match current {
        None => 0,
        Some(bytes) => parse(bytes).ok_or_else(|| Error::NotAnInteger {
            provider,
            key: key.to_owned(),
        })?,
    };
    value.checked_add(delta).ok_or_else(|| Error::Overflow {
        provider,
        key: key.to_owned(),
        delta: delta.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_decimals() {
        assert_eq!(parse(b"0"), Some(0));
        assert_eq!(parse(b"42"), Some(42));
        assert_eq!(parse(b"-7"), Some(-7));
        assert_eq!(parse(i64::MAX.to_string().as_bytes()), Some(i64::MAX));
        assert_eq!(parse(i64::MIN.to_string().as_bytes()), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"1.5",
            b"abc",
            b"\0",
            b"9223372036854775808",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn apply_starts_absent_at_zero_and_refuses_overflow() {
        assert_eq!(apply("t", "k", None, 5).unwrap(), 5);
        assert_eq!(apply("t", "k", Some(b"10"), -15).unwrap(), -5);
        assert!(matches!(
            apply("t", "k", Some(b"x"), 1),
            Err(Error::NotAnInteger { .. })
        ));
        let max = i64::MAX.to_string();
        assert!(matches!(
            apply("t", "k", Some(max.as_bytes()), 1),
            Err(Error::Overflow { .. })
        ));
        let min = i64::MIN.to_string();
        assert!(matches!(
            apply("t", "k", Some(min.as_bytes()), -1),
            Err(Error::Overflow { .. })
        ));
    }
}
