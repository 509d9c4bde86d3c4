//! Fail-safe and freshness on the miss path: a stale value kept to be
//! served when a refetch fails, panics or times out (`stale_for`), the
//! fetch's time limits (`soft_timeout`, `hard_timeout`), background
//! fetches (a fetch that goes on after its caller was answered, used by
//! the soft timeout and by [`refresh`](super::refresh)), and how a fetch
//! that ended settles its key.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::oneshot;

use super::encode;
use super::refresh_batch::BatchRefresh;
use crate::backend::BoxFuture;
use crate::client::Client;
use crate::dated::{self, Dates};
use crate::logger::EventKind;
use crate::observe;
use crate::spec::StoreSpec;
use crate::stampede::lease::Leases;

/// The error a fetch gives when it ran past its store's `hard_timeout` and
/// no stale value could be served instead.
///
/// A store with `hard_timeout` needs its fetcher's error type to be
/// `From<FetchTimeout>` (checked where `hard_timeout` is written), so the
/// caller gets the timeout as the fetcher's own error:
///
/// ```
/// use cacheme::FetchTimeout;
///
/// #[derive(Debug)]
/// enum AppError {
///     Database(String),
///     TooSlow(FetchTimeout),
/// }
///
/// impl From<FetchTimeout> for AppError {
///     fn from(timeout: FetchTimeout) -> Self {
///         AppError::TooSlow(timeout)
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the fetch of {store} key {key:?} did not answer within its hard timeout of {limit:?}")]
pub struct FetchTimeout {
    /// The store's name.
    pub store: &'static str,
    /// The key being fetched (without the backend's prefix).
    pub key: String,
    /// The store's `hard_timeout`.
    pub limit: Duration,
}

/// Implemented by `Option<T>` only: a store with `none_ttl` caches its
/// fetcher's `None` ("not found") for that TTL, so its value must be an
/// `Option` (checked where `none_ttl` is written).
#[diagnostic::on_unimplemented(
    message = "`none_ttl` caches a fetched `None`: the fetcher must return `Result<Option<T>, E>`, not `{Self}`",
    label = "not an `Option`"
)]
pub trait OptionValue {}

impl<T> OptionValue for Option<T> {}

/// What a store's `get` may do besides calling its fetcher: turn a hard
/// timeout into the fetcher's error, and start a fetch that outlives the
/// call (for `soft_timeout` and `refresh_after`). Built by the generated
/// code.
pub struct FetchPolicy<'a, V, E> {
    timed_out: Option<fn(FetchTimeout) -> E>,
    background: Option<&'a (dyn Fn() -> Background<V, E> + Send + Sync + 'a)>,
    batch_refresh: Option<&'a (dyn Fn() -> BatchRefresh + Send + Sync + 'a)>,
}

impl<V, E> Clone for FetchPolicy<'_, V, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V, E> Copy for FetchPolicy<'_, V, E> {}

impl<'a, V, E> FetchPolicy<'a, V, E> {
    /// Neither: a store without `hard_timeout`, `soft_timeout` or
    /// `refresh_after`.
    pub const fn none() -> Self {
        FetchPolicy {
            timed_out: None,
            background: None,
            batch_refresh: None,
        }
    }

    /// How a hard timeout becomes the fetcher's error.
    pub const fn on_timeout(mut self, timed_out: fn(FetchTimeout) -> E) -> Self {
        self.timed_out = Some(timed_out);
        self
    }

    /// How to start this call's fetch in the background.
    pub const fn background(mut self, start: &'a (dyn Fn() -> Background<V, E> + Send + Sync + 'a)) -> Self {
        self.background = Some(start);
        self
    }

    /// How to refresh this call's key ahead through the store's batch
    /// fetcher (`fetch_many`), with the other keys due in the same window.
    pub const fn batch_refresh(mut self, start: &'a (dyn Fn() -> BatchRefresh + Send + Sync + 'a)) -> Self {
        self.batch_refresh = Some(start);
        self
    }
}

impl<'a, V, E> FetchPolicy<'a, V, E> {
    pub(crate) fn timed_out(self) -> Option<fn(FetchTimeout) -> E> {
        self.timed_out
    }

    pub(crate) fn background_fetch(self) -> Option<&'a (dyn Fn() -> Background<V, E> + Send + Sync + 'a)> {
        self.background
    }

    pub(crate) fn batch_refresh_fetch(self) -> Option<&'a (dyn Fn() -> BatchRefresh + Send + Sync + 'a)> {
        self.batch_refresh
    }
}

