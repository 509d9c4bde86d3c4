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
//! watchdog task sends a `PING` through the connection. No answer within [`PROBE_TIMEOUT`] means the connection is
//! wedged: a new one is opened from the same client (its seed nodes) and
//! takes its place. Calls already on the old one end with their own
//! timeouts; calls made after the swap use the new one. Nothing is sent
//! while calls answer, so a healthy cluster sees no extra command.
//! [`ClusterHandle::generation`] counts the swaps, so what was learnt
//! from the old connection (the slot map of batches) is read again.
//!
//! The watchdog holds the handle weakly and ends once the backend and
//! all its clones are gone.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

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

/// No call is waiting for an answer.
const NONE: u64 = u64::MAX;

/// How long opening a replacement connection may take.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster connection that replaces itself when wedged (see the module
/// docs). Cheap to clone: clones share the connection and the watchdog.
#[derive(Clone)]
pub(crate) struct ClusterHandle {
    shared: Arc<Shared>,
}

struct Shared {
    client: ClusterClient,
    /// The connection in use and its generation (0 for the first). Read
    /// by every call, written only by a swap: a read lock keeps callers
    /// on different threads from queueing behind each other.
    current: RwLock<(ClusterConnection, u64)>,
    /// What the times below count from.
    epoch: Instant,
    /// Milliseconds since `epoch` of the first call made since the last
    /// answer ([`NONE`] when every call since was answered). A call its
    /// caller gave up on (a cache budget cut it short) still counts: a
    /// wedged connection is noticed however briefly callers wait.
    unanswered_since: AtomicU64,
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
            current: RwLock::new((connection, 0)),
            epoch: Instant::now(),
            unanswered_since: AtomicU64::new(NONE),
            reopen_failing: AtomicBool::new(false),
        });
        tokio::spawn(watch(Arc::downgrade(&shared)));
        Ok(ClusterHandle { shared })
    }

    /// The connection in use now.
    pub(crate) fn connection(&self) -> ClusterConnection {
        self.shared.current().0
    }

    /// How many times the connection was replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.shared.current().1
    }

    /// Runs `call` on the connection in use, watched (see the module docs).
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.shared.calling();
        let result = call(self.connection()).await;
        if !matches!(&result, Err(e) if e.is_timeout()) {
            self.shared.alive();
        }
        result
    }
}

impl Shared {
    fn current(&self) -> (ClusterConnection, u64) {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// An answer came: nothing is waiting any more.
    fn alive(&self) {
        // Every call ends here: a load first spares the cache line shared
        // by all callers a write when nothing was waiting.
        if self.unanswered_since.load(Ordering::Relaxed) != NONE {
            self.unanswered_since.store(NONE, Ordering::Relaxed);
        }
    }

    /// A call starts: if none was waiting, the quiet time counts from now.
    fn calling(&self) {
        // Under load a call is usually waiting already: no clock read then.
        if self.unanswered_since.load(Ordering::Relaxed) == NONE {
            let _ = self
                .unanswered_since
                .compare_exchange(NONE, self.now(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Calls have been made for [`STALLED_AFTER`] with no answer.
    fn stalled(&self) -> bool {
        let since = self.unanswered_since.load(Ordering::Relaxed);
        since != NONE && self.now().saturating_sub(since) >= STALLED_AFTER.as_millis() as u64
    }

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
    /// `generation` (unless that one was replaced meanwhile).
    async fn reopen(&self, generation: u64) {
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
                return;
            }
        };
        {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            if current.1 != generation {
                return;
            }
            *current = (fresh, generation + 1);
        }
        self.reopen_failing.store(false, Ordering::Relaxed);
        self.alive();
        tracing::warn!(
            generation = generation + 1,
            "redis-cluster: the connection stopped answering; replaced it with a new one"
        );
    }
}

/// The watchdog: probes a stalled connection and replaces it if the probe
/// gets no answer either.
async fn watch(shared: Weak<Shared>) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.stalled() {
            continue;
        }
        let (connection, generation) = shared.current();
        if shared.answers(connection).await {
            shared.alive();
            continue;
        }
        shared.reopen(generation).await;
    }
}
