//! The stampede protocol as the typed-store miss path runs it, over any
//! [`Coordinator`]. See the module docs of [`stampede`](super).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::logger::EventKind;
use crate::stampede::{Coordinator, MAX_ROUNDS, Notice, new_token};
use crate::store::spec::StoreSpec;
use crate::store::{encode, fetch_and_store};

/// Added to `lock_ttl` in the overall bound of a wait.
const MARGIN: Duration = Duration::from_millis(100);

/// The shortest wait round (a round is a quarter of `lock_ttl`).
const MIN_ROUND: Duration = Duration::from_millis(20);

/// The longest sleep between two polls of a backend that cannot notify.
const MAX_POLL: Duration = Duration::from_millis(200);

/// Fetches `key` once across every process sharing the backend, or waits
/// for whoever does. Returns the value and its encoding (if known).
pub(crate) async fn load<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &StoreSpec,
    key: &str,
    fetch: &mut F,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    run(client, coordinator, spec, key, fetch, false).await
}

/// [`load`] for a key whose lock was just tried, and lost, by a batch
/// (`try_lock_many`): starts at the waiting step.
pub(crate) async fn load_after_lost<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &StoreSpec,
    key: &str,
    fetch: &mut F,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    run(client, coordinator, spec, key, fetch, true).await
}

/// The lock holder's lifetime for `spec`.
pub(crate) fn lock_ttl(client: &Client, spec: &StoreSpec) -> Duration {
    spec.lock_ttl.unwrap_or(client.lock_ttl())
}

async fn run<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &StoreSpec,
    key: &str,
    fetch: &mut F,
    mut lost: bool,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let lock_ttl = lock_ttl(client, spec);
    let give_up = Instant::now() + (lock_ttl + MARGIN) * MAX_ROUNDS;
    let mut failures = 0;
    let mut poll = Duration::from_millis(5);
    loop {
        if failures >= MAX_ROUNDS || Instant::now() >= give_up {
            return give_up_waiting(client, coordinator, spec, key, lock_ttl, fetch).await;
        }
        if !std::mem::take(&mut lost) {
            let token = new_token();
            match coordinator.try_lock(key, &token, lock_ttl).await {
                Ok(true) => return lead(client, coordinator, spec, key, &token, lock_ttl, fetch).await,
                Ok(false) => {}
                Err(error) => {
                    // The cache cannot coordinate: serve the source.
                    client.log(EventKind::BackendError, spec, key, Some(&error));
                    return fetch_and_store(client, spec, key, fetch).await;
                }
            }
        }
        // Watch first, then re-read: a fill between the miss and the
        // watch is seen by the read, one after it by the watch.
        let mut watch = match coordinator.watch(key).await {
            Ok(watch) => watch,
            Err(error) => {
                client.log(EventKind::BackendError, spec, key, Some(&error));
                super::Watch::polling()
            }
        };
        if let Some(hit) = read(client, spec, key).await {
            return Ok(hit);
        }
        // The holder may have given up before the watch began (its notice
        // then went unheard): if the lock is free now, take it.
        let token = new_token();
        match coordinator.try_lock(key, &token, lock_ttl).await {
            Ok(true) => {
                drop(watch);
                return lead(client, coordinator, spec, key, &token, lock_ttl, fetch).await;
            }
            Ok(false) => {}
            Err(error) => {
                client.log(EventKind::BackendError, spec, key, Some(&error));
                return fetch_and_store(client, spec, key, fetch).await;
            }
        }
        // Short rounds: a holder that died is noticed within a quarter of
        // `lock_ttl` after its lock expires.
        let round_ends = Instant::now() + (lock_ttl / 4).max(MIN_ROUND);
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
    }
}

/// Reads `key` and decodes it, keeping the bytes for the followers of
/// this process's flight. Failures count as a miss (an undecodable value
/// is removed, so the lock can be taken over it).
async fn read<V: DeserializeOwned>(client: &Client, spec: &StoreSpec, key: &str) -> Option<(V, Option<Arc<[u8]>>)> {
    let (value, bytes) = crate::store::read(client, spec, key).await?;
    Some((value, Some(Arc::from(bytes))))
}

