//! The cluster connection of a backend: redis-rs's `ClusterConnection`,
//! replaced by a fresh one when it stops answering.
//!
//! redis-rs (1.x) drives every request of a cluster connection from one
//! task, and while that task re-reads the slot map it polls none of the
//! requests it has in flight. After a master dies, a request redirected
//! to the dead node can hold its place in the queue of the connection
//! map's lock at that very moment; the re-read then waits for the same
//! lock, and the connection never answers again: every call times out,
//! while a new connection to the same cluster works at once. Measured
//! here: after a master was killed under load, the same client failed
//! every call for more than 60 s.
//!
//! So every call through the handle is watched: when calls have been made
//! for [`STALLED_AFTER`] and none has answered (an error reply is an
//! answer; a timeout, or a caller that gave up waiting, is not), a
//! watchdog task sends a `PING` through the connection. No answer within
//! [`PROBE_TIMEOUT`] means the connection is wedged: a new one is opened
//! from the same client (its seed nodes) and takes its place. Calls
//! already on the old one end with their own timeouts; calls made after
//! the swap use the new one. Nothing is sent while calls answer, so a
//! healthy cluster sees no extra command. [`ClusterHandle::generation`]
//! counts the swaps, so what was learnt from the old connection (the slot
//! map of batches) is read again.
//!
//! What a call pays for this is kept small, since every cluster command
//! goes through it: the connection is read through an [`ArcSwap`] (no
//! lock shared by the callers), and a call marks two flags, "a call was
//! made" and "an answer came", each written only when it was clear (the
//! watchdog clears both at every check). Under load both stay set between
//! checks, so calls only read them; the watchdog keeps the time itself.
//!
//! The watchdog holds the handle weakly and ends once the backend and
//! all its clones are gone.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::RedisResult;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

/// Calls in flight this long with no answer make the watchdog probe.
pub(in crate::redis) const STALLED_AFTER: Duration = Duration::from_millis(1500);

/// How long the probe `PING` may take before the connection is replaced.
pub(in crate::redis) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the watchdog looks at the calls in flight.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How long opening a replacement connection may take.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster connection that replaces itself when wedged (see the module
/// docs). Cheap to clone: clones share the connection and the watchdog.
#[derive(Clone)]
pub(crate) struct ClusterHandle {
    shared: Arc<Shared>,
}

/// The connection in use and its generation (0 for the first).
struct Current {
    connection: ClusterConnection,
    generation: u64,
}

struct Shared {
    client: ClusterClient,
    /// Read by every call, replaced only by a swap.
    current: ArcSwap<Current>,
    /// A call was made since the watchdog last looked. A call its caller
    /// gave up on (a cache budget cut it short) counts: a wedged
    /// connection is noticed however briefly callers wait.
    called: AtomicBool,
    /// An answer came since the watchdog last looked.
    answered: AtomicBool,
    /// Whether the last reopening failed (logged once until one works).
    reopen_failing: AtomicBool,
}

impl ClusterHandle {
    /// Connects with `client` and starts the watchdog (on the current
    /// tokio runtime).
    pub(crate) async fn open(client: ClusterClient) -> RedisResult<Self> {
        let connection = client.get_async_connection().await?;
        let shared = Arc::new(Shared {
            client,
            current: ArcSwap::from_pointee(Current {
                connection,
                generation: 0,
            }),
            called: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            reopen_failing: AtomicBool::new(false),
        });
        tokio::spawn(watch(Arc::downgrade(&shared)));
        Ok(ClusterHandle { shared })
    }

    /// The connection in use now.
    pub(crate) fn connection(&self) -> ClusterConnection {
        self.shared.current.load().connection.clone()
    }

    /// How many times the connection was replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.shared.current.load().generation
    }

    /// Runs `call` on the connection in use, watched (see the module docs).
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        mark(&self.shared.called);
        let result = call(self.connection()).await;
        if !matches!(&result, Err(e) if e.is_timeout()) {
            mark(&self.shared.answered);
        }
        result
    }
}

/// Sets `flag`, writing only when it was clear: callers on every thread
/// share its cache line, and a read keeps it shared.
fn mark(flag: &AtomicBool) {
    if !flag.load(Ordering::Relaxed) {
        flag.store(true, Ordering::Relaxed);
    }
}

/// What the watchdog knows of the calls between its checks.
#[derive(Debug, Default)]
struct Watch {
    /// How many checks in a row saw calls waiting and no answer.
    quiet_checks: u32,
    /// Whether a call made since the last answer may still be waiting.
    waiting: bool,
}

