//! Batches on Redis, against real servers: `get_many`, `try_lock_many` and
//! `settle_many` cost one command per [`MAX_KEYS_PER_COMMAND`] keys on one
//! server (pipelined: one round trip) and one command per slot (and
//! chunk) of a cluster, since a script declares every key it touches; they
//! do what the single-key steps do, waiters included; and a cluster batch
//! stays right while slots move under it.
//!
//! Counts are per call once the batch scripts are loaded on the server
//! (the first call on a server or node sends `EVALSHA`, hears `NOSCRIPT`,
//! and sends the body with `EVAL`): the tests warm them up first, and the
//! one-server test counts the cold call too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cacheme::stampede::{Coordination, Coordinator, LockRequest, Notice, Settlement};
use cacheme::{Cache, MAX_KEYS_PER_COMMAND};
use cacheme_test_support::{Calls, CountingProxy, RedisCluster, RedisServer, SentCommands};
use redis::Value;

/// Keys per measured batch.
const N: usize = 1000;
const TTL: Duration = Duration::from_secs(60);

fn coordinator(cache: &Cache) -> Arc<dyn Coordinator> {
    match cache.backend().coordination() {
        Coordination::Custom(coordinator) => coordinator,
        other => panic!("redis has a coordinator of its own, not {other:?}"),
    }
}

