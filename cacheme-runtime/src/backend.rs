//! The backend layer: one dyn-compatible trait over bytes that every provider
//! (memory, Redis, and any registered by users) implements.
//!
//! Keys are the cache's own keys (`"user:42"`); a backend that shares its
//! server with others (Redis) adds its configured prefix itself, so the
//! layers above never see it. Values are opaque bytes, except for counters
//! (`incr_by`), which are stored as decimal integers as Redis stores them.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Op, Result};
pub use crate::future::BoxFuture;
use crate::stampede::Coordination;

/// How long a written value lives.
///
/// `None` in [`Backend::set`] means "no expiry". A `Duration` below one
/// millisecond is rounded *up* to one millisecond by backends whose
/// resolution is milliseconds; it is never rounded down to zero or replaced
/// by a default. A `Duration` above [`MAX_TTL`] (up to `Duration::MAX`)
/// is clamped to [`MAX_TTL`] by the built-in backends.
pub type Ttl = Option<Duration>;

/// The longest TTL the built-in backends keep: 100 years (of 365 days).
///
/// A longer TTL, up to `Duration::MAX`, is clamped to this, never an error
/// or a panic: to a cache it means "practically forever", and no clock or
/// server can represent every `Duration`. memcached keeps such a value
/// until the latest time it can express (January 2038, a 32-bit unix time).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `ttl`, clamped to [`MAX_TTL`]: what a built-in backend stores.
pub(crate) fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.min(MAX_TTL)
}

/// Decides, key by key, what [`Backend::delete_matching`] deletes.
pub type KeyFilter<'a> = dyn Fn(&str) -> bool + Send + Sync + 'a;

/// Receives, key by key, what [`Backend::scan_keys`] finds.
pub type KeyVisitor<'a> = dyn FnMut(&str) + Send + 'a;

/// The most keys one backend command carries: batches (`get_many`, a
/// `get_m` or pipeline's reads, stampede locks, fills and lock renewals)
/// are cut into commands of at most this many keys, so a batch of 100,000
/// keys never blocks a single-threaded Redis with one huge command nor
/// waits for one huge reply. On one Redis server the commands of a batch
/// still go out together, as one pipeline; in a cluster and on memcached
/// each node or server gets its own, sent concurrently.
pub const MAX_KEYS_PER_COMMAND: usize = 500;

