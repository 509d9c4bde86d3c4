//! Stampede notifications over Redis pub/sub: one push connection per
//! backend (so per client), a table of waiters per channel, a dispatcher
//! task that hands each message to its channel's waiters, and a subscriber
//! task that keeps the server's subscriptions in line with the table.
//!
//! - A waiter registers in the table, then asks the subscriber task for a
//!   round and waits for it: [`Notifier::watch`] returns once the server
//!   confirmed the channel's subscription, so a notification published
//!   after that cannot be missed. A channel some waiter of this process
//!   already has subscribed costs no round trip at all.
//! - Each channel has its own state (pending, subscribed, unsubscribing);
//!   no lock is held across a network call. The subscriber task does the
//!   network work in rounds: each round takes every request queued so far,
//!   and sends one `SUBSCRIBE` for every channel that has waiters and is
//!   not subscribed and one `UNSUBSCRIBE` for every subscribed channel
//!   whose waiters all left. So many waiters arriving together, or a batch
//!   registering many keys at once ([`Notifier::watch_many`]), cost one
//!   command, not one per channel; and a subscribe and an unsubscribe of
//!   one channel reach the server in the order they were decided.
//! - Failures do not stick: a connect or a subscribe that fails (or whose
//!   waiter gave up or was cancelled) fails only the waiters of that round;
//!   the next request connects or subscribes again. The dispatcher is
//!   started before the first connect and lives as long as the notifier.
//! - One server: `SUBSCRIBE`/`PUBLISH` on a RESP3 `ConnectionManager` that
//!   reconnects and resubscribes by itself after a lost connection. A
//!   cluster: sharded `SSUBSCRIBE`/`SPUBLISH` on a RESP3 cluster connection
//!   (which also resubscribes), so a message travels to the channel's shard
//!   only; Redis refuses a sharded subscribe across slots, so a round sends
//!   one `SSUBSCRIBE` per slot.
//! - A message published while the connection is being replaced is lost:
//!   it costs a waiter at most one wait round (`lock_ttl` plus a margin),
//!   never an error.
//! - The listened channels (a local tier's announcements) are checked end
//!   to end: every [`BEAT_EVERY`] the subscriber task sends a heartbeat
//!   through the push connection. On one server that is a `PING` on the
//!   connection that holds the subscriptions; in a cluster, a message
//!   (`~` and this notifier's id) `SPUBLISH`ed on each channel, which the
//!   dispatcher notes when it comes back. A heartbeat not answered within
//!   [`SILENT_AFTER`] means messages may be going missing without the
//!   connection breaking: a frozen node (or a shard master frozen and
//!   failed over, whose subscribers stay attached to it), a connection a
//!   middlebox dropped silently. The listeners then hear [`Heard::Lost`],
//!   as on a disconnection, and the connection is dropped and made anew
//!   (in a cluster with a fresh slot map), which subscribes every channel
//!   again. Heartbeat messages are not announcements: listeners never see
//!   them, and other processes (of this version or an earlier one) ignore
//!   them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
#[cfg(feature = "redis-cluster")]
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, PushInfo, PushKind, RedisError, RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;

use crate::backend::BoxFuture;
use crate::stampede::{Heard, Hearing, Notice, Watch};

/// The longest a round (connecting, subscribing, unsubscribing) may take;
/// past it the round fails and its channels are subscribed again by the
/// next one.
const ROUND_LIMIT: Duration = Duration::from_secs(5);

/// How often a heartbeat is published on each listened channel.
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(1);

/// A heartbeat not heard back within this long makes the subscription
/// silent (see the module docs).
pub(crate) const SILENT_AFTER: Duration = Duration::from_secs(2);

/// How long publishing one heartbeat may take.
const BEAT_TIMEOUT: Duration = Duration::from_millis(500);

