//! The typed miss path of a single key: coalesced in the process
//! (flights), coordinated across processes through leases and waiters
//! (see [`stampede`](crate::stampede)), fetched here and settled off the
//! caller's path. The batch path (`get_m`, pipelines) shares the waiting
//! ([`wait_then_load`]) and the leases.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::fresh::{self, Background, FetchPolicy, Outcome, Stale, attempt, resolve};
use super::refresh::{self, refresh_ahead};
use super::{ErrorSharing, Read, decode, encode, is_fresh, landed, read, stored_ttl};
use crate::client::Client;
use crate::error::{Error, Op};
use crate::keeping::{Kept, ValueKeeping};
use crate::logger::EventKind;
use crate::singleflight::{Landed, LeaderGuard, Role};
use crate::spec::StoreSpec;
use crate::stampede::lease::Leases;
use crate::stampede::probe::{Probe, probe};
use crate::stampede::waiter::{self, Waited, Waiter};
use crate::write_behind::write_behind;

/// How a get treats what it meets besides its value: whether a failed
/// fetch's error can be handed to coalesced callers, whether values can
/// be kept decoded, and its fetch policy (timeouts, background fetches).
pub(crate) struct Ways<'p, V, E> {
    pub(crate) sharing: ErrorSharing<E>,
    pub(crate) keeping: ValueKeeping<V>,
    pub(crate) policy: FetchPolicy<'p, V, E>,
}

impl<V, E> Clone for Ways<'_, V, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V, E> Copy for Ways<'_, V, E> {}

impl<V, E> Ways<'_, V, E> {
    /// Sharing errors as `sharing` says, nothing kept, no policy (the
    /// batch path).
    pub(crate) fn plain(sharing: ErrorSharing<E>) -> Self {
        Ways {
            sharing,
            keeping: ValueKeeping::none(),
            policy: FetchPolicy::none(),
        }
    }
}

/// What the leader of a flight does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Read the key; on a miss, the stampede protocol, then the value is
    /// stored (`singleflight`: one read per key in the process). The
    /// instant bounds the cache steps (the rest of the call's budget).
    Read(Instant),
    /// The stampede protocol, then the value is stored; bounded as `Read`.
    Cached(Instant),
    /// A plain fetch: the cache cannot be addressed.
    Uncached,
}