fn named(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

fn refs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

/// Stores `value-{i}` at two keys of three (the third stays missing).
async fn fill_two_of_three(cache: &Cache, keys: &[String]) {
    for (i, key) in keys.iter().enumerate() {
        if !i.is_multiple_of(3) {
            cache.put(key, format!("value-{i}"), TTL).await.unwrap();
        }
    }
}

/// Removes the values [`fill_two_of_three`] stored: a lock is never taken
/// over a value that is there, and the lock tests want every lock free.
async fn forget_values(cache: &Cache, keys: &[String]) {
    for key in keys {
        cache.delete(key).await.unwrap();
    }
}

/// What [`fill_two_of_three`] left at `keys[i]`.
fn expected(i: usize) -> Option<Vec<u8>> {
    (!i.is_multiple_of(3)).then(|| format!("value-{i}").into_bytes())
}

/// What the batch of [`fills_and_abandons`] fetched for `keys[i]`.
fn fetched(i: usize) -> Vec<u8> {
    format!("fetched-{i}").into_bytes()
}

/// A fill of `values[i]` for even `i`, an abandon for odd, all of the
/// locks taken with the token `mine`.
fn fills_and_abandons<'a>(keys: &'a [String], values: &'a [Vec<u8>]) -> Vec<Settlement<'a>> {
    keys.iter()
        .zip(values)
        .enumerate()
        .map(|(i, (key, value))| {
            if i.is_multiple_of(2) {
                Settlement::Fill {
                    key,
                    token: "mine",
                    value,
                    ttl: TTL,
                }
            } else {
                Settlement::Abandon { key, token: "mine" }
            }
        })
        .collect()
}

/// After [`fills_and_abandons`] where the lock of `keys[0]` was someone
/// else's: what it stored, and what the keys hold now.
async fn check_settled(cache: &Cache, keys: &[String], stored: Vec<bool>) {
    assert!(!stored[0], "the lock of keys[0] is not ours: no store");
    for (i, &stored) in stored.iter().enumerate().skip(1) {
        assert_eq!(stored, i.is_multiple_of(2), "{}", keys[i]);
    }
    let now = cache.backend().get_many(&refs(keys)).await.unwrap();
    for (i, value) in now.iter().enumerate() {
        // The values of fill_two_of_three were forgotten before locking.
        let want = (i > 0 && i.is_multiple_of(2)).then(|| fetched(i));
        assert_eq!(value, &want, "{}", keys[i]);
    }
}

/// `work`'s output and the requests it sent through `proxy`.
async fn counted<T>(proxy: &CountingProxy, work: impl Future<Output = T>) -> (T, u64) {
    let before = proxy.requests();
    let out = work.await;
    (out, proxy.requests() - before)
}

/// The commands a batch of `N` keys takes on one server.
const CHUNKS: u64 = N.div_ceil(MAX_KEYS_PER_COMMAND) as u64;

/// Lock requests for `keys`, all with `token`.
fn lock_requests<'a>(keys: &'a [String], token: &'a str) -> Vec<LockRequest<'a>> {
    keys.iter().map(|key| LockRequest { key, token, ttl: TTL }).collect()
}

#[tokio::test]
async fn one_server_batches_cost_one_command_per_chunk_once_the_scripts_are_loaded() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let cache = Cache::open(&format!("redis://{}/?prefix=batch", proxy.addr()))
        .await
        .unwrap();
    let backend = cache.backend();
    let coordinator = coordinator(&cache);
    let keys = named("item", N);
    fill_two_of_three(&cache, &keys).await;

    let (nothing, trips) = counted(&proxy, async {
        (
            backend.get_many(&[]).await.unwrap(),
            coordinator.try_lock_many(&[]).await.unwrap(),
            coordinator.settle_many(&[]).await.unwrap(),
        )
    })
    .await;
    assert_eq!(nothing, (vec![], vec![], vec![]));
    assert_eq!(trips, 0, "an empty batch sends nothing");

    let (values, trips) = counted(&proxy, backend.get_many(&refs(&keys))).await;
    assert_eq!(trips, CHUNKS, "get_many of {N} keys: one MGET per chunk");
    let values = values.unwrap();
    assert_eq!(values.len(), N);
    for (i, value) in values.iter().enumerate() {
        assert_eq!(value, &expected(i), "{}", keys[i]);
    }

    forget_values(&cache, &keys).await;
    // Cold: EVALSHA, NOSCRIPT, EVAL. The lock taken here is someone
    // else's in the batch below.
    let other = lock_requests(&keys[..1], "other");
    let (taken, trips) = counted(&proxy, coordinator.try_lock_many(&other)).await;
    assert_eq!(taken.unwrap(), [true]);
    assert_eq!(trips, 2, "the first lock batch loads its script with EVAL");

    let requests = lock_requests(&keys, "mine");
    let (taken, trips) = counted(&proxy, coordinator.try_lock_many(&requests)).await;
    assert_eq!(trips, CHUNKS, "try_lock_many of {N} keys");
    let taken = taken.unwrap();
    assert!(!taken[0], "held by another token");
    assert!(taken[1..].iter().all(|&t| t), "every free lock is taken");

    let warm = [Settlement::Abandon {
        key: "not-locked",
        token: "nobody",
    }];
    let (stored, trips) = counted(&proxy, coordinator.settle_many(&warm)).await;
    assert_eq!(
        (stored.unwrap(), trips),
        (vec![false], 2),
        "cold settle_many loads its script"
    );

    let values: Vec<Vec<u8>> = (0..N).map(fetched).collect();
    let settlements = fills_and_abandons(&keys, &values);
    let (stored, trips) = counted(&proxy, coordinator.settle_many(&settlements)).await;
    assert_eq!(trips, CHUNKS, "settle_many of {N} settlements");
    check_settled(&cache, &keys, stored.unwrap()).await;
}