/// How a fetch ended.
pub(crate) enum Outcome<V, E> {
    Value(V),
    Error(E),
    Panic(Box<dyn Any + Send>),
    TimedOut(FetchTimeout),
}

/// Settles a background fetch's key once it ended: given the fetched
/// value's bytes (`None`: it failed), fills or abandons its lease; the
/// returned future does the writing.
pub(crate) type Settle = Box<dyn FnOnce(Option<Arc<[u8]>>) -> BoxFuture<'static, ()> + Send>;

/// Takes what a background fetch needs before it starts (its lease); `None`:
/// do not fetch.
pub(crate) type Gate = BoxFuture<'static, Option<Settle>>;

type Start<V, E> = Box<dyn FnOnce(Client, &'static StoreSpec, String, Gate) -> oneshot::Receiver<Outcome<V, E>> + Send>;

/// A fetch that can run on its own task, past the call that started it:
/// the fetcher with an owned clone of the context and parameters. Built by
/// the generated code of stores with `soft_timeout` or `refresh_after`.
pub struct Background<V, E> {
    start: Start<V, E>,
}

impl<V: Serialize + Send + 'static, E: Send + 'static> Background<V, E> {
    /// A background fetch calling `fetch`.
    pub fn new<F, Fut>(fetch: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        Background {
            start: Box::new(move |client, spec, key, gate| {
                let (sender, receiver) = oneshot::channel();
                tokio::spawn(async move {
                    // The gate takes what the fetch needs (its lease); no
                    // settlement: someone else has the key in hand.
                    let Some(settle) = gate.await else { return };
                    let outcome = attempt(&client, spec, &key, fetch(), true).await;
                    let bytes = match &outcome {
                        Outcome::Value(value) => encode(&client, spec, &key, value),
                        _ => None,
                    };
                    settle(bytes).await;
                    let _ = sender.send(outcome);
                });
                receiver
            }),
        }
    }
}

impl<V, E> Background<V, E> {
    /// Spawns the fetch of `key` once `gate` gives its settlement; the
    /// receiver gets the outcome after the key was settled.
    pub(crate) fn start(
        self,
        client: &Client,
        spec: &'static StoreSpec,
        key: &str,
        gate: Gate,
    ) -> oneshot::Receiver<Outcome<V, E>> {
        (self.start)(client.clone(), spec, key.to_owned(), gate)
    }
}

impl<V, E> fmt::Debug for Background<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Background")
    }
}

/// Runs one fetch, timed and observed: within the store's
/// `hard_timeout` when `limited` (a caller that can be given a timeout
/// error or a stale value), a panic caught as an outcome.
pub(crate) async fn attempt<V, E, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    fetch: Fut,
    limited: bool,
) -> Outcome<V, E>
where
    Fut: Future<Output = Result<V, E>>,
{
    let fetched = AssertUnwindSafe(observe::fetch(client, spec, key, fetch)).catch_unwind();
    let fetched = match spec.hard_timeout.filter(|_| limited) {
        Some(limit) => match tokio::time::timeout(limit, fetched).await {
            Ok(fetched) => fetched,
            Err(_) => {
                return Outcome::TimedOut(FetchTimeout {
                    store: spec.name,
                    key: key.to_owned(),
                    limit,
                });
            }
        },
        None => fetched.await,
    };
    match fetched {
        Ok(Ok(value)) => Outcome::Value(value),
        Ok(Err(error)) => Outcome::Error(error),
        Err(panic) => Outcome::Panic(panic),
    }
}

/// A value past its TTL and within `stale_for`, read on the way to a
/// refetch: served if the refetch fails.
pub(crate) struct Stale<V> {
    pub(crate) value: V,
    dates: Dates,
    payload: Arc<[u8]>,
}

impl<V> Stale<V> {
    /// The stale value read as `bytes` (stored with `dates`).
    pub(crate) fn new(value: V, bytes: &[u8]) -> Option<Self> {
        let (dates, payload) = dated::open(bytes)?;
        Some(Stale {
            value,
            dates,
            payload: Arc::from(payload),
        })
    }

    /// The value's bytes as written back by the fail-safe: fresh for the
    /// store's throttle from now, never past the value's stale end.
    fn throttled(&self, client: &Client, spec: &StoreSpec) -> Arc<[u8]> {
        let dates = self.dates.throttled(client.clock().unix_ms(), spec);
        Arc::from(dated::wrap(dates, &self.payload))
    }

    /// What the fail-safe gives for the failed fetch of `key`: the stale
    /// value and the bytes to store (fresh for the throttle).
    pub(crate) fn serve(self, client: &Client, spec: &StoreSpec, key: &str) -> (V, Arc<[u8]>) {
        client.log(EventKind::Stale, spec, key, None);
        let bytes = self.throttled(client, spec);
        (self.value, bytes)
    }

