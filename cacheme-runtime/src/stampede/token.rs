//! Lock tokens: unique per lock attempt across processes and machines.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh 128-bit token in hex: two hashes (randomly keyed per process by
/// std's `RandomState`) of the pid, the time and a process-wide counter.
pub(crate) fn new_token() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let half = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(nanos);
        h.write_u64(n);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_distinct() {
        let mut seen: Vec<String> = (0..1000).map(|_| super::new_token()).collect();
        assert!(seen.iter().all(|t| t.len() == 32));
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
    }
}
