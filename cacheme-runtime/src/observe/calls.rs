//! The calls of typed stores: each public entry point runs inside
//! [`call`], which opens its `tracing` span, and notes the outcome the
//! funnel reports while the call is polled (a per-thread cell, swapped in
//! and out around each poll, so nested and interleaved calls keep theirs),
//! then records the outcome and duration on the span and, with feature
//! `metrics`, in the `cacheme.operation.duration` histogram.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::time::Duration;

use tracing::Span;
use tracing::field::{Empty, debug};

use super::clock::Started;
use crate::client::Client;
use crate::logger::EventKind;
use crate::spec::StoreSpec;

/// A public entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Get,
    GetMany,
    Pipeline,
    Update,
    Invalidate,
    InvalidateAll,
}

impl Call {
    /// The `operation` label.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Call::Get => "get",
            Call::GetMany => "get_m",
            Call::Pipeline => "pipeline",
            Call::Update => "update",
            Call::Invalidate => "invalidate",
            Call::InvalidateAll => "invalidate_all",
        }
    }

    /// How many there are (for tables of handles).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const COUNT: usize = 6;

    /// Whether the outcome is what the cache did (reads) rather than
    /// whether the call succeeded (writes).
    fn reads(self) -> bool {
        matches!(self, Call::Get | Call::GetMany | Call::Pipeline)
    }

    fn span(self, store: &'static str) -> Span {
        match self {
            Call::Get => {
                tracing::debug_span!(target: "cacheme", "get", store, outcome = Empty, duration = Empty, error = Empty)
            }
            Call::GetMany => {
                tracing::debug_span!(target: "cacheme", "get_m", store, outcome = Empty, duration = Empty, error = Empty)
            }
            Call::Pipeline => tracing::debug_span!(target: "cacheme", "pipeline", outcome = Empty, duration = Empty),
            Call::Update => tracing::debug_span!(target: "cacheme", "update", store, outcome = Empty, duration = Empty),
            Call::Invalidate => {
                tracing::debug_span!(target: "cacheme", "invalidate", store, outcome = Empty, duration = Empty)
            }
            Call::InvalidateAll => {
                tracing::debug_span!(target: "cacheme", "invalidate_all", store, outcome = Empty, duration = Empty)
            }
        }
    }
}

/// How a call went. Several events may note one: the highest wins (a
/// miss that waited is `Waited`; a batch with hits and misses is `Miss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// Not inside a call (the cell's resting value).
    Outside = 0,
    /// Inside a call, nothing noted yet.
    Nothing,
    LocalHit,
    Hit,
    Stale,
    Miss,
    Coalesced,
    Waited,
    /// The cache failed or was skipped (breaker open): served from the
    /// source.
    Degraded,
    /// A write call succeeded.
    Ok,
    /// A write call failed.
    Error,
}

impl Outcome {
    /// The `outcome` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Outside | Outcome::Nothing => "none",
            Outcome::LocalHit => "local_hit",
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
            Outcome::Waited => "waited",
            Outcome::Degraded => "degraded",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }

    /// How many there are (for tables of handles).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const COUNT: usize = 11;

    fn from_u8(n: u8) -> Outcome {
        [
            Outcome::Outside,
            Outcome::Nothing,
            Outcome::LocalHit,
            Outcome::Hit,
            Outcome::Stale,
            Outcome::Miss,
            Outcome::Coalesced,
            Outcome::Waited,
            Outcome::Degraded,
        ]
        .get(usize::from(n))
        .copied()
        .unwrap_or(Outcome::Nothing)
    }
}

/// How a timed call ended.
#[cfg_attr(not(feature = "metrics"), allow(dead_code, reason = "read by the metrics"))]
pub(crate) struct Ended {
    pub(crate) outcome: Outcome,
    /// A hit served without waiting (the local tier's, or the memory
    /// backend's): metrics time only a sample of these.
    pub(crate) in_process: bool,
    started: Started,
    elapsed: Option<Duration>,
}

impl Ended {
    /// How long the call took (the clock is read once, when first asked).
    pub(crate) fn elapsed(&mut self) -> Duration {
        *self.elapsed.get_or_insert_with(|| self.started.elapsed())
    }
}

thread_local! {
    /// The outcome of the call being polled on this thread.
    static CURRENT: Cell<u8> = const { Cell::new(Outcome::Outside as u8) };
}

