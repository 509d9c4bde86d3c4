//! Stampede notifications over Redis pub/sub: one push connection per
//! backend (so per client), a dispatcher task, and a table of waiters per
//! channel.
//!
//! - A waiter registers in the table, then the channel is subscribed (if
//!   no other waiter of this process has it) and the subscription is
//!   confirmed by the server before [`Notifier::watch`] returns: a
//!   notification published after that cannot be missed.
//! - The dispatcher reads the connection's push messages and hands each
//!   to the waiters of its channel, removing them from the table.
//! - A waiter that leaves (notified, timed out, cancelled) is removed; the
//!   last one of a channel unsubscribes it. Subscribes and unsubscribes go
//!   through one async lock so they reach the server in order.
//! - One server: `SUBSCRIBE`/`PUBLISH` on a RESP3 `ConnectionManager` that
//!   reconnects and resubscribes by itself. A cluster: sharded
//!   `SSUBSCRIBE`/`SPUBLISH` on a RESP3 cluster connection, so a message
//!   travels to the channel's shard only, not to every node.
//! - A lost message or a reconnect costs a waiter at most one wait round
//!   (`lock_ttl` plus a margin), never an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
#[cfg(feature = "redis-cluster")]
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use crate::backend::BoxFuture;
use crate::stampede::{Notice, Watch};

/// The connection notifications arrive on.
pub(super) enum PushConnection {
    Node(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(ClusterConnection),
}

impl PushConnection {
    async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            PushConnection::Node(node) => node.subscribe(channel).await,
            #[cfg(feature = "redis-cluster")]
            PushConnection::Cluster(cluster) => cluster.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            PushConnection::Node(node) => node.unsubscribe(channel).await,
            #[cfg(feature = "redis-cluster")]
            PushConnection::Cluster(cluster) => cluster.sunsubscribe(channel).await,
        }
    }
}

/// Makes the push connection, on first use.
pub(super) type Connector = Box<dyn Fn() -> BoxFuture<'static, RedisResult<PushConnection>> + Send + Sync>;

/// The waiters of one channel.
type Waiters = Vec<(u64, oneshot::Sender<Notice>)>;

/// Cheap to clone; clones share the connection and the table.
#[derive(Clone)]
pub(super) struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    connect: Connector,
    /// Push messages, until the dispatcher takes them.
    pushes: Mutex<Option<UnboundedReceiver<PushInfo>>>,
    table: Mutex<HashMap<String, Waiters>>,
    next_id: AtomicU64,
    /// Registrations alive.
    live: AtomicUsize,
    subscriptions: tokio::sync::Mutex<Subscriptions>,
}

#[derive(Default)]
struct Subscriptions {
    connection: Option<PushConnection>,
    /// Channel -> registrations alive that need it.
    counts: HashMap<String, usize>,
}

impl Notifier {
    /// A notifier whose connection `connect` makes and whose messages
    /// arrive on `pushes`.
    pub(super) fn new(connect: Connector, pushes: UnboundedReceiver<PushInfo>) -> Self {
        Notifier {
            inner: Arc::new(Inner {
                connect,
                pushes: Mutex::new(Some(pushes)),
                table: Mutex::default(),
                next_id: AtomicU64::new(0),
                live: AtomicUsize::new(0),
                subscriptions: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// Registers for `channel`; returns once the server confirmed the
    /// subscription.
    pub(super) async fn watch(&self, channel: &str) -> RedisResult<Watch> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tell, notice) = oneshot::channel();
        lock(&self.inner.table)
            .entry(channel.to_owned())
            .or_default()
            .push((id, tell));
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        // From here on, dropping the registration cleans up.
        let registration = Registration {
            inner: Arc::clone(&self.inner),
            channel: channel.to_owned(),
            id,
            counted: Arc::new(AtomicBool::new(false)),
        };
        self.subscribe(channel, &registration.counted).await?;
        Ok(Watch::notified(notice, Box::new(registration)))
    }

    /// Counts a registration of `channel` (marking `counted` under the
    /// lock, so a cancelled caller's cleanup knows), subscribing the first.
    async fn subscribe(&self, channel: &str, counted: &AtomicBool) -> RedisResult<()> {
        let mut subs = self.inner.subscriptions.lock().await;
        if subs.connection.is_none() {
            let pushes = lock(&self.inner.pushes).take();
            let connection = (self.inner.connect)().await?;
            if let Some(pushes) = pushes {
                tokio::spawn(dispatch(Arc::downgrade(&self.inner), pushes));
            }
            subs.connection = Some(connection);
        }
        let count = subs.counts.entry(channel.to_owned()).or_default();
        *count += 1;
        counted.store(true, Ordering::Relaxed);
        if *count == 1 {
            let subscribed = match subs.connection.as_mut() {
                Some(connection) => connection.subscribe(channel).await,
                None => Ok(()),
            };
            if let Err(error) = subscribed {
                subs.counts.remove(channel);
                counted.store(false, Ordering::Relaxed);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Registrations alive (waiters of this process).
    pub(super) fn waiting(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Channels subscribed now.
    pub(super) async fn subscribed(&self) -> usize {
        self.inner.subscriptions.lock().await.counts.len()
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

/// One waiter's place in the table; dropping it leaves.
struct Registration {
    inner: Arc<Inner>,
    channel: String,
    id: u64,
    /// Whether this registration holds a count in `Subscriptions`.
    counted: Arc<AtomicBool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut table = lock(&self.inner.table);
            if let Some(waiters) = table.get_mut(&self.channel) {
                waiters.retain(|(id, _)| *id != self.id);
                if waiters.is_empty() {
                    table.remove(&self.channel);
                }
            }
        }
        self.inner.live.fetch_sub(1, Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let channel = std::mem::take(&mut self.channel);
        let counted = Arc::clone(&self.counted);
        runtime.spawn(async move {
            let mut subs = inner.subscriptions.lock().await;
            if !counted.load(Ordering::Relaxed) {
                return;
            }
            let Some(count) = subs.counts.get_mut(&channel) else {
                return;
            };
            *count -= 1;
            if *count > 0 {
                return;
            }
            subs.counts.remove(&channel);
            if let Some(connection) = subs.connection.as_mut()
                && let Err(error) = connection.unsubscribe(&channel).await
            {
                tracing::debug!(channel, %error, "unsubscribe failed");
            }
        });
    }
}

/// Hands each published notice to the waiters of its channel. Ends when
/// the notifier is dropped or the connection's push sender goes away.
async fn dispatch(inner: std::sync::Weak<Inner>, mut pushes: UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
            continue;
        }
        let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
            continue;
        };
        let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload)) else {
            continue;
        };
        let notice = if payload == b"failed" {
            Notice::Failed
        } else {
            Notice::Filled
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            continue;
        };
        let waiters = lock(&inner.table).remove(channel);
        for (_, tell) in waiters.into_iter().flatten() {
            let _ = tell.send(notice);
        }
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
