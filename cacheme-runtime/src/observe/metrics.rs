//! The metrics of a store (feature `metrics`), through the `metrics`
//! facade: whatever recorder the program installed (Prometheus,
//! OpenTelemetry, ...) receives them. Handles are registered once per
//! store and client, on its first event, with the recorder installed at
//! that time: install it before the first call. Names follow
//! OpenTelemetry's conventions (dotted, durations in seconds); the table
//! is in `docs/observability.md`.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit, counter, gauge, histogram};

use super::calls::{Call, Ended, Outcome};
use super::stats::is_timeout;
use crate::error::Error;
use crate::logger::EventKind;

/// Every metric name, described once to the recorder.
pub(crate) mod names {
    pub(crate) const GETS: &str = "cacheme.gets";
    pub(crate) const HITS: &str = "cacheme.hits";
    pub(crate) const MISSES: &str = "cacheme.misses";
    pub(crate) const FETCHES: &str = "cacheme.fetches";
    pub(crate) const FETCH_DURATION: &str = "cacheme.fetch.duration";
    pub(crate) const FETCH_ACTIVE: &str = "cacheme.fetch.active";
    pub(crate) const STALE: &str = "cacheme.stale";
    pub(crate) const REFRESHES: &str = "cacheme.refreshes";
    pub(crate) const COALESCED: &str = "cacheme.coalesced";
    pub(crate) const LOCK_WAITS: &str = "cacheme.lock.waits";
    pub(crate) const LOCK_TIMEOUTS: &str = "cacheme.lock.timeouts";
    pub(crate) const LOCK_WAIT_DURATION: &str = "cacheme.lock.wait.duration";
    pub(crate) const LOCK_WAIT_ACTIVE: &str = "cacheme.lock.wait.active";
    pub(crate) const DECODE_ERRORS: &str = "cacheme.decode.errors";
    pub(crate) const BACKEND_ERRORS: &str = "cacheme.backend.errors";
    pub(crate) const BREAKER_OPENS: &str = "cacheme.breaker.opens";
    pub(crate) const FILLS_DROPPED: &str = "cacheme.fills.dropped";
    pub(crate) const OPERATION_DURATION: &str = "cacheme.operation.duration";
    pub(crate) const LOCAL_ENTRIES: &str = "cacheme.local.entries";
    pub(crate) const BACKEND_OPERATION_DURATION: &str = "cacheme.backend.operation.duration";
}

/// Describes every metric to the current recorder.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(GETS, Unit::Count, "get and get_m calls");
    describe_counter!(HITS, Unit::Count, "keys found in the cache (tier: remote, local)");
    describe_counter!(MISSES, Unit::Count, "keys not found in the cache");
    describe_counter!(FETCHES, Unit::Count, "fetcher calls (result: ok, error)");
    describe_histogram!(FETCH_DURATION, Unit::Seconds, "fetcher call duration");
    describe_gauge!(FETCH_ACTIVE, Unit::Count, "fetches in flight");
    describe_counter!(STALE, Unit::Count, "stale values served");
    describe_counter!(REFRESHES, Unit::Count, "refreshes of stale values started");
    describe_counter!(
        COALESCED,
        Unit::Count,
        "callers (a batch: keys) served by another caller's fetch in the process"
    );
    describe_counter!(LOCK_WAITS, Unit::Count, "waits for another process's fetch");
    describe_counter!(
        LOCK_TIMEOUTS,
        Unit::Count,
        "waits that gave up and fetched without the lock"
    );
    describe_histogram!(LOCK_WAIT_DURATION, Unit::Seconds, "wait for another process's fetch");
    describe_gauge!(
        LOCK_WAIT_ACTIVE,
        Unit::Count,
        "callers waiting for another process's fetch"
    );
    describe_counter!(DECODE_ERRORS, Unit::Count, "cached values that did not decode");
    describe_counter!(BACKEND_ERRORS, Unit::Count, "backend failures (kind: error, timeout)");
    describe_counter!(BREAKER_OPENS, Unit::Count, "circuit breaker openings");
    describe_counter!(FILLS_DROPPED, Unit::Count, "fills dropped: too many pending");
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "duration of a store call by operation and outcome"
    );
    describe_gauge!(LOCAL_ENTRIES, Unit::Count, "values held by the local tier");
}

/// The metric handles of one store on one client.
pub(crate) struct StoreMetrics {
    store: &'static str,
    backend: &'static str,
    gets: [Counter; 2],
    hits: Counter,
    local_hits: Counter,
    misses: Counter,
    fetches: Counter,
    fetch_errors: Counter,
    fetch_duration: Histogram,
    fetch_error_duration: Histogram,
    fetch_active: Gauge,
    stale: Counter,
    refreshes: Counter,
    coalesced: Counter,
    lock_waits: Counter,
    lock_timeouts: Counter,
    lock_wait_duration: Histogram,
    lock_wait_active: Gauge,
    decode_errors: Counter,
    backend_errors: Counter,
    backend_timeouts: Counter,
    breaker_opens: Counter,
    fills_dropped: Counter,
    local_entries: OnceLock<Gauge>,
    /// `cacheme.operation.duration` by operation and outcome, registered
    /// on first use (most pairs never occur).
    durations: [[OnceLock<Histogram>; Outcome::COUNT]; Call::COUNT],
    /// Whether a hit served in process has been timed yet.
    hit_timed: AtomicBool,
}