/// Locks and settles in batches do what `try_lock`, `fill` and `abandon`
/// do key by key, and every watcher hears its key's notice. On a cluster,
/// `sent` checks that the settlements went out as one script per slot
/// (so the notices left from inside them). Returns the full (prefixed)
/// value keys used, for placement checks.
async fn batches_keep_the_single_key_semantics(
    cache: &Cache,
    prefix: &str,
    sent: Option<(&mut SentCommands, &RedisCluster)>,
) -> Vec<String> {
    let coordinator = coordinator(cache);
    let roles = ["fill", "abandon", "stale-fill", "stale-abandon"];
    let keys: Vec<String> = (0..24).map(|i| format!("sem:{}:{i}", roles[i % 4])).collect();
    let role = |i: usize| roles[i % 4];
    for (i, key) in keys.iter().enumerate() {
        if role(i).starts_with("stale") {
            assert!(coordinator.try_lock(key, "other", TTL).await.unwrap());
        }
    }

    let taken = coordinator.try_lock_many(&lock_requests(&keys, "mine")).await.unwrap();
    for (i, &taken) in taken.iter().enumerate() {
        assert_eq!(taken, !role(i).starts_with("stale"), "{}", keys[i]);
    }
    let late = coordinator.try_lock_many(&lock_requests(&keys, "late")).await.unwrap();
    assert!(late.iter().all(|&t| !t), "every lock is held now: {late:?}");
    let twice = ["sem:twice".to_owned(), "sem:twice".to_owned()];
    let taken = coordinator.try_lock_many(&lock_requests(&twice, "t")).await.unwrap();
    assert_eq!(taken, [true, false], "a key asked twice in one batch is taken once");

    let mut watches = Vec::new();
    for key in &keys {
        watches.push(coordinator.watch(key).await.unwrap());
    }
    let settlements: Vec<Settlement<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| match role(i) {
            "fill" | "stale-fill" => Settlement::Fill {
                key,
                token: "mine",
                value: key.as_bytes(),
                ttl: TTL,
            },
            _ => Settlement::Abandon { key, token: "mine" },
        })
        .collect();
    let stored = match sent {
        None => coordinator.settle_many(&settlements).await.unwrap(),
        Some((sent, cluster)) => {
            let (stored, ran) = sent.of(coordinator.settle_many(&settlements)).await;
            // The script is new to the masters: EVALSHA, NOSCRIPT, EVAL,
            // for each slot's call.
            let full: Vec<String> = keys.iter().map(|key| format!("{prefix}:{key}")).collect();
            let cold: Calls = one_evalsha_per_slot(&placement(cluster, &full))
                .into_iter()
                .map(|(node, calls)| {
                    let n = calls["evalsha"];
                    (node, [("eval".to_owned(), n), ("evalsha".to_owned(), n)].into())
                })
                .collect();
            assert_eq!(ran, cold, "one script per slot");
            stored.unwrap()
        }
    };
    for (i, &stored) in stored.iter().enumerate() {
        assert_eq!(stored, role(i) == "fill", "{}", keys[i]);
    }

    for (i, watch) in watches.iter_mut().enumerate() {
        let want = if role(i) == "abandon" {
            Notice::Failed
        } else {
            Notice::Filled
        };
        assert_eq!(watch.wait(Duration::from_secs(5)).await, want, "{}", keys[i]);
    }

    let values = cache.backend().get_many(&refs(&keys)).await.unwrap();
    for (i, value) in values.iter().enumerate() {
        let want = (role(i) == "fill").then(|| keys[i].as_bytes().to_vec());
        assert_eq!(value, &want, "only fills with the lock land: {}", keys[i]);
    }
    let ttl = cache.backend().ttl(&keys[0]).await.unwrap().flatten().unwrap();
    assert!(
        ttl > TTL - Duration::from_secs(10) && ttl <= TTL,
        "a fill keeps its TTL: {ttl:?}"
    );

    // Fills and abandons of our own locks released them; the others'
    // locks are still theirs; and a lock is not taken over a value that
    // is there (the fills'): only the abandoned keys can be locked.
    let after = coordinator.try_lock_many(&lock_requests(&keys, "after")).await.unwrap();
    for (i, &taken) in after.iter().enumerate() {
        assert_eq!(taken, role(i) == "abandon", "{}", keys[i]);
    }
    keys.iter().map(|key| format!("{prefix}:{key}")).collect()
}

#[tokio::test]
async fn one_server_lock_and_settle_batches_keep_the_single_key_semantics() {
    let server = RedisServer::start();
    let cache = Cache::open(&format!("{}?prefix=sem", server.url())).await.unwrap();
    batches_keep_the_single_key_semantics(&cache, "sem", None).await;
}