/// A cache backend: storage for bytes under string keys.
///
/// Implement this to add a provider and make it available by name with
/// [`register`](crate::register). All methods take `&self` and may be
/// called concurrently.
///
/// # Contract (checked by the conformance suite)
///
/// - `get` of a missing or expired key is `Ok(None)`; an error of the
///   backend is `Err`, never `Ok(None)`.
/// - `get_many` returns one entry per requested key, in order; a missing key
///   is `None` in its place.
/// - `set` with `Some(ttl)` expires after `ttl` (sub-second TTLs included);
///   with `None` it never expires. Any `Duration` is accepted: one beyond
///   what the backend can represent is clamped (see [`MAX_TTL`]), never a
///   panic.
/// - `exists` is `false` once a key has expired.
/// - `incr_by` treats an absent key as 0 and stores the result as a decimal
///   integer; a non-integer value gives [`Error::NotAnInteger`] and an
///   overflow [`Error::Overflow`], leaving the value unchanged. Concurrent
///   calls never lose an update. The TTL of an existing counter is kept.
/// - `clear` removes every key of this cache and nothing else.
///
/// # Example: a provider of your own
///
/// ```
/// use cacheme::{Backend, BoxFuture, Result, Ttl};
///
/// /// A backend that stores nothing (every get misses).
/// #[derive(Debug)]
/// struct Blackhole;
///
/// impl Backend for Blackhole {
///     fn provider(&self) -> &'static str { "blackhole" }
///     fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
///         Box::pin(async { Ok(None) })
///     }
///     fn set<'a>(&'a self, _key: &'a str, _value: &'a [u8], _ttl: Ttl) -> BoxFuture<'a, Result<()>> {
///         Box::pin(async { Ok(()) })
///     }
///     fn delete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<bool>> {
///         Box::pin(async { Ok(false) })
///     }
///     fn exists<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<bool>> {
///         Box::pin(async { Ok(false) })
///     }
///     fn incr_by<'a>(&'a self, _key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
///         Box::pin(async move { Ok(delta) })
///     }
///     fn clear(&self) -> BoxFuture<'_, Result<()>> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// ```
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// The provider's name as used in errors and logs (`"memory"`, `"redis"`).
    fn provider(&self) -> &'static str;

    /// Reads one key. A missing or expired key is `Ok(None)`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;

    /// Reads many keys, keeping their order; a missing key is `None` in its
    /// place. The default calls [`get`](Backend::get) for each key in turn;
    /// providers with a batch read (MGET, pipelines) override it, sending
    /// at most [`MAX_KEYS_PER_COMMAND`] keys per command.
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get(key).await?);
            }
            Ok(out)
        })
    }

    /// Writes `value` under `key`, expiring after `ttl` (or never).
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>>;

    /// Removes `key`; `Ok(true)` when it existed.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Whether `key` holds a value that has not expired.
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Adds `delta` (which may be negative) to the decimal counter at `key`
    /// and returns the new value. See the trait docs for the contract.
    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>>;

    /// Removes every key of this cache, and only those.
    fn clear(&self) -> BoxFuture<'_, Result<()>>;

    /// Deletes every key that matches `glob` and passes `filter`, and
    /// returns how many were deleted.
    ///
    /// `glob` is a Redis `SCAN MATCH` pattern over this cache's keys
    /// (without any namespace prefix the backend adds); it may match more
    /// than wanted, so each candidate is checked with `filter`. Backends work
    /// in batches and never hold every key of the cache at once. This is how
    /// a typed store's `invalidate_all` removes one version of one store.
    /// The default reports [`Error::Unsupported`].
    fn delete_matching<'a>(&'a self, glob: &'a str, filter: &'a KeyFilter<'a>) -> BoxFuture<'a, Result<u64>> {
        let _ = (glob, filter);
        Box::pin(async move { Err(unsupported(self.provider(), Op::DeleteMatching)) })
    }

    /// Whether [`delete_matching`](Backend::delete_matching) works here.
    /// Typed stores ask once, when a client is built: where it does not
    /// (the default, and memcached, which cannot list its keys), their
    /// `invalidate_all` uses a per-store generation counter instead (see
    /// the `cache_store` docs). Override it together with `delete_matching`.
    fn supports_delete_matching(&self) -> bool {
        false
    }

    /// The longest a read of one key ([`get`](Backend::get)) can take
    /// before the backend fails it itself, if it bounds its commands (the
    /// default: it does not say). Typed stores arm a timer of their own for
    /// the read only when this is longer than their `cache_timeout`, so a
    /// backend that already bounds its commands costs one timer per read,
    /// not two.
    fn read_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// The backend as [`Any`](std::any::Any), so the runtime recognises
    /// its own memory backend (typed hits there skip decoding). Other
    /// backends keep the default.
    #[doc(hidden)]
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The backend inside the runtime's metering wrapper (feature
    /// `metrics`), so a cache made from another's backend does not time
    /// it twice and one can opt out. Other backends keep the default.
    #[doc(hidden)]
    #[cfg(feature = "metrics")]
    fn unmetered(&self) -> Option<&std::sync::Arc<dyn Backend>> {
        None
    }

    /// How this backend protects typed stores from stampedes across
    /// processes (see [`Coordination`]). The default coordinates inside the
    /// process only, which is all a backend no other process sees needs.
    fn coordination(&self) -> Coordination {
        Coordination::InProcess
    }

    /// Writes `value` only if `key` is absent; `Ok(true)` when written.
    ///
    /// This is the lock primitive of stampede protection. Providers that
    /// cannot do it atomically keep the default, which reports
    /// [`Error::Unsupported`].
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        let _ = (key, value, ttl);
        Box::pin(async move { Err(unsupported(self.provider(), Op::SetIfAbsent)) })
    }

    /// Removes `key` only if it holds exactly `expected`; `Ok(true)` when
    /// removed. Used to release a lock only by its owner. The default
    /// reports [`Error::Unsupported`].
    fn delete_if_equals<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        let _ = (key, expected);
        Box::pin(async move { Err(unsupported(self.provider(), Op::DeleteIfEquals)) })
    }

    /// How long `key` has left to live: `Ok(None)` when it is missing or
    /// expired, `Ok(Some(None))` when it never expires.
    ///
    /// Optional, for tools (`cargo cacheme get`); the default reports
    /// [`Error::Unsupported`].
    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Ttl>>> {
        let _ = key;
        Box::pin(async move { Err(unsupported(self.provider(), Op::Ttl)) })
    }

    /// Calls `visit` with every live key that matches `glob` (a Redis
    /// `SCAN MATCH` pattern over this cache's keys, without the
    /// backend's prefix) and returns how many keys it visited.
    ///
    /// Like [`delete_matching`](Backend::delete_matching) it works in
    /// batches and never holds every key at once. `glob` narrows the walk
    /// where the backend can; a backend may also visit keys outside it, so
    /// check each key. As with Redis `SCAN`, a key written or removed
    /// during the walk may be missed or visited twice.
    ///
    /// Optional, for tools (`cargo cacheme stats`); the default reports
    /// [`Error::Unsupported`].
    fn scan_keys<'a>(&'a self, glob: &'a str, visit: &'a mut KeyVisitor<'a>) -> BoxFuture<'a, Result<u64>> {
        let _ = (glob, visit);
        Box::pin(async move { Err(unsupported(self.provider(), Op::ScanKeys)) })
    }

    /// Bytes of memory the backend's server says it uses (Redis
    /// `used_memory`, summed over a cluster's masters). This is the whole
    /// server's figure, not only this cache's keys.
    ///
    /// Optional, for tools (`cargo cacheme stats`); the default reports
    /// [`Error::Unsupported`].
    fn memory_used(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move { Err(unsupported(self.provider(), Op::MemoryUsed)) })
    }
}

fn unsupported(provider: &'static str, op: Op) -> Error {
    Error::Unsupported { provider, op }
}
