//! The batch path shared by pipelines and `get_m`: every key of every
//! store of the batch in as few round trips as the backend allows.
//!
//! 1. Every key joins this process's flights: a key another task is
//!    already reading or loading (a `get`, another batch) is waited for,
//!    not read or fetched again. The keys this batch leads are its own to
//!    read and, on a miss, to load.
//! 2. Read the led keys in one [`Backend::get_many`](crate::Backend::get_many)
//!    (one MGET on Redis, one command per node in a cluster, one multi-get
//!    per memcached server); hits are handed to their followers. A value
//!    that does not decode is a miss, and is removed (if still the same
//!    bytes) so the lock step does not refuse its lock. A value past its
//!    TTL and within `stale_for` takes a single `get`'s miss path (which
//!    serves it if its refetch fails).
//! 3. The misses take their stampede locks through one set of
//!    leases (one [`Coordinator::try_lock_many`], one script per Redis
//!    node), armed before the command is sent.
//! 4. Concurrently: the won keys are fetched (the store's `fetch_many`
//!    once per store, else one fetch per key, at most
//!    [`fetch_concurrency`](crate::ClientBuilder::fetch_concurrency) of
//!    the batch's at a time) while the client's renewer keeps their locks,
//!    then filled or abandoned in one [`Coordinator::settle_many`] off the
//!    caller's path; the lost keys wait for their holders as a single
//!    `get` does; flight followers wait for their leaders. (Backends cut
//!    each batch command into commands of at most
//!    [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND) keys.)
//!
//! The policy is `get`'s: the reads and locks share the client's
//! `cache_timeout` (one per command chunk of keys); when the cache cannot
//! be read in time (or locked: then the values are still written), or
//! the client's breaker is open, every key is served from the source
//! (still once per key in the process) and the failure is reported
//! through the logger, never returned. A failed fill is logged and
//! releases the batch's locks at once.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{join, join_all, join3};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Op};
use crate::logger::EventKind;
use crate::pipeline::group::{Fetched, Group};
use crate::singleflight::{Follower, Landed, LeaderGuard, Role};
use crate::spec::StoreSpec;
use crate::stampede::lease::Leases;
use crate::stampede::probe::discard;
use crate::stampede::renewer::Renewer;
use crate::stampede::waiter;
use crate::store::generation::storage_key;
use crate::write_behind::write_behind;

/// One distinct key of the batch: entry `i` of group `g`, stored at `key`
/// (borrowed from the group where the store key is the cache key).
struct Slot<'g> {
    g: usize,
    i: usize,
    key: Cow<'g, str>,
}

/// A miss this task loads, with its flight in this process.
struct Load<'c, 'g> {
    slot: Slot<'g>,
    flight: LeaderGuard<'c>,
}

/// Whether the batch uses the cache (else every key comes from the
/// source and nothing is written).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cached,
    Bypass,
}