/// The master serving each key and the key's slot.
fn placement(cluster: &RedisCluster, keys: &[String]) -> Vec<(String, u16)> {
    let mut node = cluster.node_connection(&cluster.masters()[0]);
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key);
    }
    let slots: Vec<u16> = pipe.query(&mut node).unwrap();
    let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut node).unwrap();
    let ranges: Vec<(u16, u16, String)> = ranges
        .into_iter()
        .map(|range| {
            let mut range = range.into_iter();
            let start = redis::from_redis_value(range.next().unwrap()).unwrap();
            let end = redis::from_redis_value(range.next().unwrap()).unwrap();
            let master: Vec<Value> = redis::from_redis_value(range.next().unwrap()).unwrap();
            let mut master = master.into_iter();
            let host: String = redis::from_redis_value(master.next().unwrap()).unwrap();
            let port: u16 = redis::from_redis_value(master.next().unwrap()).unwrap();
            (start, end, format!("{host}:{port}"))
        })
        .collect();
    slots
        .into_iter()
        .map(|slot| {
            let (_, _, owner) = ranges
                .iter()
                .find(|(start, end, _)| (*start..=*end).contains(&slot))
                .unwrap_or_else(|| panic!("slot {slot} is served"));
            (owner.clone(), slot)
        })
        .collect()
}

/// One `EVALSHA` per slot of `placed` (fewer than
/// [`MAX_KEYS_PER_COMMAND`] keys each), on the slot's master, and nothing
/// else.
fn one_evalsha_per_slot(placed: &[(String, u16)]) -> Calls {
    let mut slots: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (node, slot) in placed {
        slots.entry(node.clone()).or_default().insert(*slot);
    }
    slots
        .into_iter()
        .map(|(node, slots)| (node, [("evalsha".to_owned(), slots.len() as u64)].into()))
        .collect()
}

fn total(calls: &Calls, command: &str) -> u64 {
    calls.values().filter_map(|node| node.get(command)).sum()
}

#[tokio::test]
async fn cluster_batches_cost_one_command_per_slot() {
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let cache = Cache::new("redis-cluster", &cluster.config("batch")).await.unwrap();
    let backend = cache.backend();
    let coordinator = coordinator(&cache);
    let keys = named("item", N);
    fill_two_of_three(&cache, &keys).await;
    let full: Vec<String> = keys.iter().map(|key| format!("batch:{key}")).collect();
    let placed = placement(&cluster, &full);
    let nodes: BTreeSet<&String> = placed.iter().map(|(node, _)| node).collect();
    let slots: BTreeSet<u16> = placed.iter().map(|&(_, slot)| slot).collect();
    assert_eq!(nodes.len(), 3, "the keys live on every master");
    assert!(slots.len() > 900, "the keys spread over many slots: {}", slots.len());

    let mut stats = SentCommands::new(&cluster);
    // Warm-up: reads the slot map, loads the script on every master.
    let (_, cold) = stats.of(backend.get_many(&refs(&keys))).await;
    assert_eq!(total(&cold, "cluster"), 1, "the slot map is read once: {cold:?}");

    let (values, ran) = stats.of(backend.get_many(&refs(&keys))).await;
    assert_eq!(ran, one_evalsha_per_slot(&placed), "get_many of {N} keys");
    for (i, value) in values.unwrap().iter().enumerate() {
        assert_eq!(value, &expected(i), "{}", keys[i]);
    }
    // Back to front, with keys that never existed, one twice.
    let mut asked = keys.clone();
    asked.reverse();
    asked.insert(3, "never:1".to_owned());
    asked.push("never:2".to_owned());
    asked.push("never:2".to_owned());
    let got = backend.get_many(&refs(&asked)).await.unwrap();
    assert_eq!(got.len(), asked.len());
    for (key, value) in asked.iter().zip(&got) {
        let want = keys.iter().position(|k| k == key).and_then(expected);
        assert_eq!(value, &want, "{key}");
    }

    // A key that holds no string reads as missing, as with MGET.
    let (owner, _) = placement(&cluster, &["batch:hash".to_owned()]).remove(0);
    let _: () = redis::cmd("HSET")
        .arg("batch:hash")
        .arg("field")
        .arg("value")
        .query(&mut cluster.node_connection(&owner))
        .unwrap();
    let got = backend.get_many(&["hash", &keys[1]]).await.unwrap();
    assert_eq!(got, [None, expected(1)]);

    forget_values(&cache, &keys).await;
    // Warm-up of the lock and settle scripts on every master, on keys of
    // their own.
    let warm = named("warm", N);
    let (taken, _) = stats.of(coordinator.try_lock_many(&lock_requests(&warm, "warm"))).await;
    assert!(taken.unwrap().iter().all(|&t| t));
    let abandons: Vec<Settlement<'_>> = warm
        .iter()
        .map(|key| Settlement::Abandon { key, token: "warm" })
        .collect();
    stats.of(coordinator.settle_many(&abandons)).await.0.unwrap();

    assert!(coordinator.try_lock(&keys[0], "other", TTL).await.unwrap());
    let (taken, ran) = stats.of(coordinator.try_lock_many(&lock_requests(&keys, "mine"))).await;
    assert_eq!(ran, one_evalsha_per_slot(&placed), "try_lock_many of {N} keys");
    let taken = taken.unwrap();
    assert!(!taken[0], "held by another token");
    assert!(taken[1..].iter().all(|&t| t), "every free lock is taken");

    let values: Vec<Vec<u8>> = (0..N).map(fetched).collect();
    let settlements = fills_and_abandons(&keys, &values);
    let (stored, ran) = stats.of(coordinator.settle_many(&settlements)).await;
    assert_eq!(ran, one_evalsha_per_slot(&placed), "settle_many of {N} settlements");
    check_settled(&cache, &keys, stored.unwrap()).await;
}

