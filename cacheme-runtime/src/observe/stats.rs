//! [`Client::stats`](crate::Client::stats): the counters of every store of
//! a client, kept in process for programs without a metrics stack. They
//! count the same events as the metrics (see `docs/observability.md`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::logger::EventKind;

/// The counters of one store since the client was built (or last
/// [`reset`](crate::Client::reset_stats)).
///
/// Counts are of keys, not calls, except `gets`: a `get_m` of ten cold
/// keys counts one get, ten misses and ten fetches.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = cacheme::Client::memory()?;
/// // ... gets through the client's stores ...
/// for (store, stats) in client.stats().iter() {
///     println!("{store}: {:.0}% hits", 100.0 * stats.hit_ratio().unwrap_or(0.0));
/// }
/// # Ok::<(), cacheme::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// `get` and `get_m` calls (that completed: a cancelled call counts
    /// its keys' events, not itself).
    pub gets: u64,
    /// Keys found in the cache (remote: the client's backend).
    pub hits: u64,
    /// Keys found in the in-process local tier.
    pub local_hits: u64,
    /// Keys not found (or not decodable) in the cache.
    pub misses: u64,
    /// Fetches that returned a value.
    pub fetches: u64,
    /// Fetches that returned an error.
    pub fetch_errors: u64,
    /// The time spent in fetches, both kinds (a batch's keys each count
    /// the batch's time: a `fetch_many` of ten keys taking 5 ms adds 50 ms).
    pub fetch_time: Duration,
    /// Stale values served while a refresh runs.
    pub stale: u64,
    /// Refreshes of stale values started.
    pub refreshes: u64,
    /// Callers served by another caller's fetch in this process.
    pub coalesced: u64,
    /// Waits for another process's fetch (ended by any means).
    pub lock_waits: u64,
    /// Waits that gave up and fetched without the lock.
    pub lock_timeouts: u64,
    /// The time spent in those waits.
    pub lock_wait_time: Duration,
    /// Cached values that did not decode.
    pub decode_errors: u64,
    /// Backend failures (timeouts excluded) reported while the breaker was
    /// closed, the one that opened it included.
    pub backend_errors: u64,
    /// Backend steps that did not answer within the cache budget.
    pub backend_timeouts: u64,
    /// How many times the breaker opened on a failure of this store.
    pub breaker_opens: u64,
    /// Fills dropped because too many were pending.
    pub fills_dropped: u64,
}

impl StoreStats {
    /// `hits + local_hits` over every key looked up (`hits + local_hits +
    /// misses`); `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let found = self.hits + self.local_hits;
        let looked = found + self.misses;
        (looked > 0).then(|| found as f64 / looked as f64)
    }
}

/// A snapshot of [`StoreStats`] per store name, from [`Client::stats`](crate::Client::stats).
///
/// Each counter is read atomically, the snapshot as a whole is not: a
/// call in flight may be counted in one counter and not yet in another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub(crate) stores: BTreeMap<&'static str, StoreStats>,
}

impl Stats {
    /// The stats of the store named `store` (`"BookStore"`), if it has
    /// seen any call.
    pub fn store(&self, store: &str) -> Option<&StoreStats> {
        self.stores.get(store)
    }

    /// Every store that has seen a call, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &StoreStats)> + '_ {
        self.stores.iter().map(|(name, stats)| (*name, stats))
    }

    /// All stores added up.
    pub fn total(&self) -> StoreStats {
        let mut total = StoreStats::default();
        for stats in self.stores.values() {
            total.add(stats);
        }
        total
    }
}

impl StoreStats {
    fn add(&mut self, other: &StoreStats) {
        self.gets += other.gets;
        self.hits += other.hits;
        self.local_hits += other.local_hits;
        self.misses += other.misses;
        self.fetches += other.fetches;
        self.fetch_errors += other.fetch_errors;
        self.fetch_time += other.fetch_time;
        self.stale += other.stale;
        self.refreshes += other.refreshes;
        self.coalesced += other.coalesced;
        self.lock_waits += other.lock_waits;
        self.lock_timeouts += other.lock_timeouts;
        self.lock_wait_time += other.lock_wait_time;
        self.decode_errors += other.decode_errors;
        self.backend_errors += other.backend_errors;
        self.backend_timeouts += other.backend_timeouts;
        self.breaker_opens += other.breaker_opens;
        self.fills_dropped += other.fills_dropped;
    }
}