/// The connection notifications arrive on.
pub(super) enum PushConnection {
    Node(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(ClusterConnection),
}

impl PushConnection {
    /// Subscribes to `channels`: one `SUBSCRIBE`, or in a cluster one
    /// `SSUBSCRIBE` per slot.
    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            PushConnection::Node(node) => node.subscribe(channels).await,
            #[cfg(feature = "redis-cluster")]
            PushConnection::Cluster(cluster) => {
                per_slot(channels, |group| {
                    let mut cluster = cluster.clone();
                    async move { cluster.ssubscribe(group).await }
                })
                .await
            }
        }
    }

    /// Sends one heartbeat for the listened `channels` (see the module
    /// docs) and returns those heard back already. On one server every
    /// subscription lives on this connection, so a `PING` answered on it
    /// is every channel's heartbeat heard (and the server's `PUBLISH`
    /// count stays a count of announcements). In a cluster, `payload` is
    /// `SPUBLISH`ed on each channel: it reaches whichever node serves the
    /// channel's slot now, and comes back (to the dispatcher) only if this
    /// connection's subscription is on that node. Each send may take
    /// [`BEAT_TIMEOUT`]; one that fails or times out is not heard.
    async fn beat<'c>(&mut self, channels: &'c [String], payload: &str) -> &'c [String] {
        match self {
            PushConnection::Node(node) => {
                let ping = redis::cmd("PING");
                match tokio::time::timeout(BEAT_TIMEOUT, ping.query_async::<Value>(node)).await {
                    Ok(Ok(_)) => channels,
                    _ => &[],
                }
            }
            #[cfg(feature = "redis-cluster")]
            PushConnection::Cluster(cluster) => {
                for channel in channels {
                    let mut publish = redis::cmd("SPUBLISH");
                    publish.arg(channel).arg(payload);
                    let _ = tokio::time::timeout(BEAT_TIMEOUT, publish.query_async::<Value>(cluster)).await;
                }
                &[]
            }
        }
    }

    /// Unsubscribes from `channels`, as [`subscribe`](Self::subscribe).
    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            PushConnection::Node(node) => node.unsubscribe(channels).await,
            #[cfg(feature = "redis-cluster")]
            PushConnection::Cluster(cluster) => {
                per_slot(channels, |group| {
                    let mut cluster = cluster.clone();
                    async move { cluster.sunsubscribe(group).await }
                })
                .await
            }
        }
    }
}

/// Runs `command` once per slot with the channels of that slot, all slots
/// concurrently; the first error, if any.
#[cfg(feature = "redis-cluster")]
async fn per_slot<F, Fut>(channels: &[String], command: F) -> RedisResult<()>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = RedisResult<()>>,
{
    let mut slots: HashMap<redis::cluster_routing::Slot, Vec<String>> = HashMap::new();
    for channel in channels {
        let slot = redis::cluster_routing::Slot::for_key(channel);
        slots.entry(slot).or_default().push(channel.clone());
    }
    let sent = futures_util::future::join_all(slots.into_values().map(command)).await;
    sent.into_iter().collect()
}

/// Makes the push connection, on first use and again after a failure.
pub(super) type Connector = Box<dyn Fn() -> BoxFuture<'static, RedisResult<PushConnection>> + Send + Sync>;

/// Where one channel stands with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not subscribed, or not known to be (a round failed).
    Pending,
    /// Subscribed, confirmed by the server.
    Subscribed,
    /// An unsubscribe is on its way; a waiter arriving now needs a round.
    Unsubscribing,
}

/// One channel: its waiters and its state. An entry lives while it has
/// waiters or a subscription to undo, or for good when it has a listener.
struct Channel {
    waiters: Vec<(u64, oneshot::Sender<Notice>)>,
    state: State,
    /// A listener for every message (a local tier's announcements), with
    /// the store it hears for.
    listener: Option<(&'static str, Hearing)>,
    /// When the oldest heartbeat not heard back yet was published.
    unheard_since: Option<Instant>,
}

impl Channel {
    fn new() -> Self {
        Channel {
            waiters: Vec::new(),
            state: State::Pending,
            listener: None,
            unheard_since: None,
        }
    }

