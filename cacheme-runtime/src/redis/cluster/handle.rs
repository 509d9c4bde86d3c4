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
//! So every call through the handle is watched: when calls have been in
//! flight for [`STALLED_AFTER`] and none has answered (an error reply is an
//! answer; a timeout is not), a watchdog task sends a `PING` through the
//! connection. No answer within [`PROBE_TIMEOUT`] means the connection is
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
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
    /// The connection in use and its generation (0 for the first).
    current: Mutex<(ClusterConnection, u64)>,
    /// What the times below count from.
    epoch: Instant,
    /// Calls in flight.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last sign of life: an answer, or
    /// the moment calls started being in flight after none were.
    progress: AtomicU64,
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
            current: Mutex::new((connection, 0)),
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
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
        let _in_flight = InFlight::start(&self.shared);
        let result = call(self.connection()).await;
        if !matches!(&result, Err(e) if e.is_timeout()) {
            self.shared.alive();
        }
        result
    }
}

impl Shared {
    fn current(&self) -> (ClusterConnection, u64) {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn alive(&self) {
        self.progress.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// Calls have been in flight for [`STALLED_AFTER`] with no answer.
    fn stalled(&self) -> bool {
        let quiet = self.now().saturating_sub(self.progress.load(Ordering::Relaxed));
        self.in_flight.load(Ordering::Relaxed) > 0 && quiet >= STALLED_AFTER.as_millis() as u64
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
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
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

/// One call in flight, counted until dropped (cancelled calls included).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn start(shared: &'a Shared) -> Self {
        if shared.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            // Quiet time counts from the moment calls wait, not from the
            // last answer before an idle spell.
            shared.alive();
        }
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