/// Runs `step` for `key` once in this process: the first caller leads,
/// concurrent ones follow and get its value or, when it can be shared,
/// its error. A leader that goes away without an outcome (cancelled,
/// panicked) lets the followers compete again; one that has not answered
/// within the store's `max_wait` is replaced by its first follower to
/// give up (the others follow the new flight). `stale`, a value past its
/// TTL read on the way, is served if the fetch fails (`stale_for`).
pub(super) async fn coalesced<V, E, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    step: Step,
    mut fetch: F,
    ways: Ways<'_, V, E>,
    mut stale: Option<Stale<V>>,
) -> Result<V, E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let Ways {
        sharing,
        keeping,
        policy,
    } = ways;
    // Store keys hold no whitespace: this flight never meets a cached one.
    let uncached_key;
    let flight_key = match step {
        Step::Read(_) | Step::Cached(_) => key,
        Step::Uncached => {
            uncached_key = format!("{key} uncached");
            &uncached_key
        }
    };
    let max_wait = waiter::max_wait(client, spec);
    let mut role = client.flights().join(flight_key);
    let mut reported_miss = false;
    loop {
        let follower = match role {
            Role::Leader(guard) => {
                let led = match step {
                    Step::Read(deadline) => match read(client, spec, key, deadline).await {
                        Read::Hit(value, bytes) => {
                            let kept = keep(client, spec, &guard, key, &value, &bytes, keeping);
                            guard.finish_read_with(Arc::from(bytes), kept);
                            return Ok(value);
                        }
                        Read::Due(value, bytes) => {
                            refresh_ahead(client, spec, key, policy);
                            let kept = keep(client, spec, &guard, key, &value, &bytes, keeping);
                            guard.finish_read_with(Arc::from(bytes), kept);
                            return Ok(value);
                        }
                        Read::Stale(found) if client.is_refreshing(key) => Ok(answer_stale(client, spec, key, found)),
                        // Past a hit, boxed: the hit path's future stays
                        // small (see `get`).
                        Read::Stale(found) => {
                            client.log(EventKind::Miss, spec, key, None);
                            Box::pin(fill(client, spec, key, &mut fetch, deadline, Some(found), policy)).await
                        }
                        Read::Miss => {
                            client.log(EventKind::Miss, spec, key, None);
                            Box::pin(fill(client, spec, key, &mut fetch, deadline, None, policy)).await
                        }
                        Read::Failed => {
                            let last_resort = last_resort(client, spec, key, keeping);
                            Box::pin(fetch_uncached(client, spec, key, &mut fetch, policy, last_resort)).await
                        }
                    },
                    Step::Cached(_) if stale.is_some() && client.is_refreshing(key) => {
                        let found = stale.take().expect("checked");
                        Ok(answer_stale(client, spec, key, found))
                    }
                    Step::Cached(deadline) => {
                        Box::pin(fill(client, spec, key, &mut fetch, deadline, stale.take(), policy)).await
                    }
                    Step::Uncached => {
                        let last_resort = last_resort(client, spec, key, keeping);
                        Box::pin(fetch_uncached(client, spec, key, &mut fetch, policy, last_resort)).await
                    }
                };
                return match led {
                    Ok((value, bytes)) => {
                        if let Some(bytes) = bytes {
                            let kept = match step {
                                Step::Uncached => for_followers(&guard, &value, keeping),
                                _ => keep(client, spec, &guard, key, &value, &bytes, keeping),
                            };
                            guard.finish_with(bytes, kept);
                        }
                        Ok(value)
                    }
                    Err(error) => {
                        guard.fail(sharing.share(&error));
                        Err(error)
                    }
                };
            }
            Role::Follower(follower) => follower,
        };
        client.log(EventKind::Coalesced, spec, key, None);
        let outcome = follower.outcome_within(max_wait).await;
        // A caller that joined a read which missed missed too: every get
        // reports a hit or a miss (the leader reported its own).
        if matches!(step, Step::Read(_))
            && !reported_miss
            && matches!(outcome, Some(Landed::Value { cached: false, .. } | Landed::Failed(_)))
        {
            client.log(EventKind::Miss, spec, key, None);
            reported_miss = true;
        }
        match outcome {
            Some(Landed::Value { bytes, decoded, cached }) => {
                if let Some(value) = landed(client, spec, key, keeping, bytes, decoded, cached) {
                    return Ok(value);
                }
            }
            Some(Landed::Failed(Some(error))) => {
                if let Some(error) = sharing.restore(error) {
                    return Err(error);
                }
            }
            Some(Landed::Failed(None)) => {
                // Its error cannot be handed over: fetch once by ourselves,
                // alongside the other followers, rather than fail one after
                // another behind new leaders.
                return match step {
                    Step::Read(_) | Step::Cached(_) => {
                        Box::pin(fetch_and_store(client, spec, key, &mut fetch, stale.take(), policy)).await
                    }
                    Step::Uncached => Box::pin(fetch_uncached(client, spec, key, &mut fetch, policy, None)).await,
                }
                .map(|(value, _)| value);
            }
            Some(Landed::Abandoned) => {}
            None => {
                // The leader hangs: lead a new flight in its place.
                role = client.flights().take_over(flight_key, &follower);
                continue;
            }
        }
        // The leader went away without a value: it may still have been
        // stored by someone (a new `Read` leader looks), else compete for
        // the lead.
        if matches!(step, Step::Cached(_)) {
            match read(client, spec, key, Instant::now() + client.cache_timeout()).await {
                Read::Hit(value, _) | Read::Due(value, _) => return Ok(value),
                Read::Stale(found) => stale = Some(found),
                Read::Miss | Read::Failed => {}
            }
        }
        role = client.flights().join(flight_key);
    }
}