    /// The bytes to store when a background fetch of this value's key
    /// fails: the stale value, fresh for the throttle.
    pub(crate) fn fallback_bytes(&self, client: &Client, spec: &StoreSpec) -> Arc<[u8]> {
        self.throttled(client, spec)
    }

    /// The value's bytes as they were (for followers of a call answered
    /// with it while its fetch goes on).
    pub(crate) fn bytes(&self) -> Arc<[u8]> {
        Arc::from(dated::wrap(self.dates, &self.payload))
    }
}

/// A fetch's result for its caller, with the bytes to store (`None`:
/// nothing to store, the lease is abandoned). A failed fetch with a stale
/// value serves it (and stores it again, fresh for the throttle); without
/// one, the error is returned, a timeout becomes the fetcher's error, and
/// a panic resumes.
pub(crate) fn resolve<V: Serialize, E>(
    client: &Client,
    spec: &StoreSpec,
    key: &str,
    outcome: Outcome<V, E>,
    stale: Option<Stale<V>>,
    timed_out: Option<fn(FetchTimeout) -> E>,
) -> (Result<V, E>, Option<Arc<[u8]>>) {
    let failure = match outcome {
        Outcome::Value(value) => {
            let bytes = encode(client, spec, key, &value);
            return (Ok(value), bytes);
        }
        failure => failure,
    };
    if let Some(stale) = stale {
        let (value, bytes) = stale.serve(client, spec, key);
        return (Ok(value), Some(bytes));
    }
    match failure {
        Outcome::Error(error) => (Err(error), None),
        Outcome::TimedOut(timeout) => match timed_out {
            Some(into_error) => (Err(into_error(timeout)), None),
            // Only a hand-built spec gets here: the macro requires the
            // conversion of every store with `hard_timeout`.
            None => panic!("{timeout}, and the store gives no way to report it"),
        },
        Outcome::Panic(panic) => std::panic::resume_unwind(panic),
        Outcome::Value(_) => unreachable!(),
    }
}

/// Whether a fetch can be held to the store's `hard_timeout`: there is a
/// stale value to serve instead, or a way to report the timeout.
pub(crate) fn limited<V, E>(spec: &StoreSpec, stale: Option<&Stale<V>>, policy: FetchPolicy<'_, V, E>) -> bool {
    spec.hard_timeout.is_some() && (stale.is_some() || policy.timed_out.is_some())
}

/// The settlement of a background fetch holding `leases`: the fetched
/// value, or (the fetch failed) `fallback`, the stale value fresh for the
/// throttle, if there is one.
pub(crate) fn settle_lease(
    client: &Client,
    spec: &'static StoreSpec,
    leases: Leases,
    fallback: Option<Arc<[u8]>>,
) -> Settle {
    let owner = client.clone();
    Box::new(move |fetched: Option<Arc<[u8]>>| {
        let key = leases.key(0).to_owned();
        let bytes = fetched.or(fallback);
        let ttl = bytes
            .as_deref()
            .map_or(spec.ttl, |bytes| super::stored_ttl(&owner, spec, bytes));
        Box::pin(async move {
            match leases.settle(&[bytes], &[ttl]).await {
                Ok(stored) if stored.first() == Some(&true) => {
                    // This process's local tier drops the value it holds
                    // (the others hear the announcement).
                    owner.forget(spec, &key);
                    owner.announce(spec, &[&key]).await;
                }
                Ok(_) => {}
                Err(error) => owner.log(EventKind::BackendError, spec, &key, Some(&error)),
            }
        })
    })
}

/// The settlement of a background fetch without a fetch lock (the
/// memory backend, a cache that cannot coordinate): the fetched value is
/// written, or if the fetch failed `fallback` (the stale value fresh for
/// the throttle), if there is one.
pub(crate) fn settle_unleased(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    fallback: Option<Arc<[u8]>>,
) -> Settle {
    let (owner, key) = (client.clone(), key.to_owned());
    Box::new(move |fetched: Option<Arc<[u8]>>| {
        Box::pin(async move {
            let Some(bytes) = fetched.or(fallback) else { return };
            let ttl = super::stored_ttl(&owner, spec, &bytes);
            match owner.cache().backend().set(&key, &bytes, Some(ttl)).await {
                Ok(()) => {
                    owner.forget(spec, &key);
                    owner.announce(spec, &[&key]).await;
                }
                Err(error) => owner.log(EventKind::BackendError, spec, &key, Some(&error)),
            }
        })
    })
}
