//! Waiting for another process's fetch of a key whose lock was lost: the
//! losers' half of the protocol (see the module docs of
//! [`stampede`](super)). The waiter never fetches: it ends with the value,
//! with the lock (a [`Leases`] of one key, for the caller to fetch and
//! settle), or with the verdict that the caller should fetch without it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Op};
use crate::observe;
use crate::spec::StoreSpec;
use crate::stampede::lease::Leases;
use crate::stampede::probe::{Probe, discard, probe};
use crate::stampede::renewer::Renewer;
use crate::stampede::{MAX_ROUNDS, Notice, Watch};

/// The shortest wait round (a round is a quarter of `lock_ttl`).
const MIN_ROUND: Duration = Duration::from_millis(20);

/// The longest sleep between two polls of a backend that cannot notify.
const MAX_POLL: Duration = Duration::from_millis(200);

/// How long a get waits for another caller's fetch unless the client says.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// The lock holder's lifetime for `spec`.
pub(crate) fn lock_ttl(client: &Client, spec: &StoreSpec) -> Duration {
    spec.lock_ttl.unwrap_or(client.lock_ttl())
}

/// How long a get of `spec` waits for another caller's fetch: the
/// client's `max_wait`, else [`DEFAULT_MAX_WAIT`] or twice the lock TTL,
/// whichever is longer (a fetch that renews its lock is not cut short).
pub(crate) fn max_wait(client: &Client, spec: &StoreSpec) -> Duration {
    client
        .max_wait()
        .unwrap_or_else(|| DEFAULT_MAX_WAIT.max(lock_ttl(client, spec).saturating_mul(2)))
}

/// How a wait ended.
pub(crate) enum Waited<T> {
    /// The holder's value (or one that landed meanwhile), decoded.
    Hit(T, Arc<[u8]>),
    /// The lock, taken over (its holder failed, died or gave up): fetch
    /// and settle it.
    Lease(Leases),
    /// Waited long enough, or the cache cannot coordinate: fetch without
    /// the lock.
    GiveUp,
}

/// A caller waiting for `key`'s holder.
pub(crate) struct Waiter<'c> {
    client: &'c Client,
    renewer: &'c Renewer,
    spec: &'static StoreSpec,
    key: &'c str,
    lock_ttl: Duration,
}

impl<'c> Waiter<'c> {
    pub(crate) fn new(client: &'c Client, renewer: &'c Renewer, spec: &'static StoreSpec, key: &'c str) -> Self {
        Waiter {
            client,
            renewer,
            spec,
            key,
            lock_ttl: lock_ttl(client, spec),
        }
    }

