//! The cluster connection of a backend: redis-rs's `ClusterConnection`,
//! replaced by a fresh one when calls through it go unanswered.
//!
//! Two failures leave a cluster connection answering nothing for some or
//! all of its calls, and redis-rs (1.x) recovers from neither by itself:
//!
//! - **A wedged connection.** redis-rs drives every request of a cluster
//!   connection from one task, and while that task re-reads the slot map
//!   it polls none of the requests it has in flight. After a master dies,
//!   a request redirected to the dead node can hold its place in the
//!   queue of the connection map's lock at that very moment; the re-read
//!   then waits for the same lock, and the connection never answers
//!   again, while a new connection to the same cluster works at once.
//!   Measured here: after a master was killed under load, the same client
//!   failed every call for more than 60 s.
//! - **A frozen master** (a hung host, a stopped process, a partition that
//!   drops packets): its connection stays open and nothing comes back, so
//!   no error tells redis-rs to re-read the slot map; redis-rs re-reads it
//!   on a redirection or a broken connection only. After the cluster fails
//!   the master over to its replica, every call for its slots still goes
//!   to the frozen node. Measured here (`redis_cluster_failover`): with
//!   other calls answered meanwhile, the same client never served those
//!   slots again while the node stayed frozen.
//!
//! So every call through the handle is watched. A call is *given up* when
//! its caller stops waiting before it is answered: its time limit
//! (`Limits::bounded`) or a cache budget cut it short. A watchdog task
//! looks every [`CHECK_EVERY`]; when calls have been made for
//! [`STALLED_AFTER`] with no answer at all, or when calls were given up in
//! every check of [`STALLED_AFTER`] (some answered, some not: one node
//! silent), it sends `PING` to every master through the connection. Any
//! master with no reply within [`PROBE_TIMEOUT`] means the connection
//! cannot be trusted: a new one is opened from the same client (its seed
//! nodes, so the slot map is read afresh) and takes its place. Calls
//! already on the old one end with their own timeouts; calls made after
//! the swap use the new one. While a frozen master has not been failed
//! over, the new connection meets the same silence and is replaced again
//! a few seconds later: a few connections per node every few seconds,
//! for as long as the fault lasts. Nothing is sent while calls answer, so
//! a healthy cluster sees no extra command, and callers that give up on
//! calls a healthy cluster would answer (their own short deadlines) cost
//! one `PING` per master every few seconds, no new connection.
//! [`ClusterHandle::generation`] counts the swaps, so what was learnt from
//! the old connection (the slot map of batches) is read again.
//!
//! What a call pays for this is kept small, since every cluster command
//! goes through it: the connection is read through an [`ArcSwap`] (no
//! lock shared by the callers), and a call marks flags ("a call was
//! made", "an answer came", "a call was given up"), each written only
//! when it was clear (the watchdog clears them at every check). Under
//! load they stay set between checks, so calls only read them; the
//! watchdog keeps the time itself.
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
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};

/// Calls in flight this long with no answer, or calls given up for this
/// long, make the watchdog probe.
pub(in crate::redis) const STALLED_AFTER: Duration = Duration::from_millis(1500);

/// How long the probe `PING`s may take before the connection is replaced.
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
    /// A call was given up since the watchdog last looked: dropped before
    /// its answer came, or failed with redis-rs's own timeout.
    gave_up: AtomicBool,
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
            gave_up: AtomicBool::new(false),
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
        // Marks `gave_up` if this future is dropped before the answer.
        let waiting = Waiting(&self.shared.gave_up);
        let result = call(self.connection()).await;
        std::mem::forget(waiting);
        if matches!(&result, Err(e) if e.is_timeout()) {
            mark(&self.shared.gave_up);
        } else {
            mark(&self.shared.answered);
        }
        result
    }
}

/// A call waiting for its answer: dropped while waiting (the caller gave
/// up), it marks its flag. Forgotten once the answer came.
struct Waiting<'a>(&'a AtomicBool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        mark(self.0);
    }
}

/// Sets `flag`, writing only when it was clear: callers on every thread
/// share its cache line, and a read keeps it shared.
fn mark(flag: &AtomicBool) {
    if !flag.load(Ordering::Relaxed) {
        flag.store(true, Ordering::Relaxed);
    }
}

/// What one check of the watchdog read off the flags.
#[derive(Debug, Clone, Copy, Default)]
struct Period {
    /// A call was made.
    called: bool,
    /// An answer came.
    answered: bool,
    /// A call was given up.
    gave_up: bool,
}

/// What the watchdog knows of the calls between its checks.
#[derive(Debug, Default)]
struct Watch {
    /// How many checks in a row saw calls waiting and no answer.
    quiet_checks: u32,
    /// Whether a call made since the last answer may still be waiting.
    waiting: bool,
    /// How many checks in a row saw a call given up.
    given_up_checks: u32,
}

