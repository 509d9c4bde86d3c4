//! The stampede protocol as the typed-store miss path runs it, over any
//! [`Coordinator`]. See the module docs of [`stampede`](super).
//!
//! Every cache step has a deadline (the client's `cache_timeout`); a step
//! that fails or runs out of time is reported to the client's breaker and
//! the caller is served from the source. Locks are [`Lease`]s, armed before
//! the lock command is sent; fills and releases run off the caller's path
//! (see `write_behind`), so no cancellation leaves a lock behind.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Op};
use crate::logger::EventKind;
use crate::stampede::lease::Lease;
use crate::stampede::{Coordinator, MAX_ROUNDS, Notice, Watch};
use crate::store::spec::StoreSpec;
use crate::store::{Read, encode, fetch_and_store};
use crate::write_behind::write_behind;

/// The shortest wait round (a round is a quarter of `lock_ttl`).
const MIN_ROUND: Duration = Duration::from_millis(20);

/// The longest sleep between two polls of a backend that cannot notify.
const MAX_POLL: Duration = Duration::from_millis(200);

/// Fetches `key` once across every process sharing the backend, or waits
/// for whoever does. `deadline` bounds the first lock attempt (the rest
/// of the call's cache budget). Returns the value and its encoding (if
/// known).
pub(crate) async fn load<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &'static StoreSpec,
    key: &str,
    fetch: &mut F,
    deadline: Instant,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    run(client, coordinator, spec, key, fetch, false, deadline).await
}

/// [`load`] for a key whose lock was just tried, and lost, by a batch
/// (`try_lock_many`): starts at the waiting step.
pub(crate) async fn load_after_lost<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &'static StoreSpec,
    key: &str,
    fetch: &mut F,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let deadline = Instant::now() + client.cache_timeout();
    run(client, coordinator, spec, key, fetch, true, deadline).await
}

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

/// How long a get waits for another caller's fetch unless the client says.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

async fn run<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &'static StoreSpec,
    key: &str,
    fetch: &mut F,
    mut lost: bool,
    deadline: Instant,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let lock_ttl = lock_ttl(client, spec);
    let give_up = Instant::now() + max_wait(client, spec);
    let mut failures = 0;
    let mut poll = Duration::from_millis(5);
    let mut deadline = deadline;
    loop {
        if failures >= MAX_ROUNDS || Instant::now() >= give_up {
            return give_up_waiting(client, coordinator, spec, key, lock_ttl, fetch).await;
        }
        if !std::mem::take(&mut lost) {
            match try_lead(client, coordinator, spec, key, lock_ttl, deadline).await {
                Ok(Some(lease)) => return lead(client, spec, lease, lock_ttl, fetch).await,
                Ok(None) => {}
                // The cache cannot coordinate: serve the source.
                Err(()) => return fetch_and_store(client, spec, key, fetch).await,
            }
        }
        // Watch first, then re-read: a fill between the miss and the
        // watch is seen by the read, one after it by the watch.
        let mut watch = match step(client, spec, key, Op::Watch, coordinator.watch(key)).await {
            Some(watch) => watch,
            None => Watch::polling(),
        };
        if let Some(hit) = read(client, spec, key).await {
            return Ok(hit);
        }
        // The holder may have given up before the watch began (its notice
        // then went unheard): if the lock is free now, take it.
        deadline = Instant::now() + client.cache_timeout();
        match try_lead(client, coordinator, spec, key, lock_ttl, deadline).await {
            Ok(Some(lease)) => {
                drop(watch);
                return lead(client, spec, lease, lock_ttl, fetch).await;
            }
            Ok(None) => {}
            Err(()) => return fetch_and_store(client, spec, key, fetch).await,
        }
        // Short rounds: a holder that died is noticed within a quarter of
        // `lock_ttl` after its lock expires.
        let round_ends = (Instant::now() + (lock_ttl / 4).max(MIN_ROUND)).min(give_up);
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
                    if let Some(hit) = read(client, spec, key).await {
                        return Ok(hit);
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
        deadline = Instant::now() + client.cache_timeout();
    }
}

/// Runs one cache step within the cache budget; a failure or timeout is
/// reported to the client (and its breaker) and gives `None`.
async fn step<T>(
    client: &Client,
    spec: &StoreSpec,
    key: &str,
    op: Op,
    work: impl Future<Output = crate::Result<T>>,
) -> Option<T> {
    let budget = client.cache_timeout();
    match tokio::time::timeout(budget, work).await {
        Ok(Ok(done)) => {
            client.cache_answered(spec, key);
            Some(done)
        }
        Ok(Err(error)) => {
            client.cache_failed(spec, key, &error);
            None
        }
        Err(_) => {
            client.cache_failed(spec, key, &Error::Timeout { op, budget });
            None
        }
    }
}

/// Tries `key`'s lock through a [`Lease`] armed before the command is
/// sent. `Err(())` when the cache failed or ran out of time (reported);
/// a lock the lost answer may have taken is released by the lease.
async fn try_lead(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &StoreSpec,
    key: &str,
    ttl: Duration,
    deadline: Instant,
) -> Result<Option<Lease>, ()> {
    let mut lease = Lease::new(coordinator, key);
    let budget = client.cache_timeout();
    match tokio::time::timeout_at(deadline, lease.acquire(ttl)).await {
        Ok(Ok(true)) => {
            client.cache_answered(spec, key);
            Ok(Some(lease))
        }
        Ok(Ok(false)) => {
            client.cache_answered(spec, key);
            Ok(None)
        }
        Ok(Err(error)) => {
            client.cache_failed(spec, key, &error);
            Err(())
        }
        Err(_) => {
            client.cache_failed(spec, key, &Error::Timeout { op: Op::Lock, budget });
            Err(())
        }
    }
}