/// Resolves every entry of `groups` (see the module docs).
pub(crate) async fn run<'g>(client: &Client, groups: &'g [&'g dyn Group<'_>]) {
    let limit = Semaphore::new(client.fetch_concurrency());
    if !client.cache_admits() {
        return bypass(client, groups, &limit).await;
    }
    // The cache budget scales with the batch: one `cache_timeout` per
    // command chunk of keys.
    let keys: usize = groups.iter().map(|g| g.len()).sum();
    let chunks = keys.div_ceil(crate::MAX_KEYS_PER_COMMAND).max(1);
    let budget = client
        .cache_timeout()
        .saturating_mul(u32::try_from(chunks).unwrap_or(u32::MAX));
    let deadline = Instant::now() + budget;
    let (slots, repeated) = match tokio::time::timeout_at(deadline, locate(client, groups)).await {
        Ok(Ok(located)) => located,
        failed => {
            report(
                client,
                groups,
                failed.map_or_else(|_| timeout(client, Op::Get), |e| e.err()),
            );
            return bypass(client, groups, &limit).await;
        }
    };
    // Keys the stores' local tiers hold fresh are served from them.
    let slots: Vec<Slot<'g>> = slots
        .into_iter()
        .filter(|s| !groups[s.g].serve_local(client, s.i, &s.key))
        .collect();
    if slots.is_empty() {
        let limit = &limit;
        join_all(repeated.iter().map(|s| groups[s.g].load(client, limit, s.i, &s.key))).await;
        return;
    }
    // Keys another task of this process is reading or loading right now
    // are followed, not read again; the rest are read by this batch.
    let (loads, followers) = join_flights(client, slots);
    let found = if loads.is_empty() {
        Vec::new()
    } else {
        let keys: Vec<&str> = loads.iter().map(|l| &*l.slot.key).collect();
        match tokio::time::timeout_at(deadline, client.cache().backend().get_many(&keys)).await {
            Ok(Ok(found)) => found,
            failed => {
                report(
                    client,
                    groups,
                    failed.map_or_else(|_| timeout(client, Op::GetMany), |e| e.err()),
                );
                // Our flights end (their followers compete again); every
                // entry comes from the source.
                drop(loads);
                return bypass(client, groups, &limit).await;
            }
        }
    };
    if let Some(load) = loads.first() {
        client.cache_answered(groups[load.slot.g].spec(), &load.slot.key);
    }
    let mut misses = Vec::new();
    let mut undecodable = Vec::new();
    let mut stale = Vec::new();
    for (load, bytes) in loads.into_iter().zip(found) {
        let group = groups[load.slot.g];
        match bytes {
            Some(bytes)
                if crate::store::is_fresh(client, group.spec(), &bytes)
                    && group.accept(client, load.slot.i, &load.slot.key, &bytes, None, true) =>
            {
                group.keep_local(client, &load.flight, load.slot.i, &load.slot.key, &bytes);
                load.flight.finish_read(Arc::from(bytes));
            }
            // A value past its TTL and within `stale_for` takes a single
            // get's miss path, which serves it if its refetch fails (its
            // flight here ends: its followers join that get's).
            Some(bytes) if crate::store::is_stale(client, group.spec(), &bytes) => {
                stale.push((load.slot, bytes));
            }
            found => {
                client.log(EventKind::Miss, group.spec(), &load.slot.key, None);
                if let Some(bytes) = found {
                    undecodable.push((misses.len(), bytes));
                }
                misses.push(load);
            }
        }
    }
    futures_util::stream::iter(&undecodable)
        .for_each_concurrent(client.fetch_concurrency(), |(n, bytes)| {
            let miss = &misses[*n].slot;
            discard(client, groups[miss.g].spec(), &miss.key, bytes)
        })
        .await;

    let limit = &limit;
    let refetch_stale =
        join_all(stale.into_iter().map(|(slot, bytes)| async move {
            groups[slot.g].load_stale(client, limit, slot.i, &slot.key, bytes).await
        }));
    let load_misses = async {
        match client.renewer() {
            Some(renewer) => lock_and_load(client, renewer, groups, limit, misses, followers, deadline).await,
            None => {
                join(
                    fetch_unlocked(client, groups, limit, misses, true),
                    follow(client, groups, limit, followers, Mode::Cached),
                )
                .await;
            }
        }
    };
    join(load_misses, refetch_stale).await;
    join_all(repeated.iter().map(|s| groups[s.g].load(client, limit, s.i, &s.key))).await;
}

