//! Redis Cluster behaviour, against a real cluster started per test (3
//! masters, a replica each): configuration forms, order of multi-slot
//! reads, clear on every master, failover, passwords.

use std::collections::HashMap;
use std::time::Duration;

use cacheme::{Cache, Error};
use cacheme_test_support::child::unix_ms;
use cacheme_test_support::{CapturedLogs, RedisCluster, free_port};

/// Every key the node at `addr` holds (it answers for its own slots only).
fn keys_on(cluster: &RedisCluster, addr: &str) -> Vec<String> {
    let mut connection = cluster.node_connection(addr);
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut connection)
            .unwrap();
        keys.extend(page);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// How many keys starting with `prefix` each master holds.
fn per_master(cluster: &RedisCluster, prefix: &str) -> HashMap<String, usize> {
    cluster
        .masters()
        .into_iter()
        .map(|master| {
            let count = keys_on(cluster, &master)
                .iter()
                .filter(|key| key.starts_with(prefix))
                .count();
            (master, count)
        })
        .collect()
}

fn field_of(err: Error) -> String {
    match err {
        Error::Config { field: Some(field), .. } => field,
        other => panic!("not a config error naming a field: {other}"),
    }
}

#[tokio::test]
async fn url_and_beego_json_forms_reach_the_same_cluster_under_the_prefix() {
    let cluster = RedisCluster::start();
    let by_url = Cache::open(&format!("{}?prefix=app", cluster.url())).await.unwrap();
    let before = unix_ms();
    by_url.put("user:1", b"ann", Duration::from_millis(1500)).await.unwrap();
    let after = unix_ms();

    let addrs = cluster.addrs();
    for config in [
        cluster.config("app"),
        format!(
            r#"{{"key":"app","conn":"{}","dbNum":"0","password":""}}"#,
            addrs.join(",")
        ),
        format!(r#"{{"key":"app","conn":"{}"}}"#, addrs[..2].join(";")),
    ] {
        let by_json = Cache::new("redis-cluster", &config).await.unwrap();
        assert_eq!(
            by_json.get("user:1").await.unwrap().as_deref(),
            Some(&b"ann"[..]),
            "{config}"
        );
    }

    let holders: Vec<String> = cluster
        .masters()
        .into_iter()
        .filter(|master| keys_on(&cluster, master).contains(&"app:user:1".to_owned()))
        .collect();
    assert_eq!(holders.len(), 1, "one master holds app:user:1");
    // The expiry as an instant (same machine, same clock): set during the
    // put, 1.5 s on, however long the opens and scans above took. A TTL
    // rounded to whole seconds would land 500 ms off (a put slower than
    // that aside).
    let mut node = cluster.node_connection(&holders[0]);
    let expires: u64 = redis::cmd("PEXPIRETIME").arg("app:user:1").query(&mut node).unwrap();
    assert!(
        (before + 1500..=after + 1500).contains(&expires),
        "a 1.5 s TTL must reach Redis as 1500 ms: expires at {expires}, put within [{before}, {after}]"
    );
    assert_eq!(by_url.backend().provider(), "redis-cluster");
}

#[tokio::test]
async fn get_many_across_every_master_keeps_order_gaps_and_duplicates() {
    let cluster = RedisCluster::start();
    let cache = Cache::new("redis-cluster", &cluster.config("order")).await.unwrap();
    // Plain keys spread over many slots, and hash-tagged keys that share one.
    let mut keys: Vec<String> = (0..300).map(|i| format!("item:{i}")).collect();
    keys.extend((0..20).map(|i| format!("{{group}}:{i}")));
    for (i, key) in keys.iter().enumerate() {
        if i % 3 != 0 {
            cache.put_forever(key, format!("value-{i}")).await.unwrap();
        }
    }
    let spread = per_master(&cluster, "order:");
    assert_eq!(spread.len(), 3);
    assert!(
        spread.values().all(|&n| n > 0),
        "the keys must live on all three masters: {spread:?}"
    );

    // Ask back to front, each key twice in a row, plus keys never written.
    let mut asked: Vec<String> = Vec::new();
    for key in keys.iter().rev() {
        asked.push(key.clone());
        asked.push(key.clone());
    }
    asked.insert(7, "never:1".to_owned());
    asked.push("never:2".to_owned());
    let got = cache.get_multi(&asked).await.unwrap();
    assert_eq!(got.len(), asked.len());
    for (key, value) in asked.iter().zip(&got) {
        let expected = keys
            .iter()
            .position(|k| k == key)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("value-{i}").into_bytes());
        assert_eq!(value, &expected, "{key}");
    }
}