/// Notes what an event says about the call being polled, if any.
pub(crate) fn note(kind: EventKind) {
    let outcome = match kind {
        EventKind::Hit => Outcome::Hit,
        EventKind::LocalHit => Outcome::LocalHit,
        EventKind::Miss => Outcome::Miss,
        EventKind::Stale => Outcome::Stale,
        EventKind::Coalesced => Outcome::Coalesced,
        EventKind::Wait | EventKind::LockTimeout => Outcome::Waited,
        EventKind::BackendError | EventKind::Degraded => Outcome::Degraded,
        _ => return,
    };
    note_outcome(outcome);
}

/// Notes `outcome` for the call being polled, if any, unless it has a
/// higher one already.
pub(crate) fn note_outcome(outcome: Outcome) {
    CURRENT.with(|current| {
        let now = current.get();
        if now != Outcome::Outside as u8 && outcome as u8 > now {
            current.set(outcome as u8);
        }
    });
}

/// Runs the public entry point `op` (of `spec`'s store, on `client`; a
/// pipeline has neither) inside its span, timed when metrics are on.
/// Without a subscriber for the span and without metrics it only awaits
/// the call (and counts a get for [`Client::stats`](crate::Client::stats)).
///
/// The call's future is made here (`make`), not passed in: a future
/// argument of an `async fn` is stored twice in its state, which doubled
/// the size of a typed get's future (3.6 to 7.4 KiB) and cost a memory hit
/// about 10% in copies.
pub(crate) async fn call<M, F, T, E>(
    client: Option<&Client>,
    spec: Option<&'static StoreSpec>,
    op: Call,
    make: M,
) -> Result<T, E>
where
    M: FnOnce() -> F,
    F: Future<Output = Result<T, E>>,
{
    let store = client.zip(spec);
    let span = op.span(spec.map_or("", |s| s.name));
    let metered = store.is_some_and(|(client, _)| client.observer().metered());
    if span.is_disabled() && !metered {
        let result = make().await;
        if let Some((client, spec)) = store {
            client.observer().ended(spec, op, None);
        }
        return result;
    }
    let started = Started::now();
    let mut noted = Outcome::Nothing as u8;
    let mut waited = false;
    let mut call = pin!(make());
    let result = poll_fn(|cx| {
        let _entered = span.enter();
        let outer = CURRENT.replace(noted);
        let poll = call.as_mut().poll(cx);
        noted = CURRENT.replace(outer);
        waited |= poll.is_pending();
        poll
    })
    .await;
    let outcome = match (op.reads(), result.is_ok()) {
        (true, _) => Outcome::from_u8(noted),
        (false, true) => Outcome::Ok,
        (false, false) => Outcome::Error,
    };
    let mut ended = Ended {
        outcome,
        in_process: !waited && matches!(outcome, Outcome::LocalHit | Outcome::Hit),
        started,
        elapsed: None,
    };
    if !span.is_disabled() {
        span.record("outcome", outcome.as_str());
        span.record("duration", debug(ended.elapsed()));
        if op.reads() && result.is_err() {
            span.record("error", true);
        }
    }
    if let Some((client, spec)) = store {
        client.observer().ended(spec, op, metered.then_some(ended));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn noting(outcomes: &[Outcome]) -> Result<u8, ()> {
        for &outcome in outcomes {
            note_outcome(outcome);
            tokio::task::yield_now().await;
        }
        Ok(CURRENT.with(Cell::get))
    }

    #[tokio::test]
    async fn the_highest_outcome_wins_and_calls_keep_their_own() {
        // Outside any call, noting does nothing.
        note_outcome(Outcome::Hit);
        assert_eq!(CURRENT.with(Cell::get), Outcome::Outside as u8);
        let inner = async {
            let nested = call(None, None, Call::Pipeline, || noting(&[Outcome::Hit])).await;
            assert_eq!(nested, Ok(Outcome::Hit as u8));
            noting(&[Outcome::Miss, Outcome::Hit, Outcome::Waited, Outcome::Coalesced]).await
        };
        // Without a span subscriber nor metrics a call is passed through:
        // check the bookkeeping with a subscriber.
        let subscriber = tracing_subscriber_stub::Collecting;
        let _guard = tracing::subscriber::set_default(subscriber);
        let outer = call(None, None, Call::Pipeline, || inner).await;
        assert_eq!(outer, Ok(Outcome::Waited as u8));
        assert_eq!(CURRENT.with(Cell::get), Outcome::Outside as u8);
    }

    /// A subscriber that enables every span (the runtime has no
    /// `tracing-subscriber`).
    mod tracing_subscriber_stub {
        use tracing::span::{Attributes, Id, Record};
        use tracing::{Event, Metadata, Subscriber};

        pub(super) struct Collecting;

        impl Subscriber for Collecting {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, _: &Event<'_>) {}
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
    }
}
