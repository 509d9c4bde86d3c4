//! Timed steps inside a call: fetches and stampede waits report their
//! durations through the funnel (FETCH / FETCH_ERROR, WAIT / LOCK_TIMEOUT)
//! and keep the in-flight gauges.

use std::future::Future;
use std::time::Instant;

use tracing::Span;
use tracing::field::{Empty, debug};

use crate::client::Client;
use crate::logger::EventKind;
use crate::spec::StoreSpec;
use crate::stampede::waiter::Waited;

/// Awaits the fetch `fetch` of `key`, reporting FETCH or FETCH_ERROR with
/// its duration.
pub(crate) async fn fetch<V, E>(
    client: &Client,
    spec: &StoreSpec,
    key: &str,
    fetch: impl Future<Output = Result<V, E>>,
) -> Result<V, E> {
    let mut fetching = Fetching::start(client, spec, 1);
    let result = fetch.await;
    fetching.done(key, result)
}

/// Fetches of one store in flight, started together (one, or a batch's).
/// Each reports when it ends ([`done`](Self::done)); the ones dropped
/// unreported (cancelled) leave the in-flight gauge when this is dropped.
pub(crate) struct Fetching<'c> {
    client: &'c Client,
    spec: &'c StoreSpec,
    started: Instant,
    left: usize,
}

impl<'c> Fetching<'c> {
    /// `fetches` fetches of `spec` start.
    pub(crate) fn start(client: &'c Client, spec: &'c StoreSpec, fetches: usize) -> Self {
        client.observer().fetching(spec, fetches as f64);
        Fetching {
            client,
            spec,
            started: Instant::now(),
            left: fetches,
        }
    }

    /// The fetch of `key` ended with `result` (passed through).
    pub(crate) fn done<V, E>(&mut self, key: &str, result: Result<V, E>) -> Result<V, E> {
        let kind = if result.is_ok() {
            EventKind::Fetch
        } else {
            EventKind::FetchError
        };
        self.client
            .log_timed(kind, self.spec, key, None, Some(self.started.elapsed()));
        if self.left > 0 {
            self.left -= 1;
            self.client.observer().fetching(self.spec, -1.0);
        }
        result
    }
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.client.observer().fetching(self.spec, -(self.left as f64));
        }
    }
}

/// A stampede wait for another process's fetch of a key: a `wait` span
/// (a child of the call's) and the waiters gauge while it lasts; WAIT
/// with its duration when it ends, LOCK_TIMEOUT too if it gave up.
pub(crate) struct Waiting<'c> {
    client: &'c Client,
    spec: &'c StoreSpec,
    key: &'c str,
    started: Instant,
    span: Span,
    gave_up: bool,
}

impl<'c> Waiting<'c> {
    /// A wait for `key` of `spec` begins.
    pub(crate) fn begin(client: &'c Client, spec: &'c StoreSpec, key: &'c str) -> Self {
        client.observer().waiting(spec, 1.0);
        Waiting {
            client,
            spec,
            key,
            started: Instant::now(),
            span: tracing::debug_span!(target: "cacheme", "wait", store = spec.name, outcome = Empty, duration = Empty),
            gave_up: false,
        }
    }

    /// The wait's span, to enter while polling the wait.
    #[allow(dead_code, reason = "the waiter's steps may run in it")]
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The end of a wait past its limit: passes `waited` through, noting
    /// whether the caller now fetches without the lock.
    pub(crate) fn gave_up<T>(&mut self, waited: Waited<T>) -> Waited<T> {
        self.gave_up = matches!(waited, Waited::GiveUp);
        waited
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.client.observer().waiting(self.spec, -1.0);
        self.span
            .record("outcome", if self.gave_up { "lock_timeout" } else { "waited" });
        self.span.record("duration", debug(took));
        self.client
            .log_timed(EventKind::Wait, self.spec, self.key, None, Some(took));
        if self.gave_up {
            self.client
                .log_timed(EventKind::LockTimeout, self.spec, self.key, None, Some(took));
        }
    }
}