/// A stale value of a key this process is refetching in the background
/// (its caller was answered by the soft timeout): served as it is, rather
/// than fetched again.
fn answer_stale<V>(client: &Client, spec: &StoreSpec, key: &str, stale: Stale<V>) -> (V, Option<Arc<[u8]>>) {
    client.log(EventKind::Stale, spec, key, None);
    let bytes = stale.bytes();
    (stale.value, Some(bytes))
}

/// A flight leader's value, kept decoded (if values of the store's type
/// can be) for its followers and for the store's local tier: there too if
/// the store has one and the flight is still current (no invalidation
/// since it began), with its dates if the store dates its values. The
/// value is cloned once, and only when someone takes it.
fn keep<V>(
    client: &Client,
    spec: &StoreSpec,
    guard: &LeaderGuard<'_>,
    key: &str,
    value: &V,
    bytes: &[u8],
    keeping: ValueKeeping<V>,
) -> Option<Kept> {
    if !client.local().has(spec) {
        return for_followers(guard, value, keeping);
    }
    super::tier::keep(client, spec, guard, key, bytes, || keeping.keep(value))
}

/// A flight leader's value, kept decoded for its followers if it has any
/// and values of the store's type can be kept.
fn for_followers<V>(guard: &LeaderGuard<'_>, value: &V, keeping: ValueKeeping<V>) -> Option<Kept> {
    if guard.followed() { keeping.keep(value) } else { None }
}

/// The fail-safe's last resort when the cache cannot be read: a value of
/// the store's local tier within its stale end (`stale_for`), kept there
/// even while the tier cannot vouch for it.
fn last_resort<V>(client: &Client, spec: &StoreSpec, key: &str, keeping: ValueKeeping<V>) -> Option<V> {
    spec.stale_for?;
    let held = client.local().get_stale(spec, key)?;
    if client.clock().unix_ms() >= held.stale_until {
        return None;
    }
    keeping.take(&held.value)
}

/// The leader's fetch when the cache cannot be addressed: nothing stored,
/// the value encoded only to hand it to the followers. If it fails and
/// the local tier still holds a value within its stale end
/// (`last_resort`), that value is served.
async fn fetch_uncached<V, E, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    fetch: &mut F,
    policy: FetchPolicy<'_, V, E>,
    last_resort: Option<V>,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let limited = fresh::limited(spec, None, policy) || (spec.hard_timeout.is_some() && last_resort.is_some());
    let outcome = attempt(client, spec, key, fetch(), limited).await;
    let outcome = match (outcome, last_resort) {
        (Outcome::Value(value), _) => Outcome::Value(value),
        (_, Some(value)) => {
            client.log(EventKind::Stale, spec, key, None);
            let bytes = encode(client, spec, key, &value);
            return Ok((value, bytes));
        }
        (failed, None) => failed,
    };
    let (result, bytes) = resolve(client, spec, key, outcome, None, policy_timeout(policy));
    result.map(|value| (value, bytes))
}

fn policy_timeout<V, E>(policy: FetchPolicy<'_, V, E>) -> Option<fn(fresh::FetchTimeout) -> E> {
    policy.timed_out()
}

/// Calls the fetcher, encodes and writes the value, with no cross-process
/// coordination. Returns the value and its encoding (`None` if it could not
/// be encoded). The write runs off the caller's path (waited for one cache
/// budget at most) and is skipped while the breaker is open; encode and
/// write failures are logged, not returned: the caller still gets its value.
/// A failed fetch with a `stale` value serves it (and writes it again,
/// fresh for the store's fail-safe throttle).
pub(crate) async fn fetch_and_store<V, E, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    fetch: &mut F,
    stale: Option<Stale<V>>,
    policy: FetchPolicy<'_, V, E>,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    if let Some((soft, start)) = soft_timeout(spec, stale.as_ref(), policy)
        && let Some(stale) = stale
    {
        let settle = fresh::settle_unleased(client, spec, key, Some(stale.fallback_bytes(client, spec)));
        return answer_softly(client, spec, key, settle, stale, start(), soft).await;
    }
    let limited = fresh::limited(spec, stale.as_ref(), policy);
    let outcome = attempt(client, spec, key, fetch(), limited).await;
    let (result, bytes) = resolve(client, spec, key, outcome, stale, policy_timeout(policy));
    let Some(bytes) = bytes else {
        return result.map(|value| (value, None));
    };
    if !client.is_degraded() {
        let deadline = Instant::now() + client.cache_timeout();
        let ttl = stored_ttl(client, spec, &bytes);
        let (owner, at, value) = (client.clone(), key.to_owned(), Arc::clone(&bytes));
        write_behind(client, spec, key, deadline, async move {
            match owner.cache().backend().set(&at, &value, Some(ttl)).await {
                Ok(()) => owner.announce(spec, &[&at]).await,
                Err(error) => owner.log(EventKind::BackendError, spec, &at, Some(&error)),
            }
        })
        .await;
    }
    result.map(|value| (value, Some(bytes)))
}

