//! The batch path shared by pipelines and `get_m`: every key of every
//! store of the batch in as few round trips as the backend allows.
//!
//! 1. Read every key in one [`Backend::get_many`](crate::Backend::get_many)
//!    (one MGET on Redis, one command per node in a cluster, one multi-get
//!    per memcached server).
//!    A value that does not decode is a miss, and is removed (if still
//!    the same bytes) so the lock step does not refuse its lock.
//! 2. Misses join this process's flights: a key another task is already
//!    loading (a `get`, another batch) is waited for, not fetched.
//! 3. The remaining misses try their stampede locks in one
//!    [`Coordinator::try_lock_many`] (one script per Redis node).
//! 4. Concurrently: the won keys are fetched (the store's `fetch_many`
//!    once per store, else one fetch per key, at most
//!    [`fetch_concurrency`](crate::ClientBuilder::fetch_concurrency) of
//!    the batch's at a time) with their locks renewed in one
//!    [`Coordinator::renew_many`] per period, then filled or abandoned in
//!    one [`Coordinator::settle_many`]; the lost keys wait for their
//!    holders as a single `get` does; flight followers wait for their
//!    leaders. (Backends cut each batch command into commands of at most
//!    [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND) keys.)
//!
//! A read or lock failure fails the batch (nothing has been fetched yet);
//! a failed fill is logged, releases the batch's locks at once, and the
//! fetched values are still returned.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{Either, join_all, join3, select};
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::error::Result;
use crate::logger::EventKind;
use crate::pipeline::group::{Fetched, Group};
use crate::singleflight::{Follower, Landed, LeaderGuard, Role};
use crate::stampede::{Coordinator, LockRequest, Settlement, driver, new_token};
use crate::store::discard;
use crate::store::generation::storage_key;

/// One distinct key of the batch: entry `i` of group `g`, stored at `key`
/// (borrowed from the group where the store key is the cache key).
struct Slot<'g> {
    g: usize,
    i: usize,
    key: Cow<'g, str>,
}

/// A miss this task loads: its flight in this process and, once
/// taken, its lock's token.
struct Load<'c, 'g> {
    slot: Slot<'g>,
    flight: Option<LeaderGuard<'c>>,
    token: String,
}

/// Resolves every entry of `groups` (see the module docs). `Err` when the
/// keys could not be read or locked; entries already resolved keep their
/// outcome, the others stay pending.
pub(crate) async fn run<'g>(client: &Client, groups: &'g [&'g dyn Group<'_>]) -> Result<()> {
    let (slots, repeated) = locate(client, groups).await?;
    if slots.is_empty() {
        return Ok(());
    }
    let found = {
        let keys: Vec<&str> = slots.iter().map(|s| &*s.key).collect();
        client.cache().backend().get_many(&keys).await?
    };
    let mut misses = Vec::new();
    let mut undecodable = Vec::new();
    for (slot, bytes) in slots.into_iter().zip(found) {
        let group = groups[slot.g];
        match bytes {
            Some(bytes) if group.accept(client, slot.i, &slot.key, &bytes, true) => {}
            found => {
                client.log(EventKind::Miss, group.spec(), &slot.key, None);
                if let Some(bytes) = found {
                    undecodable.push((misses.len(), bytes));
                }
                misses.push(slot);
            }
        }
    }
    futures_util::stream::iter(&undecodable)
        .for_each_concurrent(client.fetch_concurrency(), |(n, bytes)| {
            discard(client, groups[misses[*n].g].spec(), &misses[*n].key, bytes)
        })
        .await;

    let mut loads = Vec::new();
    let mut followers: Vec<(Slot<'_>, Follower)> = Vec::new();
    for slot in misses {
        match client.flights().join(&slot.key) {
            Role::Leader(flight) => loads.push(Load {
                slot,
                flight: Some(flight),
                token: String::new(),
            }),
            Role::Follower(follower) => followers.push((slot, follower)),
        }
    }

    let (won, lost) = match client.coordinator() {
        Some(coordinator) => lock(client, coordinator, groups, loads).await?,
        None => (recheck(client, groups, loads).await, Vec::new()),
    };
    // Every fetch of the batch (won keys, waiters that fetch by
    // themselves, followers whose leader failed) holds one of these.
    let limit = Semaphore::new(client.fetch_concurrency());
    join3(
        fetch_won(client, groups, &limit, won),
        wait_lost(client, groups, &limit, lost),
        follow(client, groups, &limit, followers),
    )
    .await;
    join_all(repeated.iter().map(|s| groups[s.g].load(client, &limit, s.i, &s.key))).await;
    Ok(())
}

/// Every entry's cache key. A key that appears in two groups (one store
/// added with two contexts) is loaded once in the batch; the repeats are
/// returned apart and loaded afterwards (then hitting the cache).
async fn locate<'g>(client: &Client, groups: &'g [&'g dyn Group<'_>]) -> Result<(Vec<Slot<'g>>, Vec<Slot<'g>>)> {
    let mut slots = Vec::with_capacity(groups.iter().map(|g| g.len()).sum());
    for (g, group) in groups.iter().enumerate() {
        for i in 0..group.len() {
            let key = storage_key(client, group.spec(), group.key(i)).await?;
            slots.push(Slot { g, i, key });
        }
    }
    let shared_store = groups
        .iter()
        .enumerate()
        .any(|(n, a)| groups[..n].iter().any(|b| std::ptr::eq(a.spec(), b.spec())));
    if !shared_store {
        return Ok((slots, Vec::new()));
    }
    let mut seen = HashSet::new();
    let (first, repeated) = slots.into_iter().partition(|s| seen.insert(s.key.to_string()));
    Ok((first, repeated))
}