#[tokio::test]
async fn cluster_lock_and_settle_batches_keep_the_single_key_semantics() {
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let cache = Cache::new("redis-cluster", &cluster.config("sem")).await.unwrap();
    let mut sent = SentCommands::new(&cluster);
    let full = batches_keep_the_single_key_semantics(&cache, "sem", Some((&mut sent, &cluster))).await;
    // Every master had keys of several slots: each slot's script notified
    // on its own shard channels.
    let mut slots_per_master: HashMap<String, BTreeSet<u16>> = HashMap::new();
    for (master, slot) in placement(&cluster, &full) {
        slots_per_master.entry(master).or_default().insert(slot);
    }
    assert_eq!(slots_per_master.len(), 3, "{slots_per_master:?}");
    assert!(
        slots_per_master.values().all(|slots| slots.len() >= 2),
        "{slots_per_master:?}"
    );
}

/// `CLUSTER MYID` of the node at `addr`.
fn node_id(cluster: &RedisCluster, addr: &str) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut cluster.node_connection(addr))
        .unwrap()
}

/// Starts moving `slot` from `from` to `to` (`IMPORTING` / `MIGRATING`).
fn begin_migration(cluster: &RedisCluster, slot: u16, from: &str, to: &str) {
    let (from_id, to_id) = (node_id(cluster, from), node_id(cluster, to));
    let mut target = cluster.node_connection(to);
    let mut source = cluster.node_connection(from);
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(from_id)
        .query(&mut target)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(to_id)
        .query(&mut source)
        .unwrap();
}

/// Moves `keys` (full names, all of one migrating slot) from `from` to
/// `to` with `MIGRATE`.
fn move_keys(cluster: &RedisCluster, from: &str, to: &str, keys: &[String]) {
    let (host, port) = to.rsplit_once(':').unwrap();
    let _: () = redis::cmd("MIGRATE")
        .arg(host)
        .arg(port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys)
        .query(&mut cluster.node_connection(from))
        .unwrap();
}

/// Ends a migration: every master hears that `to` serves `slot`, the new
/// owner first.
fn end_migration(cluster: &RedisCluster, slot: u16, to: &str) {
    let to_id = node_id(cluster, to);
    let mut masters = cluster.masters();
    masters.sort_by_key(|addr| addr != to);
    for addr in masters {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .query(&mut cluster.node_connection(&addr))
            .unwrap();
    }
}

/// Another master than `addr`.
fn other_master(cluster: &RedisCluster, addr: &str) -> String {
    cluster.masters().into_iter().find(|m| m != addr).unwrap()
}