    /// Whether the channel must stay subscribed.
    fn wanted(&self) -> bool {
        !self.waiters.is_empty() || self.listener.is_some()
    }
}

/// Asks the subscriber task for a round; `done`, if any, hears when it
/// ended (with its error, if it failed).
struct Request {
    done: Option<oneshot::Sender<RedisResult<()>>>,
}

/// Cheap to clone; clones share the connection and the table.
#[derive(Clone)]
pub(super) struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    connect: Connector,
    /// The receivers of the two tasks, until the first watch starts them.
    tasks: Mutex<Option<(UnboundedReceiver<PushInfo>, UnboundedReceiver<Request>)>>,
    requests: UnboundedSender<Request>,
    table: Mutex<HashMap<String, Channel>>,
    next_id: AtomicU64,
    /// Registrations alive.
    live: AtomicUsize,
    /// This notifier's heartbeat message (in a cluster): `~` and a random
    /// id.
    beat: String,
}

impl Notifier {
    /// A notifier whose connection `connect` makes and whose messages
    /// arrive on `pushes`. Nothing connects before the first watch.
    pub(super) fn new(connect: Connector, pushes: UnboundedReceiver<PushInfo>) -> Self {
        let (requests, queued) = unbounded_channel();
        Notifier {
            inner: Arc::new(Inner {
                connect,
                tasks: Mutex::new(Some((pushes, queued))),
                requests,
                table: Mutex::default(),
                next_id: AtomicU64::new(0),
                live: AtomicUsize::new(0),
                beat: format!("~{:x}", random_id()),
            }),
        }
    }

