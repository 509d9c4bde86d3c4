//! Observability: one funnel for every event of typed stores.
//!
//! `Client::log` hands each event (HIT, MISS, FETCH with its duration, ...)
//! to the [`Observer`] of its client, which counts it for
//! [`Client::stats`](crate::Client::stats), records it as metrics (feature
//! `metrics`) and notes the outcome of the call in progress; then the event
//! goes to `tracing` and the user's [`Logger`](crate::Logger). The public
//! entry points (`get`, `get_m`, pipelines, `update`, `invalidate`,
//! `invalidate_all`) run inside [`call`], which opens their span and
//! times them; fetches run inside [`fetch`] (or a [`Fetching`]) and
//! stampede waits inside a [`Waiting`], which report their durations.
//! Backend commands are timed by the cache's backend itself, wrapped once
//! when the cache is made (`commands`, feature `metrics`).
//! `docs/observability.md` lists every metric, span and event.

mod calls;
mod clock;
#[cfg(feature = "metrics")]
mod commands;
#[cfg(feature = "metrics")]
mod metrics;
mod stats;
mod timing;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub(crate) use calls::{Call, Ended, Outcome, call, note_outcome};
#[cfg(feature = "metrics")]
pub(crate) use commands::metered;
pub use stats::{Stats, StoreStats};
pub(crate) use timing::{Fetching, Waiting, fetch};

use crate::error::Error;
use crate::logger::EventKind;
use crate::spec::StoreSpec;

/// What a client observes per store.
pub(crate) struct Store {
    counters: stats::Counters,
    #[cfg(feature = "metrics")]
    metrics: Option<metrics::StoreMetrics>,
}

/// The observation state of one client: its stores' counters and metric
/// handles, created on each store's first event.
pub(crate) struct Observer {
    /// Tells clients apart in the per-thread cache (addresses are reused).
    id: u64,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code, reason = "a metrics label"))]
    backend: &'static str,
    stores: RwLock<HashMap<&'static str, Arc<Store>>>,
    #[cfg(feature = "metrics")]
    metrics: bool,
    /// One in how many hits served in process are timed (see
    /// `ClientBuilder::in_process_hit_sampling`).
    #[cfg(feature = "metrics")]
    hit_sampling: u32,
}

thread_local! {
    /// The store this thread observed last: (observer id, spec address,
    /// store). Hot loops touch one store, so the map is rarely read.
    static LAST: RefCell<Option<(u64, usize, Arc<Store>)>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Observer {
    /// An observer for a client on the backend `backend` (a label);
    /// `metrics`: record metrics (with feature `metrics`), timing one in
    /// `hit_sampling` hits served in process (0 counts as 1).
    pub(crate) fn new(backend: &'static str, metrics: bool, hit_sampling: u32) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (metrics, hit_sampling);
        Observer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            stores: RwLock::default(),
            #[cfg(feature = "metrics")]
            metrics,
            #[cfg(feature = "metrics")]
            hit_sampling: hit_sampling.max(1),
        }
    }

    /// Whether calls are timed for metrics.
    pub(crate) fn metered(&self) -> bool {
        #[cfg(feature = "metrics")]
        return self.metrics;
        #[cfg(not(feature = "metrics"))]
        false
    }

    /// Runs `f` on the observation state of `spec`.
    fn with<R>(&self, spec: &StoreSpec, f: impl FnOnce(&Store) -> R) -> R {
        let address = spec as *const StoreSpec as usize;
        LAST.with(|last| {
            if let Ok(last) = last.try_borrow()
                && let Some((id, at, store)) = &*last
                && *id == self.id
                && *at == address
            {
                return f(store);
            }
            let store = self.store(spec);
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = Some((self.id, address, Arc::clone(&store)));
            }
            f(&store)
        })
    }

    fn store(&self, spec: &StoreSpec) -> Arc<Store> {
        let read = self.stores.read().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = read.get(spec.name) {
            return Arc::clone(store);
        }
        drop(read);
        let mut write = self.stores.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(write.entry(spec.name).or_insert_with(|| {
            Arc::new(Store {
                counters: stats::Counters::default(),
                #[cfg(feature = "metrics")]
                metrics: self
                    .metrics
                    .then(|| metrics::StoreMetrics::new(spec.name, self.backend)),
            })
        }))
    }

    /// Counts one event of `spec` and notes it as the current call's
    /// outcome.
    pub(crate) fn record(&self, kind: EventKind, spec: &StoreSpec, error: Option<&Error>, duration: Option<Duration>) {
        calls::note(kind);
        self.with(spec, |store| {
            store.counters.record(kind, error, duration);
            #[cfg(feature = "metrics")]
            if let Some(metrics) = &store.metrics {
                metrics.record(kind, error, duration);
            }
        });
    }

    /// A call of `op` on `spec` ended (`timed`: how, for the metrics).
    /// One lookup of the store for both.
    fn ended(&self, spec: &StoreSpec, op: Call, timed: Option<Ended>) {
        let get = matches!(op, Call::Get | Call::GetMany);
        if !get && timed.is_none() {
            return;
        }
        self.with(spec, |store| {
            if get {
                store.counters.get();
            }
            #[cfg(feature = "metrics")]
            if let Some(metrics) = &store.metrics {
                if get {
                    metrics.get(op);
                }
                if let Some(ended) = timed {
                    metrics.call(op, ended, self.hit_sampling);
                }
            }
            #[cfg(not(feature = "metrics"))]
            let _ = timed;
        });
    }

    /// `delta` more (or fewer) fetches of `spec` in flight.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn fetching(&self, spec: &StoreSpec, delta: f64) {
        #[cfg(feature = "metrics")]
        if self.metrics {
            self.with(spec, |store| {
                if let Some(metrics) = &store.metrics {
                    metrics.fetching(delta);
                }
            });
        }
    }

    /// `delta` more (or fewer) waiters on keys of `spec`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn waiting(&self, spec: &StoreSpec, delta: f64) {
        #[cfg(feature = "metrics")]
        if self.metrics {
            self.with(spec, |store| {
                if let Some(metrics) = &store.metrics {
                    metrics.waiting(delta);
                }
            });
        }
    }

    /// The hook of a local tier: it holds `entries` values of `spec` now
    /// (the `cacheme.local.entries` gauge).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn local_entries(&self, spec: &StoreSpec, entries: u64) {
        #[cfg(feature = "metrics")]
        if self.metrics {
            self.with(spec, |store| {
                if let Some(metrics) = &store.metrics {
                    metrics.local_entries(entries);
                }
            });
        }
    }

    /// The counters of every store; with `reset`, zeroed as they are read.
    pub(crate) fn stats(&self, reset: bool) -> Stats {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        Stats {
            stores: stores
                .iter()
                .map(|(name, store)| (*name, store.counters.snapshot(reset)))
                .collect(),
        }
    }
}