    /// The store of the waited key.
    pub(crate) fn spec(&self) -> &'static StoreSpec {
        self.spec
    }

    /// The waited key.
    pub(crate) fn key(&self) -> &'c str {
        self.key
    }

    /// Waits (see the module docs). `accept` decodes a value read; `None`
    /// means it does not decode: it is removed and counts as a miss.
    ///
    /// Watch first, then re-read: a fill between the miss and the watch is
    /// seen by the read, one after it by the watch. Then the lock is tried
    /// once more (its holder may have given up before the watch began),
    /// and the waiter waits for a notice, at most a quarter of `lock_ttl`
    /// per round, so a holder that died is noticed soon after its lock
    /// expires. After [`MAX_ROUNDS`] failure notices or `max_wait` in all,
    /// it gives up.
    pub(crate) async fn wait<T, A: FnMut(&[u8]) -> Option<T>>(self, accept: &mut A) -> Waited<T> {
        let mut waiting = observe::Waiting::begin(self.client, self.spec, self.key);
        let give_up = Instant::now() + max_wait(self.client, self.spec);
        let mut failures = 0;
        let mut poll = Duration::from_millis(5);
        loop {
            if failures >= MAX_ROUNDS || Instant::now() >= give_up {
                return waiting.gave_up(self.give_up(accept).await);
            }
            let mut watch = self.watch().await;
            if let Some((value, bytes)) = self.read(accept).await {
                return Waited::Hit(value, bytes);
            }
            match self.try_lead().await {
                Ok(Some(leases)) => return Waited::Lease(leases),
                Ok(None) => {}
                Err(()) => return Waited::GiveUp,
            }
            let round_ends = (Instant::now() + (self.lock_ttl / 4).max(MIN_ROUND)).min(give_up);
            loop {
                let left = round_ends.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break; // check the lock: its holder may have died
                }
                let notice = if watch.is_notified() {
                    watch.wait(left).await
                } else {
                    let notice = watch.wait(poll.min(left)).await;
                    poll = (poll * 2).min(MAX_POLL);
                    notice
                };
                match notice {
                    Notice::Filled | Notice::Quiet => {
                        if let Some((value, bytes)) = self.read(accept).await {
                            return Waited::Hit(value, bytes);
                        }
                        if notice == Notice::Filled || !watch.is_notified() {
                            break; // compete for the lock again
                        }
                    }
                    Notice::Failed => {
                        failures += 1;
                        break;
                    }
                }
            }
        }
    }

    /// Registers for the key's notices within the cache budget; a backend
    /// that fails to is polled instead.
    async fn watch(&self) -> Watch {
        let budget = self.client.cache_timeout();
        let coordinator = self.renewer.coordinator();
        match tokio::time::timeout(budget, coordinator.watch(self.key)).await {
            Ok(Ok(watch)) => watch,
            Ok(Err(error)) => {
                self.client.cache_failed(self.spec, self.key, &error);
                Watch::polling()
            }
            Err(_) => {
                let error = Error::Timeout { op: Op::Watch, budget };
                self.client.cache_failed(self.spec, self.key, &error);
                Watch::polling()
            }
        }
    }

    /// Reads the key; a value that does not decode is removed.
    async fn read<T, A: FnMut(&[u8]) -> Option<T>>(&self, accept: &mut A) -> Option<(T, Arc<[u8]>)> {
        let deadline = Instant::now() + self.client.cache_timeout();
        let Probe::Found(bytes) = probe(self.client, self.spec, self.key, deadline).await else {
            return None;
        };
        // A value past its TTL is not what a waiter waits for; the lock
        // holder replaces it (it is left in place: the holder may still
        // serve it, `stale_for`).
        if !crate::store::is_fresh(self.client, self.spec, &bytes) {
            return None;
        }
        match accept(&bytes) {
            Some(value) => Some((value, Arc::from(bytes))),
            None => {
                discard(self.client, self.spec, self.key, &bytes).await;
                None
            }
        }
    }

    /// Tries the lock within the cache budget. `Err(())` when the cache
    /// failed or ran out of time (reported; a lock the lost answer may
    /// have taken is released by the dropped lease).
    async fn try_lead(&self) -> Result<Option<Leases>, ()> {
        let mut leases = Leases::new(self.renewer, [(self.key.to_owned(), self.lock_ttl)]);
        let budget = self.client.cache_timeout();
        match tokio::time::timeout(budget, leases.acquire()).await {
            Ok(Ok(taken)) => {
                self.client.cache_answered(self.spec, self.key);
                Ok(taken.first().copied().unwrap_or(false).then_some(leases))
            }
            Ok(Err(error)) => {
                self.client.cache_failed(self.spec, self.key, &error);
                Err(())
            }
            Err(_) => {
                let error = Error::Timeout { op: Op::Lock, budget };
                self.client.cache_failed(self.spec, self.key, &error);
                Err(())
            }
        }
    }

    /// Waited long enough: the waiters of a fleet reach this together, so
    /// each first sleeps a random part of a round, then reads a value that
    /// landed or takes the lock if it is free (the others then wait for it
    /// again), and only then fetches without the lock.
    async fn give_up<T, A: FnMut(&[u8]) -> Option<T>>(self, accept: &mut A) -> Waited<T> {
        tokio::time::sleep(spread((self.lock_ttl / 4).max(MIN_ROUND))).await;
        if let Some((value, bytes)) = self.read(accept).await {
            return Waited::Hit(value, bytes);
        }
        if let Ok(Some(leases)) = self.try_lead().await {
            return Waited::Lease(leases);
        }
        Waited::GiveUp
    }
}

/// A random duration in `[0, max)`.
fn spread(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    // `RandomState`s are keyed afresh each time; the clock adds entropy.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    let nanos = max.as_nanos().max(1);
    Duration::from_nanos((u128::from(hasher.finish()) % nanos) as u64)
}
