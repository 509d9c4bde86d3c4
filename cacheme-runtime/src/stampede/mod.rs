//! Stampede protection across processes: when a key misses, one caller in
//! the whole fleet fetches it and the others wait for its value.
//!
//! The protocol (cacheme-go's "caches, promises and locks", made robust):
//!
//! 1. A store `get` misses.
//! 2. It tries the key's lock with a random token ([`Coordinator::try_lock`],
//!    `SET NX PX lock_ttl` on Redis).
//! 3. The winner fetches, renewing the lock every `lock_ttl / 3` while the
//!    fetch runs, then in one atomic step stores the value, releases the
//!    lock if the token is still its own and notifies the waiters
//!    ([`Coordinator::fill`]). A fill whose lock was broken meanwhile (an
//!    `invalidate` or `update` ran, see [`Coordinator::invalidate`]) does
//!    not land: invalidations win.
//! 4. A failed, panicking or cancelled fetch releases the lock and tells
//!    the waiters at once ([`Coordinator::abandon`]); they compete for the
//!    lock again (errors are not shared: the next winner fetches anew).
//! 5. Losers watch the key *before* re-reading it (closing the race where
//!    the value landed in between) and try the lock once more (closing the
//!    one where the holder gave up in between), then wait for a
//!    notification, at most a quarter of `lock_ttl` per round before they
//!    try the lock again: a holder that died leaves a lock that expires,
//!    and the next round takes it over. A waiter gives up after
//!    [`MAX_ROUNDS`] failure notices or `MAX_ROUNDS` x (`lock_ttl` + 100 ms)
//!    in all: it sleeps a random part of a round (so a fleet's waiters do
//!    not all call the source at one instant), takes the lock if it is
//!    free, else fetches by itself; nobody hangs and a cache that cannot
//!    coordinate degrades to calling the source.
//! 6. A value that does not decode is removed (if still the same bytes)
//!    before the lock is tried, since the lock step refuses a lock over an
//!    existing value: a bad value is refetched at once, never waited on.
//! 7. A fill the server refuses releases the lock at once.
//!
//! Backends choose their strategy with [`Backend::coordination`](crate::Backend::coordination):
//! Redis and Redis Cluster notify through pub/sub (see the redis backend);
//! memcached and the file backend use their atomic add as the lock and
//! waiters poll with backoff (the runtime's `polling` coordinator); memory coordinates inside the
//! process only (every miss is coalesced in the process by the store layer).

mod batch;
pub(crate) mod lease;
pub(crate) mod probe;
pub(crate) mod renewer;
mod token;
pub(crate) mod waiter;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::Result;
use crate::future::BoxFuture;

pub use batch::{LockRequest, Settlement};
pub(crate) use token::new_token;
pub use waiter::DEFAULT_MAX_WAIT;

/// How long a fetch lock lives when the store does not say (`lock_ttl`).
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);

/// How many failed fetches a waiter sees (or how many `lock_ttl`s it
/// waits, plus a margin each) before it fetches by itself.
pub const MAX_ROUNDS: u32 = 5;

/// How a backend protects its keys from stampedes across processes.
#[derive(Clone)]
#[non_exhaustive]
pub enum Coordination {
    /// No cross-process coordination: only the coalescing of misses inside the
    /// process (memory, and backends that do not say otherwise).
    InProcess,
    /// Locks from the backend's own atomic operations
    /// ([`set_if_absent`](crate::Backend::set_if_absent),
    /// [`delete_if_equals`](crate::Backend::delete_if_equals)); waiters poll
    /// with backoff (memcached, file).
    Polling,
    /// A coordinator of the backend's own (Redis: Lua + pub/sub).
    Custom(Arc<dyn Coordinator>),
}

impl fmt::Debug for Coordination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Coordination::InProcess => f.write_str("InProcess"),
            Coordination::Polling => f.write_str("Polling"),
            Coordination::Custom(c) => f.debug_tuple("Custom").field(c).finish(),
        }
    }
}

/// What a waiter heard about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The holder finished: the value is stored (or its fill was fenced
    /// off by an invalidation); read the key again.
    Filled,
    /// The holder's fetch failed or was abandoned: compete again.
    Failed,
    /// Nothing heard within the wait (or the backend cannot notify):
    /// check the key and the lock again.
    Quiet,
}

/// A registration for notifications about one key, made before the key is
/// re-read. Dropping it unregisters (the coordinator's table shrinks back).
pub struct Watch {
    notice: Option<oneshot::Receiver<Notice>>,
    /// What to do when dropped (unregister); `None` for polling.
    _registration: Option<Box<dyn Send + Sync>>,
}

impl Watch {
    /// A watch that is told by `notice`; `registration` is dropped with it.
    pub fn notified(notice: oneshot::Receiver<Notice>, registration: Box<dyn Send + Sync>) -> Self {
        Watch {
            notice: Some(notice),
            _registration: Some(registration),
        }
    }

    /// A watch that hears nothing: each wait just sleeps (the waiter then
    /// re-reads the key; the caller chooses the backoff).
    pub fn polling() -> Self {
        Watch {
            notice: None,
            _registration: None,
        }
    }

    /// Whether notices arrive (else every wait just sleeps).
    pub fn is_notified(&self) -> bool {
        self.notice.is_some()
    }