#[tokio::test]
async fn cluster_batches_stay_right_while_slots_move() {
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let cache = Cache::new("redis-cluster", &cluster.config("move")).await.unwrap();
    let backend = cache.backend();
    let coordinator = coordinator(&cache);
    // Keys spread over the masters, and two hash tags of a slot each.
    let mut keys = named("item", 200);
    keys.extend(named("{hot}", 30));
    keys.extend(named("{warm}", 30));
    fill_two_of_three(&cache, &keys).await;
    let full = |key: &String| format!("move:{key}");
    let stored_with = |tag: &str| -> Vec<String> {
        keys.iter()
            .enumerate()
            .filter(|(i, key)| key.starts_with(tag) && expected(*i).is_some())
            .map(|(_, key)| full(key))
            .collect()
    };
    let check = |got: Vec<Option<Vec<u8>>>| {
        assert_eq!(got.len(), keys.len());
        for (i, value) in got.iter().enumerate() {
            assert_eq!(value, &expected(i), "{}", keys[i]);
        }
    };
    let mut sent = SentCommands::new(&cluster);
    check(backend.get_many(&refs(&keys)).await.unwrap());
    let slots = placement(&cluster, &keys.iter().map(full).collect::<Vec<_>>())
        .into_iter()
        .map(|(_, slot)| slot)
        .collect::<BTreeSet<u16>>()
        .len() as u64;

    // 1. After the map was read, {hot}'s slot moves to another master:
    // the old owner answers its call with MOVED (the keys are declared),
    // which redis-rs follows, refreshing its own map; the answers stay
    // right and no entry takes the key-by-key path.
    let (hot_owner, hot_slot) = placement(&cluster, &[full(&keys[200])]).remove(0);
    let hot_target = other_master(&cluster, &hot_owner);
    begin_migration(&cluster, hot_slot, &hot_owner, &hot_target);
    move_keys(&cluster, &hot_owner, &hot_target, &stored_with("{hot}"));
    end_migration(&cluster, hot_slot, &hot_target);
    let (got, ran) = sent.of(backend.get_many(&refs(&keys))).await;
    check(got.unwrap());
    assert_eq!(total(&ran, "get"), 0, "no key-by-key path: {ran:?}");
    assert!(total(&ran, "evalsha") > slots, "{{hot}}'s call went out again: {ran:?}");
    let (got, ran) = sent.of(backend.get_many(&refs(&keys))).await;
    check(got.unwrap());
    let placed = placement(&cluster, &keys.iter().map(full).collect::<Vec<_>>());
    assert_eq!(ran, one_evalsha_per_slot(&placed), "the new map is kept");

    // 2. {warm}'s slot is half migrated: its owner refuses the keys it no
    // longer has even with a fresh map, and that node's entries take the
    // key-by-key path, which redis-rs redirects (ASK).
    let (warm_owner, warm_slot) = placement(&cluster, &[full(&keys[230])]).remove(0);
    let warm_target = other_master(&cluster, &warm_owner);
    let warm_keys = stored_with("{warm}");
    let (moved, kept) = warm_keys.split_at(warm_keys.len() / 2);
    begin_migration(&cluster, warm_slot, &warm_owner, &warm_target);
    move_keys(&cluster, &warm_owner, &warm_target, moved);
    let (got, ran) = sent.of(backend.get_many(&refs(&keys))).await;
    check(got.unwrap());
    assert!(total(&ran, "get") > 0, "the key-by-key path was taken: {ran:?}");

    // Locks mid-migration: each is taken exactly once, wherever its
    // slot's keys are. (Keys of the same slots without values: a lock is
    // never taken over a value that is there.)
    let keys: Vec<String> = keys.iter().map(|key| format!("{key}:cold")).collect();
    let taken = coordinator.try_lock_many(&lock_requests(&keys, "mine")).await.unwrap();
    assert!(taken.iter().all(|&t| t), "{taken:?}");
    let late = coordinator.try_lock_many(&lock_requests(&keys, "late")).await.unwrap();
    assert!(late.iter().all(|&t| !t), "{late:?}");

    // 3. The migration ends; the settles find a stale map again.
    move_keys(&cluster, &warm_owner, &warm_target, kept);
    end_migration(&cluster, warm_slot, &warm_target);
    let values: Vec<String> = (0..keys.len()).map(|i| format!("fetched-{i}")).collect();
    let fills: Vec<Settlement<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| Settlement::Fill {
            key,
            token: "mine",
            value: value.as_bytes(),
            ttl: TTL,
        })
        .collect();
    let (stored, ran) = sent.of(coordinator.settle_many(&fills)).await;
    assert!(stored.unwrap().iter().all(|&s| s), "every fill held its lock");
    // The MOVED answers make redis-rs refresh its own map too, and re-send
    // the node's pipeline: no key-by-key path, and every fill counted once.
    assert_eq!(total(&ran, "set"), 0, "no key-by-key path: {ran:?}");
    let got = backend.get_many(&refs(&keys)).await.unwrap();
    for (i, value) in got.iter().enumerate() {
        assert_eq!(value.as_deref(), Some(values[i].as_bytes()), "{}", keys[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_batches_follow_a_failover() {
    let mut cluster = RedisCluster::start();
    let cache = Cache::new("redis-cluster", &cluster.config("fo")).await.unwrap();
    let backend = cache.backend();
    let coordinator = coordinator(&cache);
    let keys = named("item", 300);
    fill_two_of_three(&cache, &keys).await;
    // The slot map is read now, with the master about to die in it.
    let got = backend.get_many(&refs(&keys)).await.unwrap();
    assert_eq!(got, (0..keys.len()).map(expected).collect::<Vec<_>>());
    cluster.wait_for_replication(Duration::from_secs(10));

    let victim = cluster.kill_a_master();
    tokio::task::block_in_place(|| cluster.wait_until_ok(Duration::from_secs(20)));
    assert!(!cluster.masters().contains(&victim));

    // The same cache: its map names a dead node until a batch finds out.
    let got = backend.get_many(&refs(&keys)).await.unwrap();
    assert_eq!(got, (0..keys.len()).map(expected).collect::<Vec<_>>());
    forget_values(&cache, &keys).await;
    assert!(coordinator.try_lock(&keys[0], "other", TTL).await.unwrap());
    let taken = coordinator.try_lock_many(&lock_requests(&keys, "mine")).await.unwrap();
    assert!(!taken[0] && taken[1..].iter().all(|&t| t), "{taken:?}");
    let values: Vec<Vec<u8>> = (0..keys.len()).map(fetched).collect();
    let stored = coordinator
        .settle_many(&fills_and_abandons(&keys, &values))
        .await
        .unwrap();
    check_settled(&cache, &keys, stored).await;
}

// ---------------------------------------------------------------------------
// A get_m of 100,000 cold keys: bounded commands, bounded fetches.

/// Keys of the big `get_m`.
const BIG: u64 = 100_000;

/// A context whose fetcher counts the fetches in flight and the most seen.
struct Big {
    client: cacheme::Client,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl cacheme::Context for Big {
    fn cacheme(&self) -> &cacheme::Client {
        &self.client
    }
}

#[cacheme::cache_store(key = "big:<id>", ttl = "5m")]
async fn big_value(ctx: &Big, id: u64) -> Result<u64, String> {
    use std::sync::atomic::Ordering;
    let now = ctx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    ctx.most.fetch_max(now, Ordering::SeqCst);
    // Let the others run while in flight, so the fetches overlap as much
    // as they are allowed to.
    tokio::task::yield_now().await;
    ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(id * 2)
}

/// Per client command of `node`'s slow log (threshold 0): its name and
/// how many keys it carried (`EVAL`/`EVALSHA`: its declared keys; `MGET`:
/// its arguments).
fn logged_commands(node: &mut redis::Connection) -> Vec<(String, u64)> {
    let log: Vec<Vec<Value>> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query(node).unwrap();
    log.into_iter()
        .filter_map(|entry| {
            let args: Vec<Vec<u8>> = redis::from_redis_value(entry[3].clone()).unwrap();
            let client: String = redis::from_redis_value(entry[4].clone()).unwrap();
            let name = String::from_utf8_lossy(&args[0]).to_lowercase();
            if client == "?:0" {
                return None;
            }
            // The slow log keeps 31 arguments and "... (N more arguments)".
            let more = String::from_utf8_lossy(args.last().unwrap())
                .strip_prefix("... (")
                .and_then(|rest| rest.strip_suffix(" more arguments)"))
                .map_or(0, |n| n.parse::<u64>().unwrap() - 1);
            let count = args.len() as u64 + more;
            let keys = match name.as_str() {
                "eval" | "evalsha" => String::from_utf8_lossy(&args[2]).parse().unwrap(),
                "mget" => count - 1,
                _ => 0,
            };
            Some((name, keys))
        })
        .collect()
}

fn slow_log_everything(node: &mut redis::Connection) {
    for (name, value) in [("slowlog-log-slower-than", "0"), ("slowlog-max-len", "1000000")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(node)
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(node).unwrap();
}

/// Runs the big `get_m` on `cache` and checks the commands `nodes` logged
/// and the fetches in flight.
async fn big_get_m_is_bounded(cache: Cache, nodes: &mut [redis::Connection]) {
    for node in nodes.iter_mut() {
        slow_log_everything(node);
    }
    let app = Big {
        client: cacheme::Client::builder()
            .cache(cache)
            .fetch_concurrency(16)
            .build()
            .unwrap(),
        in_flight: Default::default(),
        most: Default::default(),
    };
    let mut m = BigValueStore::get_m(&app);
    for id in 0..BIG {
        m.push(id);
    }
    let got = m.run().await.into_all().unwrap();
    assert_eq!(got.len(), BIG as usize);
    assert_eq!(got.get(&(BIG - 1)), Some(&((BIG - 1) * 2)));
    let most = app.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=16).contains(&most), "fetches in flight at most: {most}");
    // The fills run off the caller's path: count them once they landed.
    app.client.flush().await;

    let logged: Vec<(String, u64)> = nodes.iter_mut().flat_map(logged_commands).collect();
    let mut keys_by_command: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, keys) in &logged {
        let (count, most) = keys_by_command.entry(name.clone()).or_default();
        *count += 1;
        *most = (*most).max(*keys);
    }
    // Reads carry one key per entry, locks and fills two (value and lock).
    let per_command = MAX_KEYS_PER_COMMAND as u64;
    for (name, (_, most)) in &keys_by_command {
        assert!(
            *most <= 2 * per_command,
            "{name} carried {most} keys: {keys_by_command:?}"
        );
    }
    let batch_commands: u64 = keys_by_command
        .iter()
        .filter(|(name, _)| ["mget", "eval", "evalsha"].contains(&name.as_str()))
        .map(|(_, (count, _))| count)
        .sum();
    assert!(
        batch_commands >= 3 * BIG / per_command,
        "read, lock and fill in chunks: {keys_by_command:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_m_of_100000_cold_keys_is_chunked_and_fetches_16_at_a_time_on_redis() {
    let server = RedisServer::start();
    let cache = Cache::open(&format!("{}?prefix=big", server.url())).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    big_get_m_is_bounded(cache, &mut [client.get_connection().unwrap()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_m_of_100000_cold_keys_is_chunked_and_fetches_16_at_a_time_on_a_cluster() {
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let cache = Cache::new("redis-cluster", &cluster.config("big")).await.unwrap();
    let mut nodes: Vec<redis::Connection> = cluster
        .masters()
        .iter()
        .map(|addr| cluster.node_connection(addr))
        .collect();
    big_get_m_is_bounded(cache, &mut nodes).await;
}

/// The README states the Redis version the scripts need (the `#!lua`
/// shebang and `SPUBLISH` came with 7.0), and the servers the suite runs
/// the scripts on are at least that.
#[tokio::test]
async fn the_minimum_redis_version_is_stated_and_met() {
    let readme = include_str!("../README.md");
    assert!(readme.contains("need Redis 7.0 or later"), "the README states it");
    let server = RedisServer::start();
    let mut node = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut node).unwrap();
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))
        .expect("INFO server names the version");
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 7, "the scripts need Redis 7.0, the suite runs {version}");
    // A shebang script runs there (an older server refuses the shebang).
    let ran: i64 = redis::cmd("EVAL")
        .arg("#!lua\nreturn #KEYS")
        .arg(1)
        .arg("k")
        .query(&mut node)
        .unwrap();
    assert_eq!(ran, 1);
}