    /// Registers for `channel`; returns once the server confirmed the
    /// subscription (see [`watch_many`](Self::watch_many)).
    pub(super) async fn watch(&self, channel: &str) -> RedisResult<Watch> {
        let mut watches = self.watch_many(&[channel]).await?;
        watches
            .pop()
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "no watch for the channel")))
    }

    /// Registers for every channel of `channels` and returns one [`Watch`]
    /// per channel, in order, once the server confirmed every subscription:
    /// the channels not subscribed yet go out in one `SUBSCRIBE` (in a
    /// cluster one `SSUBSCRIBE` per slot), together with those of any other
    /// waiter that asked meanwhile.
    ///
    /// An error (no connection, the server refused) fails the whole call;
    /// the next call tries again.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future at any point leaves nothing behind: the
    /// registrations made so far are removed, and a subscription no waiter
    /// needs any more is undone by the subscriber task.
    pub(crate) async fn watch_many(&self, channels: &[&str]) -> RedisResult<Vec<Watch>> {
        self.start_tasks();
        let mut registrations = Vec::with_capacity(channels.len());
        let mut notices = Vec::with_capacity(channels.len());
        let mut ready = true;
        {
            let mut table = lock(&self.inner.table);
            for channel in channels {
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                let (tell, notice) = oneshot::channel();
                let entry = table.entry((*channel).to_owned()).or_insert_with(Channel::new);
                entry.waiters.push((id, tell));
                ready &= entry.state == State::Subscribed;
                self.inner.live.fetch_add(1, Ordering::Relaxed);
                // From here on, dropping the registration cleans up.
                registrations.push(Registration {
                    inner: Arc::clone(&self.inner),
                    channel: (*channel).to_owned(),
                    id,
                });
                notices.push(notice);
            }
        }
        if !ready {
            let (done, round) = oneshot::channel();
            self.inner
                .requests
                .send(Request { done: Some(done) })
                .map_err(|_| gone())?;
            let outcome = round.await.map_err(|_| gone())?;
            let table = lock(&self.inner.table);
            // A channel is covered when it is subscribed, or when its notice
            // already came (the dispatcher took the waiter).
            let missing = registrations.iter().any(|registration| {
                table.get(&registration.channel).is_some_and(|entry| {
                    entry.state != State::Subscribed && entry.waiters.iter().any(|(id, _)| *id == registration.id)
                })
            });
            if missing {
                outcome?;
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "not subscribed",
                    "the subscription round did not confirm every channel".to_owned(),
                )));
            }
        }
        Ok(notices
            .into_iter()
            .zip(registrations)
            .map(|(notice, registration)| Watch::notified(notice, Box::new(registration)))
            .collect())
    }

    /// Hands every message of each channel of `channels` (with the store
    /// it is for) to `hear`, for as long as the notifier lives: subscribes
    /// them in the next round, and again after a lost connection (the
    /// connection resubscribes by itself). `hear` also learns when a
    /// channel's subscription is confirmed ([`Heard::Listening`]) and when
    /// the connection is lost ([`Heard::Lost`]), so a listener can tell
    /// when it may have missed a message. Needs a Tokio runtime.
    pub(super) fn listen(&self, channels: &[(String, &'static str)], hear: Hearing) {
        self.start_tasks();
        {
            let mut table = lock(&self.inner.table);
            for (channel, store) in channels {
                let entry = table.entry(channel.clone()).or_insert_with(Channel::new);
                entry.listener = Some((store, Arc::clone(&hear)));
            }
        }
        let _ = self.inner.requests.send(Request { done: None });
    }

    /// Starts the dispatcher and the subscriber task, once.
    fn start_tasks(&self) {
        let Some((pushes, requests)) = lock(&self.inner.tasks).take() else {
            return;
        };
        tokio::spawn(dispatch(Arc::downgrade(&self.inner), pushes));
        tokio::spawn(subscriber(Arc::downgrade(&self.inner), requests));
    }

    /// Registrations alive (waiters of this process).
    pub(super) fn waiting(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Channels subscribed now (or being unsubscribed).
    pub(super) async fn subscribed(&self) -> usize {
        lock(&self.inner.table)
            .values()
            .filter(|entry| entry.state != State::Pending)
            .count()
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

fn gone() -> RedisError {
    RedisError::from((ErrorKind::Client, "the notifier's subscriber task has stopped"))
}

/// One waiter's place in the table; dropping it leaves, and asks the
/// subscriber task to undo a subscription nobody needs any more.
struct Registration {
    inner: Arc<Inner>,
    channel: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let undo = {
            let mut table = lock(&self.inner.table);
            match table.get_mut(&self.channel) {
                Some(entry) => {
                    entry.waiters.retain(|(id, _)| *id != self.id);
                    let idle = !entry.wanted();
                    if idle && entry.state == State::Pending {
                        table.remove(&self.channel);
                    }
                    idle
                }
                None => false,
            }
        };
        self.inner.live.fetch_sub(1, Ordering::Relaxed);
        if undo {
            let _ = self.inner.requests.send(Request { done: None });
        }
    }
}

/// Keeps the server's subscriptions in line with the table, one round at a
/// time, and checks the listened channels with heartbeats between rounds
/// (see the module docs). Ends when the notifier is dropped.
async fn subscriber(inner: Weak<Inner>, mut requests: UnboundedReceiver<Request>) {
    let mut connection: Option<PushConnection> = None;
    let mut beats = tokio::time::interval(BEAT_EVERY);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            request = requests.recv() => match request {
                Some(request) => request,
                None => return,
            },
            _ = beats.tick() => {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                heartbeat(&inner, &mut connection).await;
                continue;
            }
        };
        let mut waiting = vec![first];
        while let Ok(more) = requests.try_recv() {
            waiting.push(more);
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let outcome = match tokio::time::timeout(ROUND_LIMIT, round(&inner, &mut connection)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                settle_failed(&inner);
                Err(RedisError::from((
                    ErrorKind::Io,
                    "subscription round timed out",
                    format!("no answer within {ROUND_LIMIT:?}"),
                )))
            }
        };
        if let Err(error) = &outcome {
            tracing::debug!(%error, "notification subscription round failed");
        }
        drop(inner);
        for request in waiting {
            if let Some(done) = request.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

/// One heartbeat: the listened channels whose last heartbeat has been
/// unheard for [`SILENT_AFTER`] make the subscription silent (listeners
/// hear [`Heard::Lost`], the connection is dropped, a round subscribes
/// everything again on a new one); otherwise a heartbeat goes out on each.
/// A listened channel not subscribed (its round failed) asks for a round:
/// once per beat, a failing server is asked again.
async fn heartbeat(inner: &Inner, connection: &mut Option<PushConnection>) {
    let now = Instant::now();
    let (silent, channels, unsubscribed) = {
        let mut table = lock(&inner.table);
        let mut silent = false;
        let mut unsubscribed = false;
        let mut channels = Vec::new();
        for (channel, entry) in table.iter_mut() {
            if entry.listener.is_none() {
                continue;
            }
            if entry.state != State::Subscribed {
                unsubscribed |= entry.state == State::Pending;
                continue;
            }
            match entry.unheard_since {
                Some(since) => silent |= now.duration_since(since) >= SILENT_AFTER,
                None => entry.unheard_since = Some(now),
            }
            channels.push(channel.clone());
        }
        (silent, channels, unsubscribed)
    };
    if unsubscribed {
        // A listened channel whose round failed: nobody else asks again.
        let _ = inner.requests.send(Request { done: None });
    }
    if silent {
        tracing::warn!(
            "redis: a heartbeat on the local tiers' announcement channels was not heard back within {SILENT_AFTER:?}; \
             the local tiers stop serving, and the push connection is made anew"
        );
        *connection = None;
        {
            let mut table = lock(&inner.table);
            let unsubscribing: Vec<String> = table
                .iter_mut()
                .filter_map(|(channel, entry)| {
                    entry.unheard_since = None;
                    match entry.state {
                        State::Subscribed => {
                            entry.state = State::Pending;
                            None
                        }
                        State::Unsubscribing => Some(channel.clone()),
                        State::Pending => None,
                    }
                })
                .collect();
            settle_unsubscribed(&mut table, &unsubscribing);
        }
        lost(inner);
        let _ = inner.requests.send(Request { done: None });
        return;
    }
    let Some(connection) = connection.as_mut() else {
        return;
    };
    let heard = connection.beat(&channels, &inner.beat).await;
    if !heard.is_empty() {
        let mut table = lock(&inner.table);
        for channel in heard {
            if let Some(entry) = table.get_mut(channel) {
                entry.unheard_since = None;
            }
        }
    }
}

/// One round: what to subscribe and unsubscribe, decided under the table's
/// lock, then sent (connecting first if needed) with the lock released.
async fn round(inner: &Inner, connection: &mut Option<PushConnection>) -> RedisResult<()> {
    let (subscribe, unsubscribe) = {
        let mut table = lock(&inner.table);
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for (channel, entry) in table.iter_mut() {
            match (entry.wanted(), entry.state) {
                (true, State::Pending) => subscribe.push(channel.clone()),
                (false, State::Subscribed) => {
                    entry.state = State::Unsubscribing;
                    unsubscribe.push(channel.clone());
                }
                _ => {}
            }
        }
        (subscribe, unsubscribe)
    };
    if subscribe.is_empty() && unsubscribe.is_empty() {
        return Ok(());
    }
    let sent = async {
        if connection.is_none() {
            *connection = Some((inner.connect)().await?);
        }
        let Some(connection) = connection.as_mut() else {
            return Ok(());
        };
        if !unsubscribe.is_empty() {
            connection.unsubscribe(&unsubscribe).await?;
        }
        if !subscribe.is_empty() {
            connection.subscribe(&subscribe).await?;
        }
        Ok(())
    };
    let outcome: RedisResult<()> = sent.await;
    let mut table = lock(&inner.table);
    match &outcome {
        Ok(()) => {
            for channel in &subscribe {
                if let Some(entry) = table.get_mut(channel) {
                    entry.state = State::Subscribed;
                }
            }
            settle_unsubscribed(&mut table, &unsubscribe);
        }
        // What reached the server is unknown: both lists count as not
        // subscribed, and the next round subscribes what has waiters.
        Err(_) => settle_unsubscribed(&mut table, &unsubscribe),
    }
    outcome
}

/// After a round that timed out: nothing in flight is known to have
/// happened.
fn settle_failed(inner: &Inner) {
    let mut table = lock(&inner.table);
    let unsubscribing: Vec<String> = table
        .iter()
        .filter(|(_, entry)| entry.state == State::Unsubscribing)
        .map(|(channel, _)| channel.clone())
        .collect();
    settle_unsubscribed(&mut table, &unsubscribing);
}

/// `channels` are no longer subscribed: drop the entries no waiter needs,
/// and mark the others (a waiter arrived meanwhile) for the next round.
fn settle_unsubscribed(table: &mut HashMap<String, Channel>, channels: &[String]) {
    for channel in channels {
        if let Some(entry) = table.get_mut(channel) {
            if !entry.wanted() {
                table.remove(channel);
            } else {
                entry.state = State::Pending;
            }
        }
    }
}

/// Hands each published notice to the waiters of its channel. Ends when
/// the notifier is dropped or the connection's push sender goes away.
async fn dispatch(inner: Weak<Inner>, mut pushes: UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage => {}
            PushKind::Subscribe | PushKind::SSubscribe => {
                confirmed(&inner, &push.data);
                continue;
            }
            PushKind::Disconnection => {
                lost(&inner);
                continue;
            }
            _ => continue,
        }
        let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
            continue;
        };
        let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload)) else {
            continue;
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            continue;
        };
        if payload.first() == Some(&b'~') {
            // A heartbeat: this notifier's own comes back; others' are
            // another process's business.
            if payload == inner.beat.as_bytes()
                && let Some(entry) = lock(&inner.table).get_mut(channel)
            {
                entry.unheard_since = None;
            }
            continue;
        }
        let notice = if payload == b"failed" {
            Notice::Failed
        } else {
            Notice::Filled
        };
        // The entry stays (with its subscription) until its waiters'
        // registrations are dropped.
        let (waiters, listener) = match lock(&inner.table).get_mut(channel) {
            Some(entry) => (std::mem::take(&mut entry.waiters), entry.listener.clone()),
            None => continue,
        };
        for (_, tell) in waiters {
            let _ = tell.send(notice);
        }
        if let Some((store, hear)) = listener {
            hear(Heard::Announcement { store, payload });
        }
    }
}