    /// Waits for a notice, at most `max`.
    pub async fn wait(&mut self, max: Duration) -> Notice {
        let Some(notice) = &mut self.notice else {
            tokio::time::sleep(max).await;
            return Notice::Quiet;
        };
        match tokio::time::timeout(max, notice).await {
            Ok(Ok(heard)) => {
                // A notice is sent once; later waits sleep.
                self.notice = None;
                heard
            }
            // The coordinator dropped the registration (its connection
            // went away): a bounded delay, not an error.
            Ok(Err(_)) => {
                self.notice = None;
                Notice::Quiet
            }
            Err(_) => Notice::Quiet,
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("notified", &self.notice.is_some())
            .finish_non_exhaustive()
    }
}

/// The cross-process half of stampede protection for one backend. Keys are
/// the cache's keys (the backend adds its prefix); the coordinator derives
/// the lock and channel names from them.
pub trait Coordinator: fmt::Debug + Send + Sync + 'static {
    /// Takes `key`'s fetch lock for `ttl` with `token`; `Ok(false)` when
    /// someone else holds it, or when `key` has a value (filled since the
    /// caller's miss: the caller re-reads it instead of fetching again).
    fn try_lock<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>>;

    /// Takes `key`'s fetch lock as [`try_lock`](Coordinator::try_lock)
    /// does, but over the value that is there: to refresh a value ahead of
    /// its expiry (`refresh_after`) or replace a stale one (`stale_for`),
    /// one process at a time. `Ok(false)` when someone holds the lock.
    ///
    /// The default answers `Ok(false)`: with a coordinator that does not
    /// implement it, values are not refreshed ahead, and a stale value is
    /// refetched only by callers that waited `max_wait` for a lock nobody
    /// takes.
    fn try_lock_to_refresh<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        let _ = (key, token, ttl);
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Extends the lock to `ttl` from now if `token` still holds it;
    /// `Ok(false)` when it does not (expired or broken).
    fn renew<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>>;

    /// If `token` still holds the lock: stores `value` for `ttl` and
    /// releases the lock; in every case notifies the waiters. `Ok(true)`
    /// when the value was stored.
    fn fill<'a>(&'a self, key: &'a str, token: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool>>;

    /// Releases the lock if `token` holds it and tells the waiters the
    /// fetch failed.
    fn abandon<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Registers for `key`'s notifications; ready once a notification sent
    /// after this returns cannot be missed.
    fn watch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Watch>>;

    /// Deletes `key`'s value and breaks its lock, so a fill in flight does
    /// not land. `Ok(true)` when a value was deleted.
    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Stores `value` for `ttl` and breaks the lock (a store's `update`).
    fn replace<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<()>>;

    /// Tries the locks of many keys at once (the misses of a pipeline or
    /// `get_m`): one result per request, in order, `true` where the lock
    /// was taken. An error fails the whole batch; locks it may have taken
    /// are released by the caller's [`settle_many`](Coordinator::settle_many)
    /// of abandons (or expire).
    ///
    /// The default runs [`try_lock`](Coordinator::try_lock) for every
    /// request concurrently; Redis does them in one script per node.
    fn try_lock_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(batch::try_lock_each(self, requests))
    }

    /// Renews many locks at once (those of a batch whose fetch runs): one
    /// result per request, in order, `true` where `token` still held the
    /// lock and it now lives `ttl` from now, as [`renew`](Coordinator::renew).
    ///
    /// The default runs [`renew`](Coordinator::renew) for every request
    /// concurrently; Redis does them in one script per node (and per
    /// [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND) locks).
    fn renew_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(batch::renew_each(self, requests))
    }

    /// Fills or abandons many locked keys at once: one result per
    /// settlement, in order, `true` where a value was stored (always
    /// `false` for an abandon). Waiters are notified as by
    /// [`fill`](Coordinator::fill) and [`abandon`](Coordinator::abandon).
    ///
    /// The default runs them concurrently; Redis does them in one script
    /// per node.
    fn settle_many<'a>(&'a self, settlements: &'a [Settlement<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(batch::settle_each(self, settlements))
    }

    /// How many waiters are registered now (zero when no get waits).
    fn waiting(&self) -> usize {
        0
    }

    /// Tells the other processes that keys of the store named `store`
    /// changed, so their local tiers drop them. `payload` is opaque to the
    /// coordinator (the runtime's announcement: the sender and the keys,
    /// never values). The default has no push channel and sends nothing;
    /// local tiers then rely on their TTL.
    fn announce<'a>(&'a self, store: &'a str, payload: &'a str) -> BoxFuture<'a, Result<()>> {
        let _ = (store, payload);
        Box::pin(async { Ok(()) })
    }

    /// Starts handing the announcements of `stores` (see
    /// [`announce`](Coordinator::announce)) to `hear`, with word of when
    /// they are heard and when some may have been missed (see [`Heard`]).
    /// Returns `false` when the coordinator cannot (the default). Called
    /// at most once, from within a Tokio runtime.
    fn listen(&self, stores: &[&'static str], hear: Hearing) -> bool {
        let _ = (stores, hear);
        false
    }
}

/// What a coordinator hears for the local tiers (see [`Coordinator::listen`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Heard<'a> {
    /// An announcement of `store`, as sent by [`Coordinator::announce`].
    Announcement {
        /// The store's name.
        store: &'a str,
        /// The announcement.
        payload: &'a [u8],
    },
    /// From now on, the announcements of `store` are heard (subscribed, or
    /// subscribed again after a lost connection).
    Listening {
        /// The store's name.
        store: &'a str,
    },
    /// The connection was lost: announcements may be missed until each
    /// store is heard again.
    Lost,
}

/// The receiver of what a coordinator hears (see [`Coordinator::listen`]).
pub type Hearing = Arc<dyn Fn(Heard<'_>) + Send + Sync>;