impl Watch {
    /// Takes in one check's flags; true when calls have waited for
    /// [`STALLED_AFTER`] (as counted in checks) with no answer, or calls
    /// were given up in every check for that long.
    fn check(&mut self, period: Period) -> bool {
        self.given_up_checks = if period.gave_up { self.given_up_checks + 1 } else { 0 };
        let giving_up = self.given_up_checks >= quiet_checks_to_stall();
        if period.answered {
            // Calls made after the answer, in the same period, may still
            // wait: they start the count afresh.
            self.quiet_checks = 0;
            self.waiting = period.called;
            return giving_up;
        }
        self.waiting |= period.called;
        if self.waiting {
            self.quiet_checks += 1;
        }
        giving_up || self.quiet_checks >= quiet_checks_to_stall()
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
    /// Whether every master, as `connection` knows them, answers a `PING`
    /// through it (any reply but a timeout, an error included) within
    /// [`PROBE_TIMEOUT`].
    async fn answers(&self, mut connection: ClusterConnection) -> bool {
        let ping = connection.route_command(
            redis::cmd("PING"),
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
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
            "redis-cluster: a node stopped answering through the connection; replaced it with a new one"
        );
        true
    }
}

/// The watchdog: probes a connection whose calls went unanswered and
/// replaces it if a master does not answer the probe either.
async fn watch(shared: Weak<Shared>) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calls = Watch::default();
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let period = Period {
            called: shared.called.swap(false, Ordering::Relaxed),
            answered: shared.answered.swap(false, Ordering::Relaxed),
            gave_up: shared.gave_up.swap(false, Ordering::Relaxed),
        };
        if !calls.check(period) {
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

    /// A period with no call given up.
    fn period(called: bool, answered: bool) -> Period {
        Period {
            called,
            answered,
            gave_up: false,
        }
    }

    /// A period where calls were made and given up, and others answered.
    const ONE_NODE_SILENT: Period = Period {
        called: true,
        answered: true,
        gave_up: true,
    };

    #[test]
    fn calls_given_up_in_every_check_for_the_stall_time_stall_though_others_answer() {
        let mut calls = Watch::default();
        for _ in 1..quiet_checks_to_stall() {
            assert!(!calls.check(ONE_NODE_SILENT));
        }
        assert!(calls.check(ONE_NODE_SILENT));
    }

    #[test]
    fn a_check_with_nothing_given_up_restarts_the_count() {
        let mut calls = Watch::default();
        for _ in 1..quiet_checks_to_stall() {
            assert!(!calls.check(ONE_NODE_SILENT));
        }
        assert!(!calls.check(period(true, true)));
        for _ in 1..quiet_checks_to_stall() {
            assert!(!calls.check(ONE_NODE_SILENT));
        }
        assert!(calls.check(ONE_NODE_SILENT));
    }

    #[test]
    fn a_reset_forgets_the_given_up_calls() {
        let mut calls = Watch::default();
        for _ in 0..quiet_checks_to_stall() {
            calls.check(ONE_NODE_SILENT);
        }
        calls.reset();
        assert!(!calls.check(ONE_NODE_SILENT));
    }

    #[test]
    fn calls_answered_in_every_period_never_stall() {
        let mut calls = Watch::default();
        for _ in 0..100 {
            assert!(!calls.check(period(true, true)));
        }
    }

    #[test]
    fn no_calls_never_stall() {
        let mut calls = Watch::default();
        for _ in 0..100 {
            assert!(!calls.check(period(false, false)));
        }
    }

    #[test]
    fn calls_unanswered_for_the_stall_time_stall() {
        let mut calls = Watch::default();
        let needed = quiet_checks_to_stall();
        assert_eq!(needed, 6, "1.5 s in checks of 250 ms");
        assert!(!calls.check(period(true, false)));
        // The call waits on; no new call, no answer.
        for _ in 1..needed - 1 {
            assert!(!calls.check(period(false, false)));
        }
        assert!(calls.check(period(false, false)));
    }

    #[test]
    fn a_call_made_after_the_last_answer_still_counts() {
        let mut calls = Watch::default();
        // One period with an answer and a call after it, then silence.
        assert!(!calls.check(period(true, true)));
        let needed = quiet_checks_to_stall();
        for _ in 1..needed {
            assert!(!calls.check(period(false, false)));
        }
        assert!(calls.check(period(false, false)));
    }

    #[test]
    fn an_answer_restarts_the_count() {
        let mut calls = Watch::default();
        let needed = quiet_checks_to_stall();
        for _ in 0..needed - 1 {
            assert!(!calls.check(period(true, false)));
        }
        assert!(!calls.check(period(false, true)));
        assert!(!calls.check(period(false, false)), "nothing waits after the answer");
        assert!(!calls.waiting);
    }

    #[test]
    fn a_reset_forgets_the_waiting_calls() {
        let mut calls = Watch::default();
        for _ in 0..quiet_checks_to_stall() {
            calls.check(period(true, false));
        }
        calls.reset();
        assert!(!calls.check(period(false, false)));
    }
}
