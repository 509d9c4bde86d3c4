//! From a cache key to a memcached key: `prefix:generation:key`, with keys
//! memcached cannot carry replaced by a hash.
//!
//! memcached keys are at most 250 bytes of printable ASCII without spaces.
//! A cache key that fits (and does not start with `#`) is kept readable;
//! any other (too long, whitespace, control characters, non-ASCII, or a
//! leading `#`) becomes `#` + the SHA-256 of the key in hex. The mapping is
//! deterministic, so every process finds the same item, and two different
//! keys never share an item (a readable key cannot start with `#`, and
//! SHA-256 does not collide in practice).
//!
//! The prefix may not contain `:` ([`check_prefix`], shared by every
//! backend) and the generation is decimal, so the first two segments of a
//! memcached key always name its cache and its generation unambiguously,
//! and `prefix:generation` (the counter itself) cannot be a data key.
//!
//! [`check_prefix`]: crate::config::check_prefix

use sha2::{Digest, Sha256};

/// The longest key memcached accepts.
pub(crate) const MAX_KEY: usize = 250;

/// Marks a hashed key.
const HASHED: char = '#';

/// The memcached key of cache key `key` in generation `generation`.
pub(crate) fn data_key(prefix: &str, generation: u64, key: &str) -> String {
    let mut out = format!("{prefix}:{generation}:");
    let readable = !key.starts_with(HASHED) && key.bytes().all(is_key_byte) && out.len() + key.len() <= MAX_KEY;
    if readable {
        out.push_str(key);
    } else {
        out.push(HASHED);
        push_hex(&mut out, &Sha256::digest(key.as_bytes()));
    }
    out
}

/// The key of a cache's generation counter.
pub(crate) fn generation_key(prefix: &str) -> String {
    format!("{prefix}:generation")
}

/// Printable ASCII other than space: what a memcached key may hold.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_stay_readable() {
        assert_eq!(data_key("app", 7, "user:42"), "app:7:user:42");
        assert_eq!(data_key("app", 7, ""), "app:7:");
        let longest = "x".repeat(MAX_KEY - "app:7:".len());
        assert_eq!(data_key("app", 7, &longest).len(), MAX_KEY);
    }

    #[test]
    fn unsafe_keys_are_hashed_deterministically_and_distinctly() {
        let keys = ["a b", "a\nb", "a\tb", "ключ", "🦀", "#x", "a\0b", &"x".repeat(MAX_KEY)];
        let mapped: Vec<String> = keys.iter().map(|k| data_key("app", 1, k)).collect();
        for (key, wire) in keys.iter().zip(&mapped) {
            assert!(wire.starts_with("app:1:#"), "{key:?} -> {wire}");
            assert_eq!(wire.len(), "app:1:#".len() + 64);
            assert!(wire.bytes().all(is_key_byte));
            assert_eq!(*wire, data_key("app", 1, key), "deterministic");
        }
        let mut unique = mapped.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), mapped.len());
        // A readable key can never look like a hashed one.
        assert_ne!(data_key("app", 1, "#x"), "app:1:#x");
        assert_ne!(data_key("app", 1, "a b"), data_key("app", 2, "a b"));
    }

    #[test]
    fn the_longest_prefix_leaves_room_for_a_hashed_key() {
        let longest = "p".repeat(crate::config::MAX_PREFIX);
        assert!(data_key(&longest, u64::MAX, "a b").len() <= MAX_KEY);
        assert_eq!(generation_key("app"), "app:generation");
    }
}