#[tokio::test]
async fn clear_removes_this_prefix_on_every_master_and_nothing_else() {
    let cluster = RedisCluster::start();
    let mine = Cache::new("redis-cluster", &cluster.config("mine")).await.unwrap();
    // `mine-x:` starts like `mine:` but is another cache; `other:` too.
    let lookalike = Cache::new("redis-cluster", &cluster.config("mine-x")).await.unwrap();
    let other = Cache::new("redis-cluster", &cluster.config("other")).await.unwrap();
    for i in 0..200 {
        mine.put_forever(&format!("k{i}"), b"v").await.unwrap();
        lookalike.put_forever(&format!("k{i}"), b"keep").await.unwrap();
        other.put_forever(&format!("k{i}"), b"keep").await.unwrap();
    }
    // Hash-tagged keys: their slot is picked by the tag, not the prefix.
    for i in 0..30 {
        mine.put_forever(&format!("{{tag{i}}}:a"), b"v").await.unwrap();
        mine.incr(&format!("{{tag{i}}}:n")).await.unwrap();
    }
    let before_mine = per_master(&cluster, "mine:");
    let before_foreign = [per_master(&cluster, "mine-x:"), per_master(&cluster, "other:")];
    for counts in before_foreign.iter().chain([&before_mine]) {
        assert!(counts.values().all(|&n| n > 0), "keys on every master: {counts:?}");
    }

    mine.clear().await.unwrap();

    assert!(
        per_master(&cluster, "mine:").values().all(|&n| n == 0),
        "no key of the cleared cache may remain on any master"
    );
    let after_foreign = [per_master(&cluster, "mine-x:"), per_master(&cluster, "other:")];
    assert_eq!(after_foreign, before_foreign, "other caches keep every key");
    assert_eq!(mine.get("{tag3}:a").await.unwrap(), None);
    assert_eq!(other.get("k7").await.unwrap().as_deref(), Some(&b"keep"[..]));
    mine.put_forever("after", b"v").await.unwrap();
    assert!(mine.exists("after").await.unwrap());
}