/// How many copies of the counters every hit bumps.
const STRIPES: usize = 8;

/// The counters every hit bumps, one copy per stripe, each on its own
/// cache lines: threads counting hits of one store at once (a hot key)
/// would otherwise take turns owning one line, which showed in a local
/// hit's profile. A snapshot adds the copies up, so counts stay exact.
#[derive(Default)]
#[repr(align(128))]
struct Hot {
    gets: AtomicU64,
    hits: AtomicU64,
    local_hits: AtomicU64,
}

/// This thread's stripe: threads take them in turn as they first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut n = stripe.get();
        if n == usize::MAX {
            n = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(n);
        }
        n
    })
}

/// The live counters of one store.
#[derive(Default)]
pub(crate) struct Counters {
    hot: [Hot; STRIPES],
    misses: AtomicU64,
    fetches: AtomicU64,
    fetch_errors: AtomicU64,
    fetch_nanos: AtomicU64,
    stale: AtomicU64,
    refreshes: AtomicU64,
    coalesced: AtomicU64,
    lock_waits: AtomicU64,
    lock_timeouts: AtomicU64,
    lock_wait_nanos: AtomicU64,
    decode_errors: AtomicU64,
    backend_errors: AtomicU64,
    backend_timeouts: AtomicU64,
    breaker_opens: AtomicU64,
    fills_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn nanos(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether `error` is a cache step that ran out of time.
pub(crate) fn is_timeout(error: Option<&Error>) -> bool {
    matches!(error, Some(Error::Timeout { .. }))
}

impl Counters {
    /// A `get` or `get_m` call.
    pub(crate) fn get(&self) {
        bump(&self.hot().gets, 1);
    }

    /// This thread's copy of the hot counters.
    fn hot(&self) -> &Hot {
        &self.hot[stripe()]
    }

    /// Counts one event.
    pub(crate) fn record(&self, kind: EventKind, error: Option<&Error>, duration: Option<Duration>) {
        match kind {
            EventKind::Hit => bump(&self.hot().hits, 1),
            EventKind::LocalHit => bump(&self.hot().local_hits, 1),
            EventKind::Miss => bump(&self.misses, 1),
            EventKind::Fetch => {
                bump(&self.fetches, 1);
                bump(&self.fetch_nanos, nanos(duration));
            }
            EventKind::FetchError => {
                bump(&self.fetch_errors, 1);
                bump(&self.fetch_nanos, nanos(duration));
            }
            EventKind::Stale => bump(&self.stale, 1),
            EventKind::Refresh => bump(&self.refreshes, 1),
            EventKind::Coalesced => bump(&self.coalesced, 1),
            EventKind::Wait => {
                bump(&self.lock_waits, 1);
                bump(&self.lock_wait_nanos, nanos(duration));
            }
            EventKind::LockTimeout => bump(&self.lock_timeouts, 1),
            EventKind::DecodeError => bump(&self.decode_errors, 1),
            EventKind::BackendError | EventKind::Degraded => {
                if is_timeout(error) {
                    bump(&self.backend_timeouts, 1);
                } else {
                    bump(&self.backend_errors, 1);
                }
                if kind == EventKind::Degraded {
                    bump(&self.breaker_opens, 1);
                }
            }
            EventKind::FillDropped => bump(&self.fills_dropped, 1),
            EventKind::Recovered => {}
        }
    }

    /// The current values; with `reset`, sets each to zero as it is read.
    pub(crate) fn snapshot(&self, reset: bool) -> StoreStats {
        let read = |c: &AtomicU64| {
            if reset {
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            }
        };
        let hot = |counter: fn(&Hot) -> &AtomicU64| self.hot.iter().map(|hot| read(counter(hot))).sum();
        StoreStats {
            gets: hot(|h| &h.gets),
            hits: hot(|h| &h.hits),
            local_hits: hot(|h| &h.local_hits),
            misses: read(&self.misses),
            fetches: read(&self.fetches),
            fetch_errors: read(&self.fetch_errors),
            fetch_time: Duration::from_nanos(read(&self.fetch_nanos)),
            stale: read(&self.stale),
            refreshes: read(&self.refreshes),
            coalesced: read(&self.coalesced),
            lock_waits: read(&self.lock_waits),
            lock_timeouts: read(&self.lock_timeouts),
            lock_wait_time: Duration::from_nanos(read(&self.lock_wait_nanos)),
            decode_errors: read(&self.decode_errors),
            backend_errors: read(&self.backend_errors),
            backend_timeouts: read(&self.backend_timeouts),
            breaker_opens: read(&self.breaker_opens),
            fills_dropped: read(&self.fills_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Op;

    #[test]
    fn events_count_into_their_counters_and_reset_zeroes_them() {
        let counters = Counters::default();
        counters.get();
        counters.record(EventKind::Hit, None, None);
        counters.record(EventKind::Hit, None, None);
        counters.record(EventKind::LocalHit, None, None);
        counters.record(EventKind::Miss, None, None);
        counters.record(EventKind::Fetch, None, Some(Duration::from_millis(3)));
        counters.record(EventKind::FetchError, None, Some(Duration::from_millis(2)));
        counters.record(EventKind::Wait, None, Some(Duration::from_millis(7)));
        counters.record(EventKind::LockTimeout, None, Some(Duration::from_millis(7)));
        let timeout = Error::Timeout {
            op: Op::Get,
            budget: Duration::from_millis(1),
        };
        counters.record(EventKind::BackendError, Some(&timeout), None);
        counters.record(EventKind::Degraded, Some(&timeout), None);
        counters.record(EventKind::Recovered, None, None);
        let stats = counters.snapshot(true);
        assert_eq!(
            stats,
            StoreStats {
                gets: 1,
                hits: 2,
                local_hits: 1,
                misses: 1,
                fetches: 1,
                fetch_errors: 1,
                fetch_time: Duration::from_millis(5),
                lock_waits: 1,
                lock_timeouts: 1,
                lock_wait_time: Duration::from_millis(7),
                backend_timeouts: 2,
                breaker_opens: 1,
                ..StoreStats::default()
            }
        );
        assert_eq!(stats.hit_ratio(), Some(0.75));
        assert_eq!(counters.snapshot(false), StoreStats::default());
        assert_eq!(StoreStats::default().hit_ratio(), None);
    }

    #[test]
    fn hits_counted_on_many_threads_add_up_exactly() {
        let counters = Counters::default();
        // More threads than stripes: some share one.
        std::thread::scope(|scope| {
            for _ in 0..STRIPES + 3 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counters.get();
                        counters.record(EventKind::LocalHit, None, None);
                        counters.record(EventKind::Hit, None, None);
                    }
                });
            }
        });
        let threads = (STRIPES + 3) as u64;
        let stats = counters.snapshot(true);
        assert_eq!(
            (stats.gets, stats.local_hits, stats.hits),
            (threads * 1_000, threads * 1_000, threads * 1_000)
        );
        assert_eq!(
            counters.snapshot(false),
            StoreStats::default(),
            "reset zeroes every stripe"
        );
    }

    #[test]
    fn total_adds_up_every_store() {
        let mut stats = Stats::default();
        let one = StoreStats {
            hits: 2,
            misses: 1,
            ..StoreStats::default()
        };
        stats.stores.insert("A", one.clone());
        stats.stores.insert("B", one);
        assert_eq!(stats.total().hits, 4);
        assert_eq!(stats.total().misses, 2);
        assert_eq!(stats.store("A").map(|s| s.hits), Some(2));
        assert!(stats.store("C").is_none());
        assert_eq!(stats.iter().count(), 2);
    }
}