/// A flight leader's miss path: through the stampede protocol when the
/// backend coordinates across processes, else a plain fetch and store.
async fn fill<V, E, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    fetch: &mut F,
    deadline: Instant,
    stale: Option<Stale<V>>,
    policy: FetchPolicy<'_, V, E>,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let Some(renewer) = client.renewer() else {
        if stale.is_some()
            && let Some((value, bytes)) = replaced(client, spec, key).await
        {
            return Ok((value, Some(bytes)));
        }
        return fetch_and_store(client, spec, key, fetch, stale, policy).await;
    };
    let mut leases = Leases::new(renewer, [(key.to_owned(), waiter::lock_ttl(client, spec))]);
    let budget = client.cache_timeout();
    // A stale value is still there: the lock is taken over it.
    let over_value = stale.is_some();
    let acquire = async {
        if over_value {
            leases.acquire_to_refresh().await
        } else {
            leases.acquire().await.map(|taken| taken.first() == Some(&true))
        }
    };
    match tokio::time::timeout_at(deadline, acquire).await {
        Ok(Ok(taken)) => {
            client.cache_answered(spec, key);
            if taken {
                // Over a stale value, the lock does not say nobody
                // replaced it since it was read (a background fetch that
                // just ended): look again, with the lock held.
                if over_value && let Some((value, bytes)) = replaced(client, spec, key).await {
                    return Ok((value, Some(bytes)));
                }
                return lead(client, spec, leases, fetch, stale, policy).await;
            }
        }
        Ok(Err(error)) => {
            // The cache cannot coordinate: serve the source (the dropped
            // leases release a lock the lost answer may have taken).
            client.cache_failed(spec, key, &error);
            return fetch_and_store(client, spec, key, fetch, stale, policy).await;
        }
        Err(_) => {
            client.cache_failed(spec, key, &Error::Timeout { op: Op::Lock, budget });
            return fetch_and_store(client, spec, key, fetch, stale, policy).await;
        }
    }
    wait_then_load(client, Waiter::new(client, renewer, spec, key), fetch, stale, policy).await
}

/// A fresh value at `key`, stored since its stale value was read, if
/// there is one.
async fn replaced<V: DeserializeOwned>(client: &Client, spec: &StoreSpec, key: &str) -> Option<(V, Arc<[u8]>)> {
    let deadline = Instant::now() + client.cache_timeout();
    match probe(client, spec, key, deadline).await {
        Probe::Found(bytes) if is_fresh(client, spec, &bytes) => {
            let value = decode(client, spec, key, &bytes, true)?;
            Some((value, Arc::from(bytes)))
        }
        _ => None,
    }
}

/// Waits for another process's fetch of the waiter's key; fetches itself
/// if the wait ends with the lock or gives up (serving `stale` if that
/// fetch fails).
pub(crate) async fn wait_then_load<V, E, F, Fut>(
    client: &Client,
    waiter: Waiter<'_>,
    fetch: &mut F,
    stale: Option<Stale<V>>,
    policy: FetchPolicy<'_, V, E>,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize + DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let (spec, key) = (waiter.spec(), waiter.key().to_owned());
    let mut accept = |bytes: &[u8]| decode::<V>(client, spec, &key, bytes, true);
    match waiter.wait(&mut accept).await {
        Waited::Hit(value, bytes) => Ok((value, Some(bytes))),
        Waited::Lease(leases) => lead(client, spec, leases, fetch, stale, policy).await,
        Waited::GiveUp => fetch_and_store(client, spec, &key, fetch, stale, policy).await,
    }
}