impl StoreMetrics {
    pub(crate) fn new(store: &'static str, backend: &'static str) -> Self {
        use names::*;
        describe();
        let labels = [("store", store), ("backend", backend)];
        let with = |key: &'static str, value: &'static str| [("store", store), ("backend", backend), (key, value)];
        StoreMetrics {
            store,
            backend,
            gets: [
                counter!(GETS, &with("operation", "get")),
                counter!(GETS, &with("operation", "get_m")),
            ],
            hits: counter!(HITS, &with("tier", "remote")),
            local_hits: counter!(HITS, &with("tier", "local")),
            misses: counter!(MISSES, &labels),
            fetches: counter!(FETCHES, &with("result", "ok")),
            fetch_errors: counter!(FETCHES, &with("result", "error")),
            fetch_duration: histogram!(FETCH_DURATION, &with("result", "ok")),
            fetch_error_duration: histogram!(FETCH_DURATION, &with("result", "error")),
            fetch_active: gauge!(FETCH_ACTIVE, &labels),
            stale: counter!(STALE, &labels),
            refreshes: counter!(REFRESHES, &labels),
            coalesced: counter!(COALESCED, &labels),
            lock_waits: counter!(LOCK_WAITS, &labels),
            lock_timeouts: counter!(LOCK_TIMEOUTS, &labels),
            lock_wait_duration: histogram!(LOCK_WAIT_DURATION, &labels),
            lock_wait_active: gauge!(LOCK_WAIT_ACTIVE, &labels),
            decode_errors: counter!(DECODE_ERRORS, &labels),
            backend_errors: counter!(BACKEND_ERRORS, &with("kind", "error")),
            backend_timeouts: counter!(BACKEND_ERRORS, &with("kind", "timeout")),
            breaker_opens: counter!(BREAKER_OPENS, &labels),
            fills_dropped: counter!(FILLS_DROPPED, &labels),
            local_entries: OnceLock::new(),
            durations: Default::default(),
            hit_timed: AtomicBool::new(false),
        }
    }

    /// A `get` or `get_m` call.
    pub(crate) fn get(&self, op: Call) {
        self.gets[usize::from(op == Call::GetMany)].increment(1);
    }

    /// Records one event.
    pub(crate) fn record(&self, kind: EventKind, error: Option<&Error>, duration: Option<Duration>) {
        let seconds = duration.unwrap_or_default().as_secs_f64();
        match kind {
            EventKind::Hit => self.hits.increment(1),
            EventKind::LocalHit => self.local_hits.increment(1),
            EventKind::Miss => self.misses.increment(1),
            EventKind::Fetch => {
                self.fetches.increment(1);
                self.fetch_duration.record(seconds);
            }
            EventKind::FetchError => {
                self.fetch_errors.increment(1);
                self.fetch_error_duration.record(seconds);
            }
            EventKind::Stale => self.stale.increment(1),
            EventKind::Refresh => self.refreshes.increment(1),
            EventKind::Coalesced => self.coalesced.increment(1),
            EventKind::Wait => {
                self.lock_waits.increment(1);
                self.lock_wait_duration.record(seconds);
            }
            EventKind::LockTimeout => self.lock_timeouts.increment(1),
            EventKind::DecodeError => self.decode_errors.increment(1),
            EventKind::BackendError | EventKind::Degraded => {
                if is_timeout(error) {
                    self.backend_timeouts.increment(1);
                } else {
                    self.backend_errors.increment(1);
                }
                if kind == EventKind::Degraded {
                    self.breaker_opens.increment(1);
                }
            }
            EventKind::FillDropped => self.fills_dropped.increment(1),
            EventKind::Recovered => {}
        }
    }

    /// A call ended: its duration is recorded, except for hits served in
    /// process, of which only the store's first and one in `one_in` per
    /// thread are (a histogram sample costs more than such a hit).
    pub(crate) fn call(&self, op: Call, mut ended: Ended, one_in: u32) {
        if ended.in_process && !self.sample_hit(one_in) {
            return;
        }
        let Some(slot) = self.durations[op as usize].get(ended.outcome as usize) else {
            return;
        };
        let outcome = ended.outcome;
        slot.get_or_init(|| {
            histogram!(
                names::OPERATION_DURATION,
                "store" => self.store,
                "backend" => self.backend,
                "operation" => op.as_str(),
                "outcome" => outcome.as_str()
            )
        })
        .record(ended.elapsed().as_secs_f64());
    }

    /// Whether to time this hit served in process.
    fn sample_hit(&self, one_in: u32) -> bool {
        thread_local! {
            /// Hits served in process on this thread, any store's.
            static HITS: Cell<u32> = const { Cell::new(0) };
        }
        let nth = HITS.with(|hits| {
            let nth = hits.get();
            hits.set(nth.wrapping_add(1));
            nth
        });
        if !self.hit_timed.load(Ordering::Relaxed) {
            self.hit_timed.store(true, Ordering::Relaxed);
            return true;
        }
        nth.is_multiple_of(one_in)
    }

    pub(crate) fn fetching(&self, delta: f64) {
        self.fetch_active.increment(delta);
    }

    pub(crate) fn waiting(&self, delta: f64) {
        self.lock_wait_active.increment(delta);
    }

    pub(crate) fn local_entries(&self, entries: u64) {
        self.local_entries
            .get_or_init(|| gauge!(names::LOCAL_ENTRIES, "store" => self.store, "backend" => self.backend))
            .set(entries as f64);
    }
}