/// Reads `key` and decodes it, keeping the bytes for the followers of
/// this process's flight. Failures count as a miss (an undecodable value
/// is removed, so the lock can be taken over it).
async fn read<V: DeserializeOwned>(client: &Client, spec: &StoreSpec, key: &str) -> Option<(V, Option<Arc<[u8]>>)> {
    let deadline = Instant::now() + client.cache_timeout();
    match crate::store::read(client, spec, key, deadline).await {
        Read::Hit(value, bytes) => Some((value, Some(Arc::from(bytes)))),
        Read::Miss | Read::Failed => None,
    }
}

/// A waiter that waited its bound (or heard [`MAX_ROUNDS`] failures): the
/// waiters of a fleet reach this together, so each first sleeps a random
/// part of a round, then takes the lock if it is free (the others then
/// wait for it again) or reads a value that landed, and only then fetches
/// without the lock.
async fn give_up_waiting<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &'static StoreSpec,
    key: &str,
    lock_ttl: Duration,
    fetch: &mut F,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    tokio::time::sleep(spread((lock_ttl / 4).max(MIN_ROUND))).await;
    if let Some(hit) = read(client, spec, key).await {
        return Ok(hit);
    }
    let deadline = Instant::now() + client.cache_timeout();
    if let Ok(Some(lease)) = try_lead(client, coordinator, spec, key, lock_ttl, deadline).await {
        return lead(client, spec, lease, lock_ttl, fetch).await;
    }
    tracing::warn!(
        target: "cacheme",
        store = spec.name,
        key,
        "stampede wait gave up; fetching without the lock"
    );
    fetch_and_store(client, spec, key, fetch).await
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

/// The lock holder: fetch (renewing the lock), then fill, or abandon on
/// failure, off the caller's path. Cancellation or a panic during the
/// fetch drops the lease, which releases the lock.
async fn lead<V, E, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    lease: Lease,
    lock_ttl: Duration,
    fetch: &mut F,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let key = lease.key().to_owned();
    client.log(EventKind::Fetch, spec, &key, None);
    let fetched = renewing(client, &lease, lock_ttl, fetch()).await;
    let deadline = Instant::now() + client.cache_timeout();
    let bytes = match &fetched {
        Ok(value) => encode(client, spec, &key, value),
        Err(_) => None,
    };
    let Some(bytes) = bytes else {
        // Failed, or not encodable: release the lock and tell the waiters.
        let owner = client.clone();
        write_behind(client, spec, &key, deadline, async move {
            let key = lease.key().to_owned();
            if let Err(error) = lease.abandon().await {
                owner.log(EventKind::BackendError, spec, &key, Some(&error));
            }
        })
        .await;
        return fetched.map(|value| (value, None));
    };
    let owner = client.clone();
    let fill = Arc::clone(&bytes);
    write_behind(client, spec, &key, deadline, async move {
        let key = lease.key().to_owned();
        match lease.fill(&fill, spec.ttl).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(
                target: "cacheme",
                store = spec.name,
                key,
                "fill fenced off: the key was invalidated meanwhile"
            ),
            // The lease's drop releases the lock (a refused value, such as
            // one too large for the server, must not hold the key).
            Err(error) => owner.log(EventKind::BackendError, spec, &key, Some(&error)),
        }
    })
    .await;
    fetched.map(|value| (value, Some(bytes)))
}

/// Runs `fetch`, renewing the lease every third of `ttl` until it ends,
/// or until the client's `fetch_timeout`, past which the lock is released
/// (waiters compete again) while the fetch goes on.
async fn renewing<T>(client: &Client, lease: &Lease, ttl: Duration, fetch: impl Future<Output = T>) -> T {
    let renew = async {
        let started = Instant::now();
        let limit = client.fetch_timeout().map(|limit| started + limit);
        let every = (ttl / 3).max(Duration::from_millis(1));
        loop {
            let next = Instant::now() + every;
            tokio::time::sleep_until(limit.map_or(next, |limit| next.min(limit))).await;
            if limit.is_some_and(|limit| Instant::now() >= limit) {
                tracing::warn!(target: "cacheme", key = lease.key(), "fetch ran past fetch_timeout; its lock is released");
                let _ = lease.coordinator().abandon(lease.key(), lease.token()).await;
                std::future::pending::<()>().await;
            }
            let renewal = lease.coordinator().renew(lease.key(), lease.token(), ttl);
            match tokio::time::timeout(client.cache_timeout(), renewal).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    // Broken by an invalidation or expired: the fill will
                    // be fenced off; nothing left to renew.
                    tracing::debug!(target: "cacheme", key = lease.key(), "lost the fetch lock while fetching");
                    std::future::pending::<()>().await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(target: "cacheme", key = lease.key(), %error, "could not renew the fetch lock")
                }
                Err(_) => tracing::warn!(target: "cacheme", key = lease.key(), "renewing the fetch lock timed out"),
            }
        }
    };
    let (fetch, renew) = (std::pin::pin!(fetch), std::pin::pin!(renew));
    match select(fetch, renew).await {
        Either::Left((value, _)) => value,
        Either::Right(((), _)) => unreachable!("the renewal loop never ends"),
    }
}