/// Without a coordinator (memory): a flight led now may start just after
/// another one stored its value (between this batch's read and its
/// joining). Reads those keys again (in memory, no round trip) and hands
/// what is there to the followers instead of fetching it again.
async fn recheck<'c, 'g>(client: &'c Client, groups: &[&dyn Group<'_>], loads: Vec<Load<'c, 'g>>) -> Vec<Load<'c, 'g>> {
    if loads.iter().all(|l| l.flight.is_none()) {
        return loads;
    }
    let found = {
        let keys: Vec<&str> = loads.iter().map(|l| &*l.slot.key).collect();
        match client.cache().backend().get_many(&keys).await {
            Ok(found) => found,
            Err(_) => return loads, // the fetch will tell
        }
    };
    let mut left = Vec::with_capacity(loads.len());
    for (load, bytes) in loads.into_iter().zip(found) {
        let group = groups[load.slot.g];
        match bytes {
            Some(bytes) if group.accept(client, load.slot.i, &load.slot.key, &bytes, true) => {
                if let Some(flight) = load.flight {
                    flight.finish(Arc::from(bytes));
                }
            }
            _ => left.push(load),
        }
    }
    left
}

/// Tries every lock in one call; returns the won and the lost.
async fn lock<'c, 'g>(
    client: &'c Client,
    coordinator: &Arc<dyn Coordinator>,
    groups: &[&dyn Group<'_>],
    mut loads: Vec<Load<'c, 'g>>,
) -> Result<(Vec<Load<'c, 'g>>, Vec<Load<'c, 'g>>)> {
    if loads.is_empty() {
        return Ok((loads, Vec::new()));
    }
    for load in &mut loads {
        load.token = new_token();
    }
    let requests: Vec<LockRequest<'_>> = loads
        .iter()
        .map(|l| LockRequest {
            key: &l.slot.key,
            token: &l.token,
            ttl: driver::lock_ttl(client, groups[l.slot.g].spec()),
        })
        .collect();
    let taken = match coordinator.try_lock_many(&requests).await {
        Ok(taken) => taken,
        Err(error) => {
            // Some locks may have been taken before the failure.
            let abandons: Vec<Settlement<'_>> = requests
                .iter()
                .map(|r| Settlement::Abandon {
                    key: r.key,
                    token: r.token,
                })
                .collect();
            if let Err(e) = coordinator.settle_many(&abandons).await {
                tracing::warn!(error = %e, "could not release the locks of a failed batch");
            }
            return Err(error);
        }
    };
    drop(requests);
    let mut taken = taken.into_iter();
    Ok(loads.into_iter().partition(|_| taken.next().unwrap_or(false)))
}

/// The won keys of one group: `(entry, cache key)` and their places in
/// the won list.
struct GroupFetch<'k> {
    g: usize,
    which: Vec<(usize, &'k str)>,
    order: Vec<usize>,
}

/// Fetches the won keys (each store's once), renewing their locks, then
/// fills or abandons them in one call (or, with no coordinator, writes the
/// values) and hands the values to this process's followers.
async fn fetch_won(client: &Client, groups: &[&dyn Group<'_>], limit: &Semaphore, won: Vec<Load<'_, '_>>) {
    if won.is_empty() {
        return;
    }
    // Per group, its entries and keys; `order` maps them back to `won`.
    let mut per_group: Vec<GroupFetch<'_>> = Vec::new();
    for (n, load) in won.iter().enumerate() {
        let at = match per_group.iter().position(|f| f.g == load.slot.g) {
            Some(at) => at,
            None => {
                per_group.push(GroupFetch {
                    g: load.slot.g,
                    which: Vec::new(),
                    order: Vec::new(),
                });
                per_group.len() - 1
            }
        };
        per_group[at].which.push((load.slot.i, &load.slot.key));
        per_group[at].order.push(n);
    }
    let fetches = join_all(per_group.iter().map(|f| groups[f.g].fetch(client, limit, &f.which)));
    let coordinator = client.coordinator();
    let fetched = match coordinator {
        Some(coordinator) => {
            let mut abandon = AbandonMany::new(coordinator, &won);
            let locks: Vec<LockRequest<'_>> = won
                .iter()
                .map(|l| LockRequest {
                    key: &l.slot.key,
                    token: &l.token,
                    ttl: driver::lock_ttl(client, groups[l.slot.g].spec()),
                })
                .collect();
            let fetched = renewing(&**coordinator, &locks, fetches).await;
            abandon.disarm();
            fetched
        }
        None => fetches.await,
    };
    let mut slots: Vec<Option<Fetched>> = won.iter().map(|_| None).collect();
    for (f, results) in per_group.iter().zip(fetched) {
        for (&n, result) in f.order.iter().zip(results) {
            slots[n] = Some(result);
        }
    }
    let outcomes: Vec<Fetched> = slots.into_iter().map(|f| f.unwrap_or(Fetched::Value(None))).collect();

    match coordinator {
        Some(coordinator) => {
            let settlements: Vec<Settlement<'_>> = won
                .iter()
                .zip(&outcomes)
                .map(|(l, f)| match f.bytes() {
                    Some(value) => Settlement::Fill {
                        key: &l.slot.key,
                        token: &l.token,
                        value,
                        ttl: groups[l.slot.g].spec().ttl,
                    },
                    None => Settlement::Abandon {
                        key: &l.slot.key,
                        token: &l.token,
                    },
                })
                .collect();
            if let Err(error) = coordinator.settle_many(&settlements).await {
                let spec = groups[won[0].slot.g].spec();
                client.log(EventKind::BackendError, spec, &won[0].slot.key, Some(&error));
                // Refused (a value too large for the server, ...) or of
                // unknown fate: release every lock still held, so waiters
                // take them at once instead of waiting for them to expire.
                let abandons: Vec<Settlement<'_>> = settlements
                    .iter()
                    .map(|s| Settlement::Abandon {
                        key: s.key(),
                        token: s.token(),
                    })
                    .collect();
                // The failure may have closed the connection (a value over
                // Redis's `proto-max-bulk-len` does): the first command
                // after it reconnects, so a release that fails is tried
                // once more (releases are idempotent).
                let released = match coordinator.settle_many(&abandons).await {
                    Err(_) => coordinator.settle_many(&abandons).await,
                    released => released,
                };
                if let Err(error) = released {
                    client.log(EventKind::BackendError, spec, &won[0].slot.key, Some(&error));
                }
            }
        }
        None => {
            let backend = client.cache().backend();
            let writes = won.iter().zip(&outcomes).filter_map(|(l, f)| {
                let spec = groups[l.slot.g].spec();
                f.bytes().map(|value| async move {
                    if let Err(error) = backend.set(&l.slot.key, value, Some(spec.ttl)).await {
                        client.log(EventKind::BackendError, spec, &l.slot.key, Some(&error));
                    }
                })
            });
            join_all(writes).await;
        }
    }
    for (load, fetched) in won.into_iter().zip(outcomes) {
        if let Some(flight) = load.flight {
            land(flight, fetched);
        }
    }
}

/// Hands a fetch's outcome to this process's followers of its key.
fn land(flight: LeaderGuard<'_>, fetched: Fetched) {
    match fetched {
        Fetched::Value(Some(bytes)) => flight.finish(bytes),
        // Not encoded: the followers load it themselves.
        Fetched::Value(None) => drop(flight),
        Fetched::Failed(error) => flight.fail(error),
    }
}

/// The keys whose locks another process holds: each waits as a single
/// `get` would, then hands its value to this process's followers.
async fn wait_lost(client: &Client, groups: &[&dyn Group<'_>], limit: &Semaphore, lost: Vec<Load<'_, '_>>) {
    let Some(coordinator) = client.coordinator() else {
        return;
    };
    join_all(lost.into_iter().map(|load| async move {
        let fetched = groups[load.slot.g]
            .wait_lost(client, coordinator, limit, load.slot.i, &load.slot.key)
            .await;
        if let Some(flight) = load.flight {
            land(flight, fetched);
        }
    }))
    .await;
}

/// Keys another task of this process is loading: take its value, or (if it
/// failed) load them as a single `get` would.
async fn follow(client: &Client, groups: &[&dyn Group<'_>], limit: &Semaphore, followers: Vec<(Slot<'_>, Follower)>) {
    join_all(followers.into_iter().map(|(slot, mut follower)| async move {
        let group = groups[slot.g];
        match follower.outcome().await {
            Landed::Value(bytes) if group.accept(client, slot.i, &slot.key, &bytes, false) => return,
            Landed::Failed(Some(error)) if group.fail_with(slot.i, &error) => return,
            _ => {}
        }
        group.load(client, limit, slot.i, &slot.key).await;
    }))
    .await;
}

/// Runs `fetch`, renewing every lock of `locks` (in one
/// [`Coordinator::renew_many`]) every third of the shortest lock TTL until
/// it ends.
async fn renewing<T>(coordinator: &dyn Coordinator, locks: &[LockRequest<'_>], fetch: impl Future<Output = T>) -> T {
    let shortest = locks.iter().map(|l| l.ttl).min().unwrap_or(Duration::from_secs(1));
    let renew = async {
        let every = (shortest / 3).max(Duration::from_millis(1));
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = coordinator.renew_many(locks).await {
                tracing::warn!(locks = locks.len(), %error, "could not renew the batch's fetch locks");
            }
        }
    };
    let (fetch, renew) = (std::pin::pin!(fetch), std::pin::pin!(renew));
    match select(fetch, renew).await {
        Either::Left((value, _)) => value,
        Either::Right(((), _)) => unreachable!("the renewal loop never ends"),
    }
}

/// Releases a batch's locks if its fetch is cancelled or panics, so other
/// processes' waiters hear of it at once (as the single-key `Abandon`).
struct AbandonMany {
    coordinator: Arc<dyn Coordinator>,
    locks: Vec<(String, String)>,
}

impl AbandonMany {
    fn new(coordinator: &Arc<dyn Coordinator>, won: &[Load<'_, '_>]) -> Self {
        AbandonMany {
            coordinator: Arc::clone(coordinator),
            locks: won.iter().map(|l| (l.slot.key.to_string(), l.token.clone())).collect(),
        }
    }

    fn disarm(&mut self) {
        self.locks.clear();
    }
}

impl Drop for AbandonMany {
    fn drop(&mut self) {
        if self.locks.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordinator = Arc::clone(&self.coordinator);
        let locks = std::mem::take(&mut self.locks);
        runtime.spawn(async move {
            let abandons: Vec<Settlement<'_>> = locks
                .iter()
                .map(|(key, token)| Settlement::Abandon { key, token })
                .collect();
            if let Err(error) = coordinator.settle_many(&abandons).await {
                tracing::warn!(%error, "could not release the fetch locks of a cancelled batch");
            }
        });
    }
}