/// The lock holder: fetch (the client's renewer keeps the lock alive),
/// then fill, or abandon on failure, off the caller's path. Cancellation
/// or a panic during the fetch drops the leases, which release the lock.
/// With a `stale` value, a failed fetch serves it and fills it again
/// (fresh for the throttle), and past the store's `soft_timeout` the
/// caller is answered with it while the fetch goes on in the background.
async fn lead<V, E, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    leases: Leases,
    fetch: &mut F,
    stale: Option<Stale<V>>,
    policy: FetchPolicy<'_, V, E>,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let key = leases.key(0).to_owned();
    if let Some((soft, start)) = soft_timeout(spec, stale.as_ref(), policy)
        && let Some(stale) = stale
    {
        let settle = fresh::settle_lease(client, spec, leases, Some(stale.fallback_bytes(client, spec)));
        return answer_softly(client, spec, &key, settle, stale, start(), soft).await;
    }
    let limited = fresh::limited(spec, stale.as_ref(), policy);
    let outcome = attempt(client, spec, &key, fetch(), limited).await;
    let (result, bytes) = resolve(client, spec, &key, outcome, stale, policy_timeout(policy));
    let ttl = bytes
        .as_deref()
        .map_or(spec.ttl, |bytes| stored_ttl(client, spec, bytes));
    let deadline = Instant::now() + client.cache_timeout();
    let (owner, value) = (client.clone(), bytes.clone());
    write_behind(client, spec, &key, deadline, async move {
        let key = leases.key(0).to_owned();
        match leases.settle(&[value], &[ttl]).await {
            Ok(stored) if stored.first() == Some(&true) => owner.announce(spec, &[&key]).await,
            Ok(_) => {}
            // The dropped leases release the lock (a refused value, such
            // as one too large for the server, must not hold the key).
            Err(error) => owner.log(EventKind::BackendError, spec, &key, Some(&error)),
        }
    })
    .await;
    result.map(|value| (value, bytes))
}

/// The soft timeout of a fetch and how to run it in the background, when
/// it applies: the store has a `soft_timeout`, there is a stale value to
/// answer with, and the fetch can run on its own task.
#[allow(clippy::type_complexity)]
fn soft_timeout<'p, V, E>(
    spec: &StoreSpec,
    stale: Option<&Stale<V>>,
    policy: FetchPolicy<'p, V, E>,
) -> Option<(
    std::time::Duration,
    &'p (dyn Fn() -> Background<V, E> + Send + Sync + 'p),
)> {
    let soft = spec.soft_timeout?;
    stale?;
    let start = policy.background_fetch()?;
    tokio::runtime::Handle::try_current().ok()?;
    Some((soft, start))
}

/// A fetch of a key with a stale value and a `soft_timeout`: it runs on
/// its own task, which settles the key (`settle`: the new value, or the
/// stale one again if it fails); the caller waits for it at most `soft`,
/// then gets the stale value.
async fn answer_softly<V, E>(
    client: &Client,
    spec: &'static StoreSpec,
    key: &str,
    settle: fresh::Settle,
    stale: Stale<V>,
    background: Background<V, E>,
    soft: std::time::Duration,
) -> Result<(V, Option<Arc<[u8]>>), E>
where
    V: Serialize,
{
    // While the fetch runs past the soft timeout, this process's callers
    // get the stale value rather than fetch again.
    let settle = refresh::ending(settle, refresh::Refreshing::start(client, key));
    let fetched = background.start(client, spec, key, Box::pin(async move { Some(settle) }));
    match tokio::time::timeout(soft, fetched).await {
        Ok(Ok(Outcome::Value(value))) => {
            let bytes = encode(client, spec, key, &value);
            Ok((value, bytes))
        }
        // It failed (its task stored the stale value again) or went away.
        Ok(_) => {
            let (value, bytes) = stale.serve(client, spec, key);
            Ok((value, Some(bytes)))
        }
        Err(_) => Ok(answer_stale(client, spec, key, stale)),
    }
}