impl Watch {
    /// Takes in one check's flags; true when calls have waited for
    /// [`STALLED_AFTER`] (as counted in checks) with no answer.
    fn check(&mut self, called: bool, answered: bool) -> bool {
        if answered {
            // Calls made after the answer, in the same period, may still
            // wait: they start the count afresh.
            self.quiet_checks = 0;
            self.waiting = called;
            return false;
        }
        self.waiting |= called;
        if self.waiting {
            self.quiet_checks += 1;
        }
        self.quiet_checks >= quiet_checks_to_stall()
    }

    /// The connection answered (a probe) or was replaced.
    fn reset(&mut self) {
        *self = Watch::default();
    }
}

/// [`STALLED_AFTER`] in checks of [`CHECK_EVERY`].
fn quiet_checks_to_stall() -> u32 {
    STALLED_AFTER.as_millis().div_ceil(CHECK_EVERY.as_millis()) as u32
}

impl Shared {
    /// Whether `connection` answers a `PING` (any reply but a timeout, an
    /// error included) within [`PROBE_TIMEOUT`].
    async fn answers(&self, mut connection: ClusterConnection) -> bool {
        let ping = connection.route_command(
            redis::cmd("PING"),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        );
        match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Err(e)) => !e.is_timeout(),
            Ok(Ok(_)) => true,
            Err(_) => false,
        }
    }

    /// Opens a new connection and puts it in place of the one of
    /// `generation` (unless that one was replaced meanwhile); false when
    /// no new connection could be opened.
    async fn reopen(&self, generation: u64) -> bool {
        let fresh = match tokio::time::timeout(REOPEN_TIMEOUT, self.client.get_async_connection()).await {
            Ok(Ok(fresh)) => fresh,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no connection within {REOPEN_TIMEOUT:?}"),
                };
                if !self.reopen_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %error, "redis-cluster: cannot reopen the stalled connection; will retry");
                } else {
                    tracing::debug!(error = %error, "redis-cluster: reopening failed again");
                }
                return false;
            }
        };
        let fresh = Arc::new(Current {
            connection: fresh,
            generation: generation + 1,
        });
        // Only the watchdog swaps, one swap at a time.
        if self.current.load().generation != generation {
            return true;
        }
        self.current.store(fresh);
        self.reopen_failing.store(false, Ordering::Relaxed);
        tracing::warn!(
            generation = generation + 1,
            "redis-cluster: the connection stopped answering; replaced it with a new one"
        );
        true
    }
}

/// The watchdog: probes a stalled connection and replaces it if the probe
/// gets no answer either.
async fn watch(shared: Weak<Shared>) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calls = Watch::default();
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let called = shared.called.swap(false, Ordering::Relaxed);
        let answered = shared.answered.swap(false, Ordering::Relaxed);
        if !calls.check(called, answered) {
            continue;
        }
        let (connection, generation) = {
            let current = shared.current.load();
            (current.connection.clone(), current.generation)
        };
        // Past a failed reopening the count stays: the next check tries
        // again.
        if shared.answers(connection).await || shared.reopen(generation).await {
            calls.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_answered_in_every_period_never_stall() {
        let mut calls = Watch::default();
        for _ in 0..100 {
            assert!(!calls.check(true, true));
        }
    }

    #[test]
    fn no_calls_never_stall() {
        let mut calls = Watch::default();
        for _ in 0..100 {
            assert!(!calls.check(false, false));
        }
    }

    #[test]
    fn calls_unanswered_for_the_stall_time_stall() {
        let mut calls = Watch::default();
        let needed = quiet_checks_to_stall();
        assert_eq!(needed, 6, "1.5 s in checks of 250 ms");
        assert!(!calls.check(true, false));
        // The call waits on; no new call, no answer.
        for _ in 1..needed - 1 {
            assert!(!calls.check(false, false));
        }
        assert!(calls.check(false, false));
    }

    #[test]
    fn a_call_made_after_the_last_answer_still_counts() {
        let mut calls = Watch::default();
        // One period with an answer and a call after it, then silence.
        assert!(!calls.check(true, true));
        let needed = quiet_checks_to_stall();
        for _ in 1..needed {
            assert!(!calls.check(false, false));
        }
        assert!(calls.check(false, false));
    }

    #[test]
    fn an_answer_restarts_the_count() {
        let mut calls = Watch::default();
        let needed = quiet_checks_to_stall();
        for _ in 0..needed - 1 {
            assert!(!calls.check(true, false));
        }
        assert!(!calls.check(false, true));
        assert!(!calls.check(false, false), "nothing waits after the answer");
        assert!(!calls.waiting);
    }

    #[test]
    fn a_reset_forgets_the_waiting_calls() {
        let mut calls = Watch::default();
        for _ in 0..quiet_checks_to_stall() {
            calls.check(true, false);
        }
        calls.reset();
        assert!(!calls.check(false, false));
    }
}