/// A subscription confirmed by the server (also after a reconnect, when
/// the connection resubscribes by itself): its listener hears it.
fn confirmed(inner: &Inner, data: &[Value]) {
    let Some(channel) = data.first().and_then(bytes).and_then(|c| std::str::from_utf8(c).ok()) else {
        return;
    };
    let listener = lock(&inner.table).get(channel).and_then(|entry| entry.listener.clone());
    if let Some((store, hear)) = listener {
        hear(Heard::Listening { store });
    }
}

/// The connection was lost: every listener may miss messages until its
/// channel is subscribed again.
fn lost(inner: &Inner) {
    let mut listeners: Vec<Hearing> = Vec::new();
    for entry in lock(&inner.table).values() {
        if let Some((_, hear)) = &entry.listener
            && !listeners.iter().any(|known| Arc::ptr_eq(known, hear))
        {
            listeners.push(Arc::clone(hear));
        }
    }
    for hear in listeners {
        hear(Heard::Lost);
    }
}

/// A random id, different per notifier and per process.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use cacheme_test_support::RedisServer;
    use redis::aio::ConnectionManagerConfig;

    use super::*;

    /// A notifier on `server`, made the way the backend makes it.
    fn notifier(server: &RedisServer) -> Notifier {
        notifier_at(&format!("{}/?protocol=resp3", server.url()))
    }

    fn notifier_at(url: &str) -> Notifier {
        let client = redis::Client::open(url).unwrap();
        let (pushes_in, pushes) = unbounded_channel();
        Notifier::new(
            Box::new(move || {
                let client = client.clone();
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(1)
                    .set_push_sender(pushes_in.clone())
                    .set_automatic_resubscription();
                Box::pin(async move {
                    Ok(PushConnection::Node(
                        ConnectionManager::new_with_config(client, config).await?,
                    ))
                })
            }),
            pushes,
        )
    }

    async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(server.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// `cmdstat_<command>` calls from `INFO commandstats`.
    async fn calls(raw: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(raw).await.unwrap();
        let needle = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&needle))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }

    /// Publishes a fill notice on `channel` until a subscriber receives it
    /// (a resubscription may still be on its way), for at most 10 s.
    async fn publish(raw: &mut redis::aio::MultiplexedConnection, channel: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let heard: u64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg("filled")
                .query_async(raw)
                .await
                .unwrap();
            if heard > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "nobody subscribed to {channel}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `watch`'s notice; it must come well within a second.
    async fn woken(watch: &mut Watch) {
        let started = Instant::now();
        let notice = watch.wait(Duration::from_secs(5)).await;
        assert_eq!(notice, Notice::Filled);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "woken after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn many_channels_are_subscribed_with_one_command() {
        let server = RedisServer::start();
        let mut raw = raw(&server).await;
        let notifier = notifier(&server);
        let names: Vec<String> = (0..200).map(|i| format!("app:{{k{i}}}:done")).collect();
        let channels: Vec<&str> = names.iter().map(String::as_str).collect();

        let before = calls(&mut raw, "subscribe").await;
        let mut watches = notifier.watch_many(&channels).await.unwrap();
        assert_eq!(
            calls(&mut raw, "subscribe").await - before,
            1,
            "one SUBSCRIBE for 200 channels"
        );
        assert_eq!(notifier.subscribed().await, 200);
        assert_eq!(notifier.waiting(), 200);

        // A channel this process already has subscribed costs no command.
        let mut again = notifier.watch(channels[7]).await.unwrap();
        assert_eq!(calls(&mut raw, "subscribe").await - before, 1);

        publish(&mut raw, channels[7]).await;
        woken(&mut watches[7]).await;
        woken(&mut again).await;
        assert_eq!(
            watches[8].wait(Duration::from_millis(50)).await,
            Notice::Quiet,
            "only the published channel's waiters are woken"
        );

        drop(watches);
        drop(again);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .query_async(&mut raw)
                .await
                .unwrap();
            if left.is_empty() && notifier.subscribed().await == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "still subscribed: {}", left.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(notifier.waiting(), 0);
    }

    #[tokio::test]
    async fn a_failed_first_subscribe_does_not_disable_notifications() {
        let mut server = RedisServer::start();
        let notifier = notifier(&server);
        server.stop();
        assert!(notifier.watch("app:{k}:done").await.is_err(), "no server");
        server.restart();
        let mut raw = raw(&server).await;
        let mut watch = notifier.watch("app:{k}:done").await.unwrap();
        publish(&mut raw, "app:{k}:done").await;
        woken(&mut watch).await;
    }

    #[tokio::test]
    async fn a_refused_first_subscribe_does_not_disable_notifications() {
        let server = RedisServer::builder().acl_user("b", "b-pw").start();
        let mut raw = raw(&server).await;
        let notifier = notifier_at(&format!("redis://b:b-pw@{}/?protocol=resp3", server.addr()));
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("b")
            .arg("resetchannels")
            .query_async(&mut raw)
            .await
            .unwrap();
        let refused = notifier.watch("app:{k}:done").await;
        assert!(refused.is_err_and(|e| e.to_string().contains("NoPerm")));
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("b")
            .arg("allchannels")
            .query_async(&mut raw)
            .await
            .unwrap();
        let mut watch = notifier.watch("app:{k}:done").await.unwrap();
        publish(&mut raw, "app:{k}:done").await;
        woken(&mut watch).await;
    }

    #[tokio::test]
    async fn a_cancelled_first_subscribe_does_not_disable_notifications() {
        let mut server = RedisServer::start();
        let notifier = notifier(&server);
        server.freeze();
        let cancelled = tokio::time::timeout(Duration::from_millis(300), notifier.watch("app:{k}:done")).await;
        assert!(cancelled.is_err(), "a frozen server cannot confirm a subscription");
        server.thaw();
        let mut raw = raw(&server).await;
        let mut watch = notifier.watch("app:{k}:done").await.unwrap();
        publish(&mut raw, "app:{k}:done").await;
        woken(&mut watch).await;
    }

    #[tokio::test]
    async fn a_killed_subscription_connection_is_resubscribed() {
        let server = RedisServer::start();
        let notifier = notifier(&server);
        let mut raw = raw(&server).await;
        let mut watch = notifier.watch("app:{k}:done").await.unwrap();
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        // `publish` retries until the resubscribed connection hears it.
        publish(&mut raw, "app:{k}:done").await;
        woken(&mut watch).await;
    }

    /// Polls `condition` every 20 ms until it holds; panics after 15 s.
    async fn eventually<F, Fut>(what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !condition().await {
            assert!(Instant::now() < deadline, "waited 15 s for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_subscription_is_lost_then_heard_again() {
        let mut server = RedisServer::start();
        let notifier = notifier(&server);
        let mut raw = raw(&server).await;
        let events = Arc::new(Mutex::new(Vec::<String>::new()));
        let hear: Hearing = {
            let events = Arc::clone(&events);
            Arc::new(move |heard| {
                let event = match heard {
                    Heard::Announcement { payload, .. } => {
                        format!("announcement {}", String::from_utf8_lossy(payload))
                    }
                    Heard::Listening { .. } => "listening".to_owned(),
                    Heard::Lost => "lost".to_owned(),
                };
                lock(&events).push(event);
            })
        };
        let seen = |event: &'static str| {
            let events = Arc::clone(&events);
            move || {
                let found = lock(&events).iter().any(|e| e == event);
                async move { found }
            }
        };
        notifier.listen(&[("app:cacheme:local:S".to_owned(), "S")], hear);
        eventually("the subscription", seen("listening")).await;
        // Heartbeats (a PING on one server) go out, are answered, and
        // publish nothing.
        let (pings, publishes) = (calls(&mut raw, "ping").await, calls(&mut raw, "publish").await);
        eventually("two heartbeats", || {
            let mut raw = raw.clone();
            async move { calls(&mut raw, "ping").await >= pings + 2 }
        })
        .await;
        assert_eq!(
            calls(&mut raw, "publish").await,
            publishes,
            "a heartbeat publishes nothing"
        );
        assert_eq!(*lock(&events), ["listening"], "heartbeats are not announcements");

        // Frozen: nothing breaks, the heartbeat goes unheard.
        server.freeze();
        let frozen = Instant::now();
        eventually("the silence to be noticed", seen("lost")).await;
        let noticed = frozen.elapsed();
        assert!(
            noticed >= SILENT_AFTER - BEAT_EVERY,
            "lost after {noticed:?}: only a heartbeat unheard for {SILENT_AFTER:?} counts"
        );
        server.thaw();
        eventually("the subscription again", || {
            let events = Arc::clone(&events);
            async move { lock(&events).last().map(String::as_str) == Some("listening") }
        })
        .await;
        let events = lock(&events).clone();
        assert!(
            events.iter().all(|e| e == "listening" || e == "lost"),
            "no announcement was heard: {events:?}"
        );
    }
}
