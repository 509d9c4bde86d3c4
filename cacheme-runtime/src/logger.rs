//! The `Logger` hook: what typed stores report (cacheme-go's HIT / MISS /
//! FETCH, plus waits, stale values and the problems a cache hides from its
//! callers).
//!
//! Every event goes through one funnel (`Client::log`), which feeds the
//! logger, `tracing` (target `cacheme`), [`Client::stats`](crate::Client::stats)
//! and, with feature `metrics`, the metrics (see the `observe` module and
//! `docs/observability.md`). `tracing` levels: `debug` for HIT, LOCAL_HIT,
//! MISS, FETCH, COALESCED, WAIT, STALE and REFRESH; `warn` for decode and
//! backend errors, DEGRADED, FILL_DROPPED and LOCK_TIMEOUT; `info` for
//! RECOVERED; FETCH_ERROR is `debug` too (the caller gets the error).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// The value was in the cache.
    Hit,
    /// The value was in the in-process local tier (no backend call).
    LocalHit,
    /// The value was not in the cache (or could not be read or decoded).
    /// Under `singleflight`, every caller of a cold key reports a miss; one
    /// reports the FETCH and the others a COALESCED.
    Miss,
    /// The fetcher returned a value; [`Event::duration`] is how long it
    /// took. Reported when the fetch ends, not when it starts.
    Fetch,
    /// The fetcher returned an error (handed to the caller, not to the
    /// logger); [`Event::duration`] is how long it took.
    FetchError,
    /// A caller joined another caller's fetch of the key in this process
    /// (a singleflight follower) instead of fetching.
    Coalesced,
    /// A caller waited for another process's fetch of the key (its fetch
    /// lock was taken); [`Event::duration`] is how long. Reported when the
    /// wait ends, however it ends.
    Wait,
    /// A wait gave up (`max_wait` passed, or the holder failed too often)
    /// and the caller fetches without the lock; [`Event::duration`] is how
    /// long it waited. Also reported as a WAIT.
    LockTimeout,
    /// A stale value was served while it is refreshed.
    Stale,
    /// A refresh of a stale value started.
    Refresh,
    /// A cached value did not decode as the store's type (schema changed
    /// without a version bump, corruption): treated as a miss and refetched.
    DecodeError,
    /// The backend failed or timed out; the store fell back to the fetcher
    /// (reads) or left the value uncached (writes).
    BackendError,
    /// The client's circuit breaker opened after consecutive backend
    /// failures: stores skip the cache and serve the source until a probe
    /// succeeds. Reported once per opening (with the failure that tripped
    /// it), not once per call.
    Degraded,
    /// A probe succeeded: the breaker closed and stores use the cache again.
    Recovered,
    /// A fetched value's write was dropped because too many writes were
    /// already queued (see [`ClientBuilder::max_pending_fills`](crate::ClientBuilder::max_pending_fills)).
    FillDropped,
}

impl EventKind {
    /// The event's name as logged (`"HIT"`, `"LOCK_TIMEOUT"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Hit => "HIT",
            EventKind::LocalHit => "LOCAL_HIT",
            EventKind::Miss => "MISS",
            EventKind::Fetch => "FETCH",
            EventKind::FetchError => "FETCH_ERROR",
            EventKind::Coalesced => "COALESCED",
            EventKind::Wait => "WAIT",
            EventKind::LockTimeout => "LOCK_TIMEOUT",
            EventKind::Stale => "STALE",
            EventKind::Refresh => "REFRESH",
            EventKind::DecodeError => "DECODE_ERROR",
            EventKind::BackendError => "BACKEND_ERROR",
            EventKind::Degraded => "DEGRADED",
            EventKind::Recovered => "RECOVERED",
            EventKind::FillDropped => "FILL_DROPPED",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a typed store.
#[derive(Debug)]
#[non_exhaustive]
pub struct Event<'a> {
    /// What happened.
    pub kind: EventKind,
    /// The store's name (`BookStore`).
    pub store: &'static str,
    /// The key, without the backend's prefix.
    pub key: &'a str,
    /// The error, for [`EventKind::DecodeError`], [`EventKind::BackendError`]
    /// and [`EventKind::Degraded`].
    pub error: Option<&'a Error>,
    /// How long it took, for [`EventKind::Fetch`], [`EventKind::FetchError`],
    /// [`EventKind::Wait`] and [`EventKind::LockTimeout`].
    pub duration: Option<Duration>,
}

