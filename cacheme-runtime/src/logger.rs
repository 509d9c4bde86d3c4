//! The `Logger` hook: what typed stores report (cacheme-go's HIT / MISS /
//! FETCH, plus the problems a cache hides from its callers).
//!
//! Every event also goes to `tracing` (target `cacheme`): `debug` for
//! HIT/MISS/FETCH, `warn` for decode and backend errors, DEGRADED and
//! FILL_DROPPED, `info` for RECOVERED.

use std::fmt;

use crate::error::Error;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// The value was in the cache.
    Hit,
    /// The value was not in the cache (or could not be read or decoded).
    /// Under `singleflight`, every caller of a cold key reports a miss; one
    /// reports the FETCH and the others are served its value.
    Miss,
    /// The fetcher is being called.
    Fetch,
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

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Hit => "HIT",
            EventKind::Miss => "MISS",
            EventKind::Fetch => "FETCH",
            EventKind::DecodeError => "DECODE_ERROR",
            EventKind::BackendError => "BACKEND_ERROR",
            EventKind::Degraded => "DEGRADED",
            EventKind::Recovered => "RECOVERED",
            EventKind::FillDropped => "FILL_DROPPED",
        })
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
    /// The error, for [`EventKind::DecodeError`] and [`EventKind::BackendError`].
    pub error: Option<&'a Error>,
}

/// Receives the events of every store of a client: install it with
/// [`ClientBuilder::logger`](crate::ClientBuilder::logger).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use cacheme::{Client, Event, EventKind, Logger};
///
/// struct HitCounter(Arc<AtomicU64>);
///
/// impl Logger for HitCounter {
///     fn log(&self, event: &Event<'_>) {
///         if event.kind == EventKind::Hit {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let hits = Arc::new(AtomicU64::new(0));
/// let client = Client::builder().logger(HitCounter(Arc::clone(&hits))).build()?;
/// // ... the stores of `client` count their hits in `hits`.
/// # drop(client);
/// # assert_eq!(hits.load(Ordering::Relaxed), 0);
/// # Ok::<(), cacheme::Error>(())
/// ```
pub trait Logger: Send + Sync + 'static {
    /// Called for every event, on the task that caused it: keep it quick.
    fn log(&self, event: &Event<'_>);
}

/// Sends an event to `tracing` and to the logger, if any.
pub(crate) fn emit(logger: Option<&dyn Logger>, event: Event<'_>) {
    match (event.kind, event.error) {
        (EventKind::Recovered, _) => {
            tracing::info!(target: "cacheme", store = event.store, key = event.key, "{}", event.kind)
        }
        (EventKind::Degraded | EventKind::FillDropped, None) => {
            tracing::warn!(target: "cacheme", store = event.store, key = event.key, "{}", event.kind)
        }
        (_, Some(error)) => {
            tracing::warn!(target: "cacheme", store = event.store, key = event.key, %error, "{}", event.kind)
        }
        (_, None) => tracing::debug!(target: "cacheme", store = event.store, key = event.key, "{}", event.kind),
    }
    if let Some(logger) = logger {
        logger.log(&event);
    }
}
