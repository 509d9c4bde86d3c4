//! The memory backend: an in-process moka cache with per-entry TTL and a
//! capacity bound. The embedded default; no server.
//!
//! moka's synchronous cache, called from async code: nothing in it waits
//! on I/O or on another task (no eviction listener; the per-key compute
//! closures below are a few instructions), and a hit is a plain call: no
//! future to build and poll, 12-19% less than moka's async `get` under
//! the seed's load (BENCHMARKS.md, "the memory backend on moka's sync
//! cache").
//!
//! Each entry carries its own deadline, checked on every read (by moka,
//! which is handed the deadline, or against a test's clock), so a
//! sub-second TTL is exact to the read and `exists` is false the moment a
//! key expires; moka's timer wheel then frees the memory. Counters are
//! updated with moka's per-key atomic compute, so concurrent `incr`s never
//! lose an update.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::ops::compute::Op as Compute;
use moka::sync::Cache as Moka;

use crate::backend::{Backend, BoxFuture, KeyFilter, KeyVisitor, Ttl, clamp_ttl};
use crate::clock::Clock;
use crate::config::ProviderConfig;
use crate::counter;
use crate::error::Result;
use crate::keeping::Kept;
use crate::testing::TestClock;

const PROVIDER: &str = "memory";

/// Entries kept when no `capacity` is configured.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// How keys are hashed: foldhash, randomly seeded per map (a key hashes
/// several times faster than with std's SipHash, and seeds differ between
/// processes, so keys cannot be chosen to collide in advance).
type Hasher = foldhash::fast::RandomState;

#[derive(Clone)]
struct Entry {
    value: Arc<Stored>,
    expires_at: Option<Instant>,
}

/// An entry's bytes, and the value they decode to once a typed store has
/// read them (so its next hits skip decoding; see `keeping`). A write
/// replaces the whole entry, so the decoded value never outlives its bytes.
pub(crate) struct Stored {
    bytes: Box<[u8]>,
    decoded: OnceLock<Kept>,
}

impl Stored {
    /// The stored bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The value the bytes decode to, once a typed store has decoded them.
    pub(crate) fn decoded(&self) -> &OnceLock<Kept> {
        &self.decoded
    }
}

impl Entry {
    fn new(value: &[u8], ttl: Ttl, now: Instant) -> Self {
        // Clamped, so the addition cannot overflow; were it to, the entry
        // would simply not expire.
        Self::until(value, ttl.and_then(|ttl| now.checked_add(clamp_ttl(ttl))))
    }

    fn until(value: &[u8], expires_at: Option<Instant>) -> Self {
        Entry {
            value: Arc::new(Stored {
                bytes: value.into(),
                decoded: OnceLock::new(),
            }),
            expires_at,
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|deadline| now < deadline)
    }
}

/// Tells moka when to evict an entry: at its own deadline.
struct Deadline;

impl Expiry<String, Entry> for Deadline {
    fn expire_after_create(&self, _key: &String, entry: &Entry, now: Instant) -> Option<Duration> {
        entry.expires_at.map(|deadline| deadline.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        entry.expires_at.map(|deadline| deadline.saturating_duration_since(now))
    }
}

/// The in-process backend (provider name `memory`).
///
/// Configuration (JSON or URL query): `capacity` (entries, default
/// [`DEFAULT_CAPACITY`]) and Beego's `interval` (seconds between sweeps of
/// expired entries; 0 or absent leaves sweeping to moka's own housekeeping,
/// which runs as the cache is used).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use cacheme::Cache;
///
/// let cache = Cache::new("memory", r#"{"interval":60,"capacity":10000}"#).await.unwrap();
/// let same_thing = Cache::open("memory://?capacity=10000&interval=60").await.unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    entries: Arc<Moka<String, Entry, Hasher>>,
    capacity: u64,
    clock: Clock,
}

impl MemoryBackend {
    /// A memory backend holding up to `capacity` entries.
    pub fn with_capacity(capacity: u64) -> Self {
        let entries = Moka::builder()
            .max_capacity(capacity)
            .expire_after(Deadline)
            .build_with_hasher(Hasher::default());
        MemoryBackend {
            entries: Arc::new(entries),
            capacity,
            clock: Clock::default(),
        }
    }

    /// The same backend, judging expiry by `clock` (a test's) rather than
    /// the system's: an entry expires when the test has moved the clock
    /// past its TTL.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use cacheme::testing::TestClock;
    /// use cacheme::{Backend, MemoryBackend};
    /// use std::time::Duration;
    ///
    /// let clock = TestClock::new();
    /// let memory = MemoryBackend::with_capacity(100).with_clock(&clock);
    /// memory.set("k", b"v", Some(Duration::from_secs(60))).await.unwrap();
    /// clock.advance(Duration::from_secs(61));
    /// assert_eq!(memory.get("k").await.unwrap(), None);
    /// # });
    /// ```
    pub fn with_clock(mut self, clock: &TestClock) -> Self {
        self.clock = Clock::driven(clock);
        self
    }

    /// Builds the backend from `capacity` and `interval` (see the type docs).
    pub async fn from_config(config: ProviderConfig) -> Result<Self> {
        config.reject_unknown(&["capacity", "interval"])?;
        let capacity = config.unsigned("capacity")?.unwrap_or(DEFAULT_CAPACITY);
        if capacity == 0 {
            return Err(config.error("capacity", "must be at least 1"));
        }
        let backend = Self::with_capacity(capacity);
        if let Some(seconds) = config.unsigned("interval")?.filter(|&s| s > 0) {
            backend.sweep_every(Duration::from_secs(seconds));
        }
        Ok(backend)
    }