/// Receives the events of every store of a client: install it with
/// [`ClientBuilder::logger`](crate::ClientBuilder::logger).
///
/// Implemented for closures and for `Arc<L>`, so a logger shared with the
/// rest of the program needs no wrapper:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use cacheme::{Client, Event, EventKind, Logger};
///
/// #[derive(Default)]
/// struct HitCounter(AtomicU64);
///
/// impl Logger for HitCounter {
///     fn log(&self, event: &Event<'_>) {
///         if event.kind == EventKind::Hit {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let hits = Arc::new(HitCounter::default());
/// let client = Client::builder().logger(Arc::clone(&hits)).build()?;
/// // ... the stores of `client` count their hits in `hits`.
/// let printing = Client::builder()
///     .logger(|event: &Event<'_>| {
///         if let Some(took) = event.duration {
///             println!("{} {} took {took:?}", event.kind, event.key);
///         }
///     })
///     .build()?;
/// # let _ = (client, printing);
/// # assert_eq!(hits.0.load(Ordering::Relaxed), 0);
/// # Ok::<(), cacheme::Error>(())
/// ```
pub trait Logger: Send + Sync + 'static {
    /// Called for every event, on the task that caused it: keep it quick.
    fn log(&self, event: &Event<'_>);
}

impl<L: Logger + ?Sized> Logger for Arc<L> {
    fn log(&self, event: &Event<'_>) {
        (**self).log(event);
    }
}

impl<F> Logger for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn log(&self, event: &Event<'_>) {
        self(event);
    }
}

/// Sends an event to `tracing` and to the logger, if any.
pub(crate) fn emit(logger: Option<&dyn Logger>, event: Event<'_>) {
    let (store, key, kind) = (event.store, event.key, event.kind);
    match (kind, event.error, event.duration) {
        (EventKind::Recovered, _, _) => tracing::info!(target: "cacheme", store, key, "{kind}"),
        (_, Some(error), _) => tracing::warn!(target: "cacheme", store, key, %error, "{kind}"),
        (EventKind::Degraded | EventKind::FillDropped, None, _) => {
            tracing::warn!(target: "cacheme", store, key, "{kind}")
        }
        (EventKind::LockTimeout, None, duration) => tracing::warn!(
            target: "cacheme",
            store,
            key,
            waited = ?duration.unwrap_or_default(),
            "{kind}: stampede wait gave up; fetching without the lock"
        ),
        (_, None, Some(duration)) => tracing::debug!(target: "cacheme", store, key, ?duration, "{kind}"),
        (_, None, None) => tracing::debug!(target: "cacheme", store, key, "{kind}"),
    }
    if let Some(logger) = logger {
        logger.log(&event);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn event(kind: EventKind) -> Event<'static> {
        Event {
            kind,
            store: "BookStore",
            key: "book:1",
            error: None,
            duration: Some(Duration::from_millis(4)),
        }
    }

    #[test]
    fn closures_and_arcs_are_loggers() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let closure = move |event: &Event<'_>| sink.lock().unwrap().push((event.kind, event.duration));
        let shared: Arc<dyn Logger> = Arc::new(closure);
        let twice = Arc::new(Arc::clone(&shared));
        emit(Some(&shared), event(EventKind::Wait));
        emit(Some(&*twice), event(EventKind::LockTimeout));
        Logger::log(&Arc::clone(&twice), &event(EventKind::Fetch));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (EventKind::Wait, Some(Duration::from_millis(4))),
                (EventKind::LockTimeout, Some(Duration::from_millis(4))),
                (EventKind::Fetch, Some(Duration::from_millis(4))),
            ]
        );
    }

    #[test]
    fn every_kind_has_its_upper_case_name() {
        assert_eq!(EventKind::LockTimeout.to_string(), "LOCK_TIMEOUT");
        assert_eq!(EventKind::LocalHit.as_str(), "LOCAL_HIT");
        assert_eq!(EventKind::FetchError.to_string(), "FETCH_ERROR");
    }
}
