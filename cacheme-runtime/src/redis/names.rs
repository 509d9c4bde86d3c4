//! The names stampede protection uses next to a value key, shared by the
//! single-key steps ([`steps`](super::steps)) and the batches
//! ([`lock_batches`](super::lock_batches)).
//!
//! For a value stored at `prefix:key`, the lock is `prefix:{prefix:key}:lock`
//! and the channel `prefix:{prefix:key}:done`: the hash tag is the whole
//! value key, so in a Redis Cluster the three share a slot and "store the
//! value, release the lock if the token is ours, notify" is one script on
//! one node, notified with sharded `SPUBLISH` (plain `PUBLISH` on one
//! server). A key that already carries a hash tag keeps it: the lock and
//! channel are the key plus `:lock` / `:done`. Store keys never collide
//! with these names: they end in `:v{version}`.

use super::RedisBackend;

/// The value key, lock and notification channel of one cache key.
pub(super) struct Names {
    /// The value key, prefix included.
    pub(super) full: String,
    pub(super) lock: String,
    pub(super) channel: String,
}

impl RedisBackend {
    /// The value key, lock and channel of the cache key `key`.
    pub(super) fn names(&self, key: &str) -> Names {
        let full = self.full_key(key);
        let (lock, channel) = companions(&self.key_prefix, &full);
        Names { full, lock, channel }
    }

    /// The channel of the local tiers' announcements for the store named
    /// `store`: one per store and namespace (in a cluster, one shard
    /// channel: a store's announcements reach its shard only).
    pub(super) fn announcements(&self, store: &str) -> String {
        format!("{}cacheme:local:{store}", self.key_prefix)
    }

    /// The command that notifies waiters: `SPUBLISH` (shard channels) in a
    /// cluster, `PUBLISH` on one server.
    pub(super) fn publish(&self) -> &'static str {
        if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }
}

/// The lock and channel names of the value key `full` (prefix included).
fn companions(prefix: &str, full: &str) -> (String, String) {
    if has_hash_tag(full) {
        (format!("{full}:lock"), format!("{full}:done"))
    } else {
        (format!("{prefix}{{{full}}}:lock"), format!("{prefix}{{{full}}}:done"))
    }
}

/// Whether Redis Cluster would hash `key` by a `{tag}` inside it.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companions_share_the_value_keys_slot() {
        assert_eq!(
            companions("app:", "app:book:1:v1"),
            (
                "app:{app:book:1:v1}:lock".to_owned(),
                "app:{app:book:1:v1}:done".to_owned()
            )
        );
        assert_eq!(
            companions("app:", "app:{user:1}:v1"),
            ("app:{user:1}:v1:lock".to_owned(), "app:{user:1}:v1:done".to_owned())
        );
        assert!(!has_hash_tag("a{}b"));
        assert!(has_hash_tag("a{b}c"));
        assert!(!has_hash_tag("a}b{c"));
    }
}