    /// Removes expired entries every `interval` in a background task that
    /// ends when the backend is dropped. Needs a Tokio runtime; without one
    /// nothing is spawned (moka still evicts as the cache is used).
    pub fn sweep_every(&self, interval: Duration) {
        crate::sweeper::every(
            PROVIDER,
            interval,
            Arc::downgrade(&self.entries),
            |entries| async move {
                entries.run_pending_tasks();
            },
        );
    }

    fn live(&self, key: &str) -> Option<Entry> {
        let entry = self.entries.get(key)?;
        // On the system clock moka has checked the entry's deadline
        // against its own reading of that clock (`Deadline` handed it the
        // deadline): a second reading would only cost time. A test's clock
        // is ours alone to check.
        if self.clock.is_system() {
            return Some(entry);
        }
        entry.is_live(self.clock.now()).then_some(entry)
    }

    /// The live entry at `key`, shared (no copy of its bytes).
    pub(crate) fn stored(&self, key: &str) -> Option<Arc<Stored>> {
        self.live(key).map(|e| e.value)
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("capacity", &self.capacity)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl Backend for MemoryBackend {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { Ok(self.live(key).map(|e| e.value.bytes.to_vec())) })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.entries
                .insert(key.to_owned(), Entry::new(value, ttl, self.clock.now()));
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let removed = self.entries.remove(key);
            Ok(removed.is_some_and(|e| e.is_live(self.clock.now())))
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.live(key).is_some()) })
    }

    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let mut result = 0;
            self.entries.entry_by_ref(key).and_try_compute_with(|current| {
                let live = current.map(|e| e.into_value()).filter(|e| e.is_live(self.clock.now()));
                counter::apply(PROVIDER, key, live.as_ref().map(|e| e.value.bytes()), delta).map(|n| {
                    result = n;
                    // The counter keeps the deadline it had, as Redis's INCRBY keeps the TTL.
                    Compute::Put(Entry::until(n.to_string().as_bytes(), live.and_then(|e| e.expires_at)))
                })
            })?;
            Ok(result)
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.entries.invalidate_all();
            self.entries.run_pending_tasks();
            Ok(())
        })
    }

    fn supports_delete_matching(&self) -> bool {
        true
    }

    /// Walks the entries once; only the matching keys (shared pointers to
    /// keys already in memory) are collected before they are removed.
    fn delete_matching<'a>(&'a self, _glob: &'a str, filter: &'a KeyFilter<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let now = self.clock.now();
            let doomed: Vec<Arc<String>> = self
                .entries
                .iter()
                .filter(|(key, entry)| entry.is_live(now) && filter(key))
                .map(|(key, _)| key)
                .collect();
            let mut removed = 0;
            for key in doomed {
                removed += u64::from(self.entries.remove(key.as_str()).is_some());
            }
            Ok(removed)
        })
    }

    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Ttl>>> {
        Box::pin(async move {
            let now = self.clock.now();
            Ok(self
                .live(key)
                .map(|e| e.expires_at.map(|deadline| deadline.saturating_duration_since(now))))
        })
    }

    /// Visits every live entry (moka has no pattern index; `glob` is not
    /// used, callers check each key).
    fn scan_keys<'a>(&'a self, _glob: &'a str, visit: &'a mut KeyVisitor<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let now = self.clock.now();
            let mut visited = 0;
            for (key, entry) in self.entries.iter() {
                if entry.is_live(now) {
                    visit(&key);
                    visited += 1;
                }
            }
            Ok(visited)
        })
    }

    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut written = false;
            self.entries.entry_by_ref(key).and_compute_with(|current| {
                let taken = current.is_some_and(|e| e.value().is_live(self.clock.now()));
                written = !taken;
                if taken {
                    Compute::Nop
                } else {
                    Compute::Put(Entry::new(value, ttl, self.clock.now()))
                }
            });
            Ok(written)
        })
    }

    fn delete_if_equals<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut removed = false;
            self.entries.entry_by_ref(key).and_compute_with(|current| {
                removed =
                    current.is_some_and(|e| e.value().is_live(self.clock.now()) && e.value().value.bytes() == expected);
                if removed { Compute::Remove } else { Compute::Nop }
            });
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ttl_of_any_duration_is_clamped_not_a_panic() {
        let memory = MemoryBackend::with_capacity(10);
        memory.set("k", b"v", Some(Duration::MAX)).await.unwrap();
        assert!(memory.set_if_absent("l", b"t", Some(Duration::MAX)).await.unwrap());
        let left = memory.ttl("k").await.unwrap().unwrap().unwrap();
        assert!(left <= crate::MAX_TTL && left > crate::MAX_TTL / 2, "{left:?}");
        assert_eq!(memory.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[tokio::test]
    async fn ttl_and_scan_keys_see_only_live_entries() {
        let clock = TestClock::new();
        let memory = MemoryBackend::with_capacity(100).with_clock(&clock);
        memory.set("a", b"1", Some(Duration::from_secs(60))).await.unwrap();
        memory.set("b", b"2", None).await.unwrap();
        memory.set("gone", b"3", Some(Duration::from_millis(1))).await.unwrap();
        clock.advance(Duration::from_millis(5));

        let left = memory.ttl("a").await.unwrap().unwrap().unwrap();
        assert_eq!(left, Duration::from_millis(59_995));
        assert_eq!(memory.ttl("b").await.unwrap(), Some(None), "no expiry");
        assert_eq!(memory.ttl("gone").await.unwrap(), None, "expired is missing");
        assert_eq!(memory.ttl("never").await.unwrap(), None);

        let mut seen = Vec::new();
        let visited = memory
            .scan_keys("*", &mut |key| seen.push(key.to_owned()))
            .await
            .unwrap();
        seen.sort();
        assert_eq!((visited, seen), (2, vec!["a".to_owned(), "b".to_owned()]));
    }
}