/// A waiter that waited its bound (or heard [`MAX_ROUNDS`] failures): the
/// waiters of a fleet reach this together, so each first sleeps a random
/// part of a round, then takes the lock if it is free (the others then
/// wait for it again) or reads a value that landed, and only then fetches
/// without the lock.
async fn give_up_waiting<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &StoreSpec,
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
    let token = new_token();
    if let Ok(true) = coordinator.try_lock(key, &token, lock_ttl).await {
        return lead(client, coordinator, spec, key, &token, lock_ttl, fetch).await;
    }
    tracing::warn!(
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
/// failure. Cancellation or a panic abandons too (see [`Abandon`]).
async fn lead<V, E, F, Fut>(
    client: &Client,
    coordinator: &Arc<dyn Coordinator>,
    spec: &StoreSpec,
    key: &str,
    token: &str,
    lock_ttl: Duration,
    fetch: &mut F,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let mut abandon = Abandon {
        coordinator: Arc::clone(coordinator),
        key: key.to_owned(),
        token: token.to_owned(),
        armed: true,
    };
    client.log(EventKind::Fetch, spec, key, None);
    let fetched = renewing(&**coordinator, key, token, lock_ttl, fetch()).await;
    abandon.armed = false;
    let value = match fetched {
        Ok(value) => value,
        Err(error) => {
            if let Err(e) = coordinator.abandon(key, token).await {
                client.log(EventKind::BackendError, spec, key, Some(&e));
            }
            return Err(error);
        }
    };
    let bytes = match encode(client, spec, key, &value) {
        Some(bytes) => bytes,
        None => {
            if let Err(e) = coordinator.abandon(key, token).await {
                client.log(EventKind::BackendError, spec, key, Some(&e));
            }
            return Ok((value, None));
        }
    };
    match coordinator.fill(key, token, &bytes, spec.ttl).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(
            store = spec.name,
            key,
            "fill fenced off: the key was invalidated meanwhile"
        ),
        Err(error) => {
            // The value was refused (too large for the server, ...) or the
            // fill's fate is unknown: release the lock and tell the
            // waiters now, or they would wait for it until `lock_ttl`.
            client.log(EventKind::BackendError, spec, key, Some(&error));
            if let Err(e) = coordinator.abandon(key, token).await {
                client.log(EventKind::BackendError, spec, key, Some(&e));
            }
        }
    }
    Ok((value, Some(bytes)))
}

/// Runs `fetch`, renewing the lock every third of `ttl` until it ends.
async fn renewing<T>(
    coordinator: &dyn Coordinator,
    key: &str,
    token: &str,
    ttl: Duration,
    fetch: impl Future<Output = T>,
) -> T {
    let renew = async {
        let every = (ttl / 3).max(Duration::from_millis(1));
        loop {
            tokio::time::sleep(every).await;
            match coordinator.renew(key, token, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    // Broken by an invalidation or expired: the fill will
                    // be fenced off; nothing left to renew.
                    tracing::debug!(key, "lost the fetch lock while fetching");
                    std::future::pending::<()>().await;
                }
                Err(error) => tracing::warn!(key, %error, "could not renew the fetch lock"),
            }
        }
    };
    let (fetch, renew) = (std::pin::pin!(fetch), std::pin::pin!(renew));
    match select(fetch, renew).await {
        Either::Left((value, _)) => value,
        Either::Right(((), _)) => unreachable!("the renewal loop never ends"),
    }
}

/// Releases the lock if the holder's future is dropped (cancelled) or
/// panics mid-fetch, so waiters hear of it at once instead of waiting out
/// `lock_ttl`. Needs a Tokio runtime to run the release; without one the
/// lock expires by itself.
struct Abandon {
    coordinator: Arc<dyn Coordinator>,
    key: String,
    token: String,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordinator = Arc::clone(&self.coordinator);
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            if let Err(error) = coordinator.abandon(&key, &token).await {
                tracing::warn!(key, %error, "could not release the fetch lock of a cancelled fetch");
            }
        });
    }
}