/// A cache step of the batch that failed or timed out: reported once.
fn report(client: &Client, groups: &[&dyn Group<'_>], error: Option<Error>) {
    let Some(error) = error else { return };
    let (spec, key) = match groups.iter().find(|g| g.len() > 0) {
        Some(group) => (group.spec(), group.key(0)),
        None => return,
    };
    client.cache_failed(spec, key, &error);
}

fn timeout(client: &Client, op: Op) -> Option<Error> {
    Some(Error::Timeout {
        op,
        budget: client.cache_timeout(),
    })
}

/// Every slot joins its key's flight: leaders load it, followers wait.
fn join_flights<'c, 'g>(client: &'c Client, slots: Vec<Slot<'g>>) -> (Vec<Load<'c, 'g>>, Vec<(Slot<'g>, Follower)>) {
    let mut loads = Vec::new();
    let mut followers = Vec::new();
    for slot in slots {
        match client.flights().join(&slot.key) {
            Role::Leader(flight) => loads.push(Load { slot, flight }),
            Role::Follower(follower) => followers.push((slot, follower)),
        }
    }
    (loads, followers)
}

/// Every entry from the source, nothing read or written: the breaker is
/// open or the cache could not be read. Still one fetch per key in the
/// process (flights named after the store key, shared with `get`'s).
async fn bypass(client: &Client, groups: &[&dyn Group<'_>], limit: &Semaphore) {
    let mut slots = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for i in 0..group.len() {
            let key = Cow::Owned(format!("{} uncached", group.key(i)));
            slots.push(Slot { g, i, key });
        }
    }
    let (loads, followers) = join_flights(client, slots);
    join(
        fetch_unlocked(client, groups, limit, loads, false),
        follow(client, groups, limit, followers, Mode::Bypass),
    )
    .await;
}

/// Every entry's cache key. A key that appears in two groups (one store
/// added with two contexts) is loaded once in the batch; the repeats are
/// returned apart and loaded afterwards (then hitting the cache).
async fn locate<'g>(client: &Client, groups: &'g [&'g dyn Group<'_>]) -> crate::Result<(Vec<Slot<'g>>, Vec<Slot<'g>>)> {
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

/// Takes the locks of `loads` through one set of leases, then fetches the
/// won keys, waits for the lost ones and follows this process's flights,
/// all at once. If the locks cannot be taken in time, the loads are
/// fetched and written without them.
async fn lock_and_load<'c, 'g>(
    client: &'c Client,
    renewer: &Renewer,
    groups: &[&dyn Group<'_>],
    limit: &Semaphore,
    loads: Vec<Load<'c, 'g>>,
    followers: Vec<(Slot<'g>, Follower)>,
    deadline: Instant,
) {
    if loads.is_empty() {
        return follow(client, groups, limit, followers, Mode::Cached).await;
    }
    let mut leases = Leases::new(
        renewer,
        loads.iter().map(|l| {
            (
                l.slot.key.to_string(),
                waiter::lock_ttl(client, groups[l.slot.g].spec()),
            )
        }),
    );
    let taken = match tokio::time::timeout_at(deadline, leases.acquire()).await {
        Ok(Ok(taken)) => taken,
        failed => {
            report(
                client,
                groups,
                failed.map_or_else(|_| timeout(client, Op::Lock), |e| e.err()),
            );
            // Dropping the leases releases what the lost answer may hold.
            // The keys could be read: the values are still written, as a
            // single `get` whose lock step fails writes its value.
            drop(leases);
            join(
                fetch_unlocked(client, groups, limit, loads, true),
                follow(client, groups, limit, followers, Mode::Cached),
            )
            .await;
            return;
        }
    };
    let (mut won, mut lost) = (Vec::new(), Vec::new());
    for (n, load) in loads.into_iter().enumerate() {
        if taken.get(n).copied().unwrap_or(false) {
            won.push(load);
        } else {
            lost.push(load);
        }
    }
    join3(
        fetch_won(client, groups, limit, won, leases),
        wait_lost(client, renewer, groups, limit, lost),
        follow(client, groups, limit, followers, Mode::Cached),
    )
    .await;
}

/// One group's share of a fetch: the group, its `(entry, cache key)`s and
/// their places in the fetched loads.
type GroupFetch<'k> = (usize, Vec<(usize, &'k str)>, Vec<usize>);

/// Fetches `loads` (each store's at once: its `fetch_many`, else one fetch
/// per key within `limit`) and returns how each ended, in order.
async fn fetch_loads(
    client: &Client,
    groups: &[&dyn Group<'_>],
    limit: &Semaphore,
    loads: &[Load<'_, '_>],
) -> Vec<Fetched> {
    // Per group, its entries and keys, and their places in `loads`.
    let mut per_group: Vec<GroupFetch<'_>> = Vec::new();
    for (n, load) in loads.iter().enumerate() {
        let at = match per_group.iter().position(|f| f.0 == load.slot.g) {
            Some(at) => at,
            None => {
                per_group.push((load.slot.g, Vec::new(), Vec::new()));
                per_group.len() - 1
            }
        };
        per_group[at].1.push((load.slot.i, &load.slot.key));
        per_group[at].2.push(n);
    }
    let fetched = join_all(
        per_group
            .iter()
            .map(|(g, which, _)| groups[*g].fetch(client, limit, which)),
    )
    .await;
    let mut out: Vec<Option<Fetched>> = loads.iter().map(|_| None).collect();
    for ((_, _, order), results) in per_group.iter().zip(fetched) {
        for (&n, result) in order.iter().zip(results) {
            out[n] = Some(result);
        }
    }
    out.into_iter().map(|f| f.unwrap_or(Fetched::Value(None))).collect()
}

/// Fetches the won keys, settles their leases in one call off the
/// caller's path, and hands the outcomes to this process's followers.
async fn fetch_won(
    client: &Client,
    groups: &[&dyn Group<'_>],
    limit: &Semaphore,
    won: Vec<Load<'_, '_>>,
    leases: Leases,
) {
    if won.is_empty() {
        return; // the leases hold nothing
    }
    let outcomes = fetch_loads(client, groups, limit, &won).await;
    // The leases were made for every load, won or lost, in order: line the
    // won keys' values up with them by key.
    let mut values: Vec<Option<Arc<[u8]>>> = vec![None; leases.len()];
    let mut ttls: Vec<Duration> = vec![Duration::ZERO; leases.len()];
    let mut at = 0;
    for (load, fetched) in won.iter().zip(&outcomes) {
        while at < leases.len() && leases.key(at) != load.slot.key {
            at += 1;
        }
        if at < leases.len() {
            values[at] = fetched.bytes().cloned();
            let spec = groups[load.slot.g].spec();
            ttls[at] = fetched
                .bytes()
                .map_or(spec.ttl, |bytes| crate::store::stored_ttl(client, spec, bytes));
        }
    }
    let spec = groups[won[0].slot.g].spec();
    let key = won[0].slot.key.to_string();
    let owner = client.clone();
    let deadline = Instant::now() + client.cache_timeout();
    let filled = filled(groups, won.iter().zip(&outcomes));
    write_behind(client, spec, &won[0].slot.key, deadline, async move {
        match leases.settle(&values, &ttls).await {
            Ok(_) => announce(&owner, &filled).await,
            // The dropped leases release the locks.
            Err(error) => owner.log(EventKind::BackendError, spec, &key, Some(&error)),
        }
    })
    .await;
    for (load, fetched) in won.into_iter().zip(outcomes) {
        keep_and_land(client, groups, load, fetched);
    }
}

/// Fetches `loads` without locks; with `write`, stores what was fetched
/// (off the caller's path).
async fn fetch_unlocked(
    client: &Client,
    groups: &[&dyn Group<'_>],
    limit: &Semaphore,
    loads: Vec<Load<'_, '_>>,
    write: bool,
) {
    if loads.is_empty() {
        return;
    }
    let outcomes = fetch_loads(client, groups, limit, &loads).await;
    let write = write && !client.is_degraded();
    if write {
        let writes: Vec<(String, Arc<[u8]>, Duration)> = loads
            .iter()
            .zip(&outcomes)
            .filter_map(|(l, f)| {
                let value = f.bytes()?;
                let ttl = crate::store::stored_ttl(client, groups[l.slot.g].spec(), value);
                Some((l.slot.key.to_string(), Arc::clone(value), ttl))
            })
            .collect();
        if !writes.is_empty() {
            let spec = groups[loads[0].slot.g].spec();
            let owner = client.clone();
            let deadline = Instant::now() + client.cache_timeout();
            let filled = filled(groups, loads.iter().zip(&outcomes));
            write_behind(client, spec, &loads[0].slot.key, deadline, async move {
                let backend = owner.cache().backend();
                for (key, value, ttl) in &writes {
                    if let Err(error) = backend.set(key, value, Some(*ttl)).await {
                        owner.log(EventKind::BackendError, spec, key, Some(&error));
                    }
                }
                announce(&owner, &filled).await;
            })
            .await;
        }
    }
    for (load, fetched) in loads.into_iter().zip(outcomes) {
        if write {
            keep_and_land(client, groups, load, fetched);
        } else {
            land(load.flight, fetched);
        }
    }
}

/// The keys of `loads` that were fetched, by store: what a batch's fill
/// announces to other processes' local tiers.
fn filled<'l>(
    groups: &[&dyn Group<'_>],
    loads: impl Iterator<Item = (&'l Load<'l, 'l>, &'l Fetched)>,
) -> Vec<(&'static StoreSpec, Vec<String>)> {
    let mut filled: Vec<(&'static StoreSpec, Vec<String>)> = Vec::new();
    for (load, fetched) in loads {
        if fetched.bytes().is_none() {
            continue;
        }
        let spec = groups[load.slot.g].spec();
        match filled.iter_mut().find(|(s, _)| std::ptr::eq(*s, spec)) {
            Some((_, keys)) => keys.push(load.slot.key.to_string()),
            None => filled.push((spec, vec![load.slot.key.to_string()])),
        }
    }
    filled
}

/// Announces a batch's fills (see [`Client::announce`]).
async fn announce(client: &Client, filled: &[(&'static StoreSpec, Vec<String>)]) {
    for (spec, keys) in filled {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        client.announce(spec, &keys).await;
    }
}

/// Holds a value fetched into the cache (or waited for) in its store's
/// local tier, then hands it to this process's followers of its key.
fn keep_and_land(client: &Client, groups: &[&dyn Group<'_>], load: Load<'_, '_>, fetched: Fetched) {
    if let Some(bytes) = fetched.bytes() {
        groups[load.slot.g].keep_local(client, &load.flight, load.slot.i, &load.slot.key, bytes);
    }
    land(load.flight, fetched);
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
async fn wait_lost(
    client: &Client,
    renewer: &Renewer,
    groups: &[&dyn Group<'_>],
    limit: &Semaphore,
    lost: Vec<Load<'_, '_>>,
) {
    join_all(lost.into_iter().map(|load| async move {
        let fetched = groups[load.slot.g]
            .wait_lost(client, renewer, limit, load.slot.i, &load.slot.key)
            .await;
        keep_and_land(client, groups, load, fetched);
    }))
    .await;
}

/// Keys another task of this process is loading: take its value or its
/// shared error, or (if it went away) load them as a single `get` would
/// (in bypass mode, from the source).
async fn follow(
    client: &Client,
    groups: &[&dyn Group<'_>],
    limit: &Semaphore,
    followers: Vec<(Slot<'_>, Follower)>,
    mode: Mode,
) {
    join_all(followers.into_iter().map(|(slot, follower)| async move {
        let group = groups[slot.g];
        // Served by another caller's read or fetch, as a single `get`
        // that follows a flight is.
        client.log(EventKind::Coalesced, group.spec(), &slot.key, None);
        let outcome = follower.outcome().await;
        // This batch did not read the key: a flight that missed is its
        // miss too (a hit is reported when the value is accepted).
        if matches!(outcome, Landed::Value { cached: false, .. } | Landed::Failed(_)) {
            client.log(EventKind::Miss, group.spec(), &slot.key, None);
        }
        match outcome {
            Landed::Value { bytes, decoded, cached }
                if group.accept(client, slot.i, &slot.key, bytes, decoded, cached) =>
            {
                return;
            }
            Landed::Failed(Some(error)) if group.fail_with(slot.i, error) => return,
            _ => {}
        }
        match mode {
            Mode::Cached => group.load(client, limit, slot.i, &slot.key).await,
            Mode::Bypass => drop(group.fetch(client, limit, &[(slot.i, &slot.key)]).await),
        }
    }))
    .await;
}