#[tokio::test]
async fn scan_keys_walks_every_master_and_memory_used_sums_them() {
    let cluster = RedisCluster::start();
    let mine = Cache::new("redis-cluster", &cluster.config("mine")).await.unwrap();
    let other = Cache::new("redis-cluster", &cluster.config("other")).await.unwrap();
    for i in 0..100 {
        mine.put_forever(&format!("k{i}"), b"v").await.unwrap();
        other.put_forever(&format!("k{i}"), b"v").await.unwrap();
    }
    assert!(
        per_master(&cluster, "mine:").values().all(|&n| n > 0),
        "keys on every master"
    );
    let mut seen = Vec::new();
    let visited = mine
        .backend()
        .scan_keys("*", &mut |key| seen.push(key.to_owned()))
        .await
        .unwrap();
    seen.sort();
    let mut expected: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    expected.sort();
    assert_eq!((visited, seen), (100, expected));
    assert_eq!(mine.backend().ttl("k1").await.unwrap(), Some(None));
    assert!(mine.backend().memory_used().await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cache_serves_every_slot_after_a_master_fails_over() {
    let mut cluster = RedisCluster::start();
    let cache = Cache::new("redis-cluster", &cluster.config("fo")).await.unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.put_forever(key, format!("before-{key}")).await.unwrap();
    }
    let masters_before = cluster.masters();
    let spread = per_master(&cluster, "fo:");
    assert!(spread.values().all(|&n| n > 0), "keys on every master: {spread:?}");
    cluster.wait_for_replication(Duration::from_secs(10));

    let victim = cluster.kill_a_master();
    // Bounded: the node timeout is 1 s; promotion takes a few seconds.
    tokio::task::block_in_place(|| cluster.wait_until_ok(Duration::from_secs(20)));
    let masters_after = cluster.masters();
    assert_eq!(masters_after.len(), 3, "{masters_after:?}");
    assert!(!masters_after.contains(&victim));
    let promoted: Vec<&String> = masters_after.iter().filter(|m| !masters_before.contains(m)).collect();
    assert_eq!(promoted.len(), 1, "one replica took over: {masters_after:?}");
    assert!(
        per_master(&cluster, "fo:")[promoted[0]] > 0,
        "the promoted replica serves some of the keys"
    );

    // The same Cache, never rebuilt: reads what was written before, then
    // writes and reads every key, on all three masters.
    for key in &keys {
        let got = cache.get(key).await.unwrap();
        assert_eq!(got, Some(format!("before-{key}").into_bytes()), "{key}");
    }
    for key in &keys {
        cache
            .put(key, format!("after-{key}"), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let got = cache.get_multi(&keys).await.unwrap();
    for (key, value) in keys.iter().zip(&got) {
        assert_eq!(value, &Some(format!("after-{key}").into_bytes()), "{key}");
    }
    for key in &keys {
        assert_eq!(cache.incr(&format!("n:{key}")).await.unwrap(), 1);
    }
    cache.clear().await.unwrap();
    assert!(per_master(&cluster, "fo:").values().all(|&n| n == 0));
}

#[tokio::test]
async fn config_errors_name_the_field_and_unreachable_seeds_are_connect_errors() {
    let err = Cache::new("redis-cluster", r#"{"conn":["127.0.0.1:1"],"dbNum":"1"}"#)
        .await
        .unwrap_err();
    assert_eq!(field_of(err), "dbNum");
    let err = Cache::new("redis-cluster", r#"{"key":"app"}"#).await.unwrap_err();
    assert_eq!(field_of(err), "conn");
    let err = Cache::open("redis-cluster://127.0.0.1:1,127.0.0.1:x")
        .await
        .unwrap_err();
    assert_eq!(field_of(err), "host");
    let err = Cache::open("redis-cluster://127.0.0.1:1,127.0.0.1:2/3")
        .await
        .unwrap_err();
    assert_eq!(field_of(err), "db");

    let (a, b) = (free_port(), free_port());
    let err = Cache::open(&format!("redis-cluster://127.0.0.1:{a},127.0.0.1:{b}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{a},127.0.0.1:{b}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_password_protected_cluster_and_no_password_in_debug_errors_or_logs() {
    const SECRET: &str = "s3cret-Pa55word";
    let logs = CapturedLogs::start();

    let cluster = RedisCluster::builder().replicas(0).password(SECRET).start();
    let mut shown = Vec::new();

    let by_json = Cache::new("redis-cluster", &cluster.config("p")).await.unwrap();
    by_json.put_forever("k", b"v").await.unwrap();
    shown.push(format!("{by_json:?}"));
    let url = cluster.url().replace("://", &format!("://:{SECRET}@"));
    let by_url = Cache::open(&format!("{url}?prefix=p")).await.unwrap();
    assert_eq!(by_url.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    shown.push(format!("{by_url:?}"));

    let no_password = Cache::open(&cluster.url()).await.unwrap_err();
    assert!(matches!(no_password, Error::Connect { .. }), "{no_password}");
    let wrong = Cache::open(&cluster.url().replace("://", &format!("://:{SECRET}x@")))
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Connect { .. }), "{wrong}");
    shown.push(format!("{wrong} {wrong:?}"));
    let bad = Cache::new(
        "redis-cluster",
        &format!(r#"{{"conn":["nope"],"password":"{SECRET}"}}"#),
    )
    .await
    .unwrap_err();
    shown.push(format!("{bad} {bad:?}"));

    logs.assert_secret_hidden(SECRET, &shown);
}
