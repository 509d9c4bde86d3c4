//! memcache-specific behaviour, against real memcached servers started per
//! test: configuration forms, key mapping, item size errors, namespace
//! generations, several servers, round trips and restarts.

use std::time::Duration;

use cacheme::{Cache, Error, MemcachedBackend, Op, ProviderConfig};
use cacheme_test_support::{CountingProxy, CpuLoad, MemcachedServer, free_port};

/// The value memcached holds under `key`, read with the raw protocol.
fn raw_get(server: &MemcachedServer, key: &str) -> Option<Vec<u8>> {
    let reply = server.command(format!("mg {key} v\r\nmn\r\n").as_bytes(), "MN\r\n");
    if reply.starts_with(b"EN\r\n") {
        return None;
    }
    let header_end = reply.windows(2).position(|w| w == b"\r\n").unwrap();
    let header = std::str::from_utf8(&reply[..header_end]).unwrap();
    let size: usize = header.split(' ').nth(1).unwrap().parse().unwrap();
    Some(reply[header_end + 2..header_end + 2 + size].to_vec())
}

/// A `stats` counter of the server.
fn stat(server: &MemcachedServer, name: &str) -> u64 {
    let reply = String::from_utf8(server.command(b"stats\r\n", "END\r\n")).unwrap();
    let needle = format!("STAT {name} ");
    reply
        .lines()
        .find_map(|line| line.strip_prefix(&needle))
        .unwrap_or_else(|| panic!("no stat {name}"))
        .trim()
        .parse()
        .unwrap()
}

async fn backend(json: &str) -> MemcachedBackend {
    MemcachedBackend::from_config(ProviderConfig::from_json("memcache", json).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn beego_json_and_url_forms_share_one_namespace() {
    let server = MemcachedServer::start();
    let by_json = Cache::new("memcache", &format!(r#"{{"conn":"{}"}}"#, server.addr()))
        .await
        .unwrap();
    by_json.put("user:1", b"ann", Duration::from_secs(60)).await.unwrap();

    let hostless = Cache::new("memcache", &format!(r#"{{"conn":":{}"}}"#, server.port()))
        .await
        .unwrap();
    let by_url = Cache::open(&server.url()).await.unwrap();
    assert_eq!(by_url.provider(), "memcache");
    for cache in [&hostless, &by_url] {
        assert_eq!(cache.get("user:1").await.unwrap().as_deref(), Some(&b"ann"[..]));
    }

    // Stored readable, under `cacheme:<generation>:`.
    let generation = String::from_utf8(raw_get(&server, "cacheme:generation").unwrap()).unwrap();
    let stored = raw_get(&server, &format!("cacheme:{generation}:user:1"));
    assert_eq!(stored.as_deref(), Some(&b"ann"[..]));

    let other_prefix = Cache::open(&format!("{}?prefix=app", server.url())).await.unwrap();
    assert_eq!(other_prefix.get("user:1").await.unwrap(), None);
}

#[tokio::test]
async fn keys_memcached_cannot_carry_are_hashed_not_rejected() {
    let server = MemcachedServer::start();
    let backend = backend(&format!(r#"{{"conn":"{}","key":"app"}}"#, server.addr())).await;
    let cache = Cache::from_backend(backend.clone());
    let long = "k".repeat(1000);
    for key in [
        "with space",
        "line\nbreak",
        "tab\there",
        "nul\0byte",
        "ключ",
        "#hash",
        long.as_str(),
    ] {
        cache.put_forever(key, key).await.unwrap();
        let wire = backend.memcached_key(key).await.unwrap();
        assert!(wire.starts_with("app:") && wire.contains(":#"), "{key:?} -> {wire}");
        assert!(
            wire.len() <= 250 && wire.bytes().all(|b| b.is_ascii_graphic()),
            "{wire}"
        );
        assert_eq!(raw_get(&server, &wire).as_deref(), Some(key.as_bytes()), "{key:?}");
        assert_eq!(wire, backend.memcached_key(key).await.unwrap(), "deterministic");
    }
    let readable = backend.memcached_key("user:42").await.unwrap();
    assert!(
        readable.starts_with("app:") && readable.ends_with(":user:42"),
        "{readable}"
    );
}

#[tokio::test]
async fn a_value_over_max_value_size_is_refused_before_it_is_sent() {
    let server = MemcachedServer::builder().item_size("1m").start();
    // maxValueSize defaults to memcached's default item size, 1 MiB.
    let cache = Cache::open(&server.url()).await.unwrap();
    let too_big = vec![7u8; 1536 * 1024];
    let stores_before = stat(&server, "cmd_set");
    for err in [
        cache.put("big", &too_big, Duration::from_secs(60)).await.unwrap_err(),
        cache.backend().set_if_absent("big", &too_big, None).await.unwrap_err(),
    ] {
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(
            matches!(err, Error::TooLarge { size: 1_572_864, limit: 1_048_576, key: Some(ref k), .. } if k == "big"),
            "{err:?}"
        );
    }
    assert_eq!(stat(&server, "cmd_set"), stores_before, "nothing was sent");
    // The connection stays usable and smaller values still fit.
    let fits = vec![7u8; 512 * 1024];
    cache.put("big", &fits, Duration::from_secs(60)).await.unwrap();
    assert_eq!(stat(&server, "cmd_set"), stores_before + 1, "a store is counted");
    assert_eq!(cache.get("big").await.unwrap().map(|v| v.len()), Some(fits.len()));
}

#[tokio::test]
async fn a_value_the_server_refuses_is_an_error_that_says_so() {
    // maxValueSize above the server's item size: the server refuses.
    let server = MemcachedServer::builder().item_size("1m").start();
    let cache = Cache::open(&format!("{}?maxValueSize=2m", server.url())).await.unwrap();
    let too_big = vec![7u8; 1536 * 1024];
    for err in [
        cache.put("big", &too_big, Duration::from_secs(60)).await.unwrap_err(),
        cache.backend().set_if_absent("big", &too_big, None).await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("too large for the server's item size") && text.contains("1572864 bytes"),
            "{text}"
        );
        assert!(
            matches!(err, Error::Backend { key: Some(ref k), .. } if k == "big"),
            "{err:?}"
        );
    }
    let fits = vec![7u8; 512 * 1024];
    cache.put("big", &fits, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("big").await.unwrap().map(|v| v.len()), Some(fits.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_calls_within_the_timeout_pool_wait_included() {
    let mut server = MemcachedServer::start();
    let timeout = Duration::from_millis(300);
    // A pool of 2: most of the 20 calls below wait for a connection.
    let cache = Cache::open(&format!("{}?timeout=300ms&poolSize=2", server.url()))
        .await
        .unwrap();
    cache.put("k", b"v", Duration::from_secs(60)).await.unwrap();

    server.freeze();
    let started = std::time::Instant::now();
    let calls = (0..20).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = cache.get("k").await;
            (outcome, started.elapsed())
        })
    });
    for call in futures_util::future::join_all(calls).await {
        let (outcome, took) = call.unwrap();
        let err = outcome.unwrap_err();
        assert!(err.to_string().contains("no reply within"), "{err}");
        assert!(took < timeout * 5, "a get on a frozen server took {took:?}");
    }
    assert!(started.elapsed() < timeout * 5, "{:?}", started.elapsed());
    server.thaw();

    // The same cache serves again (the timed-out connections were closed).
    cache.put("k", b"w", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"w"[..]));
}

#[tokio::test]
async fn clear_bumps_the_generation_and_spares_everyone_else() {
    let server = MemcachedServer::start();
    let stored = server.command(b"set other-app 0 0 4\r\nkeep\r\n", "\r\n");
    assert_eq!(stored, b"STORED\r\n");
    let mine = Cache::open(&format!("{}?prefix=mine", server.url())).await.unwrap();
    let theirs = Cache::open(&format!("{}?prefix=theirs", server.url())).await.unwrap();
    mine.put_forever("k", b"old").await.unwrap();
    theirs.put_forever("k", b"theirs").await.unwrap();
    let before: u64 = String::from_utf8(raw_get(&server, "mine:generation").unwrap())
        .unwrap()
        .parse()
        .unwrap();

    mine.clear().await.unwrap();

    assert_eq!(mine.get("k").await.unwrap(), None);
    assert_eq!(theirs.get("k").await.unwrap().as_deref(), Some(&b"theirs"[..]));
    assert_eq!(raw_get(&server, "other-app").as_deref(), Some(&b"keep"[..]));
    assert_eq!(stat(&server, "cmd_flush"), 0, "clear must never flush_all");
    let after = raw_get(&server, "mine:generation").unwrap();
    assert_eq!(String::from_utf8(after).unwrap(), (before + 1).to_string());
    // The old item lingers (unreachable) until memcached evicts it.
    assert_eq!(
        raw_get(&server, &format!("mine:{before}:k")).as_deref(),
        Some(&b"old"[..])
    );
    mine.put_forever("k", b"new").await.unwrap();
    assert_eq!(mine.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
}

#[tokio::test]
async fn other_processes_see_a_clear_within_the_generation_refresh() {
    let server = MemcachedServer::start();
    let json = |refresh: u64| format!(r#"{{"conn":"{}","generationRefreshMs":{refresh}}}"#, server.addr());
    let clearing = Cache::new("memcache", &json(60_000)).await.unwrap();
    let strict = Cache::new("memcache", &json(0)).await.unwrap();
    let relaxed = Cache::new("memcache", &json(200)).await.unwrap();
    clearing.put_forever("k", b"v").await.unwrap();
    assert!(strict.exists("k").await.unwrap() && relaxed.exists("k").await.unwrap());

    clearing.clear().await.unwrap();
    assert!(
        !strict.exists("k").await.unwrap(),
        "refresh 0 reads the generation every time"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !relaxed.exists("k").await.unwrap(),
        "seen once the cached generation is older than 200 ms"
    );
}

#[tokio::test]
async fn a_multi_get_is_one_request() {
    let _load = CpuLoad::start();
    let server = MemcachedServer::start();
    let proxy = CountingProxy::start(server.port());
    let config = format!(r#"{{"conn":"{}","generationRefreshMs":600000}}"#, proxy.addr());
    let cache = Cache::new("memcache", &config).await.unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for key in keys.iter().step_by(3) {
        cache.put_forever(key, key).await.unwrap();
    }
    let before = proxy.requests();
    let got = cache.get_multi(&keys).await.unwrap();
    assert_eq!(proxy.requests() - before, 1, "100 keys on one server: one request");
    for (i, value) in got.iter().enumerate() {
        assert_eq!(
            value.as_deref(),
            (i % 3 == 0).then(|| keys[i].as_bytes()),
            "position {i}"
        );
    }
}

#[tokio::test]
async fn several_servers_share_the_keys_by_consistent_hashing() {
    let servers = [
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let addrs: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let by_url = Cache::open(&format!("memcache://{}?prefix=multi", addrs.join(",")))
        .await
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        by_url.put_forever(key, key).await.unwrap();
    }
    for server in &servers {
        let items = stat(server, "curr_items");
        assert!(items > 30, "every server holds a share of the keys, got {items}");
    }

    // Beego's ';' list and a JSON array, same order: the same layout.
    let beego = Cache::new(
        "memcache",
        &format!(r#"{{"key":"multi","conn":"{}"}}"#, addrs.join(";")),
    )
    .await
    .unwrap();
    let array = serde_json::json!({"key": "multi", "conn": addrs, "generationRefreshMs": 0}).to_string();
    let array = Cache::new("memcache", &array).await.unwrap();
    let mut asked = keys.clone();
    asked.insert(5, "absent".to_owned());
    for cache in [&beego, &array] {
        let got = cache.get_multi(&asked).await.unwrap();
        for (key, value) in asked.iter().zip(&got) {
            let expected = (key != "absent").then_some(key.as_bytes());
            assert_eq!(value.as_deref(), expected, "{key}");
        }
    }
    beego.clear().await.unwrap();
    assert_eq!(array.get_multi(&keys).await.unwrap().iter().flatten().count(), 0);
}

#[tokio::test]
async fn the_same_client_serves_again_after_a_restart() {
    let mut server = MemcachedServer::start();
    let cache = Cache::new(
        "memcache",
        &format!(r#"{{"conn":"{}","generationRefreshMs":0}}"#, server.addr()),
    )
    .await
    .unwrap();
    cache.put_forever("k", b"v").await.unwrap();

    server.stop();
    let err = cache.get("k").await.unwrap_err();
    assert!(
        matches!(err, Error::Backend { op: Op::Get, .. }),
        "a dead server is an error, not a miss: {err}"
    );
    assert!(cache.put_forever("k", b"v").await.is_err());

    server.restart();
    assert_eq!(cache.get("k").await.unwrap(), None, "a restarted memcached is empty");
    cache.put_forever("k", b"again").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"again"[..]));

    // Pooled connections the server closed while nobody was calling are
    // noticed and replaced: the first call after a quiet restart succeeds.
    // (Several concurrent calls leave several connections in the pool.)
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.incr(if i % 2 == 0 { "a" } else { "b" }).await })
        })
        .collect();
    for call in burst {
        call.await.unwrap().unwrap();
    }
    server.restart();
    // At once: no reactor turn is needed to notice the closed sockets.
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert_eq!(cache.incr("a").await.unwrap(), 1);
}

#[tokio::test]
async fn expiry_is_kept_by_the_client_to_the_millisecond_and_by_the_server_in_seconds() {
    let server = MemcachedServer::start();
    let backend = backend(&format!(r#"{{"conn":"{}"}}"#, server.addr())).await;
    let cache = Cache::from_backend(backend.clone());
    let put_at = std::time::Instant::now();
    cache.put("short", b"v", Duration::from_millis(1500)).await.unwrap();
    cache.put("long", b"v", Duration::from_secs(40 * 86_400)).await.unwrap();
    let short = backend.memcached_key("short").await.unwrap();
    let long = backend.memcached_key("long").await.unwrap();
    let reply = server.command(
        format!("mg {short} f t\r\nmg {long} f t\r\nmn\r\n").as_bytes(),
        "MN\r\n",
    );
    let reply = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    let flags: u32 = lines[0]
        .split(' ')
        .find_map(|t| t.strip_prefix('f'))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(flags & (1 << 31), 0, "the deadline rides in the client flags: {reply}");
    // 1.5 s rounded up plus a second of margin: `T3`, read as 3 less the
    // server's clock ticks since (once a second: one within the first
    // second, one more per second after that).
    let short_ttl: u64 = lines[0]
        .split(' ')
        .find_map(|t| t.strip_prefix('t'))
        .unwrap()
        .parse()
        .unwrap();
    let ticks = 1 + put_at.elapsed().as_secs();
    assert!(
        (3u64.saturating_sub(ticks)..=3).contains(&short_ttl),
        "1.5 s + margin on the server, {ticks} ticks at most since: {reply}"
    );
    let long_ttl: i64 = lines[1]
        .split(' ')
        .find_map(|t| t.strip_prefix('t'))
        .unwrap()
        .parse()
        .unwrap();
    assert!((40 * 86_400 - 5..=40 * 86_400 + 1).contains(&long_ttl), "{reply}");

    // Past the deadline, the item is gone for every call even while the
    // server (one second behind, on purpose) still holds it. The server's
    // expiry is `T2` and its clock ticks once a second, so it holds the
    // item for over a second after the put; the steps below take
    // milliseconds. A machine stalled longer than that (seen by the clock)
    // loses the premise: it tries again with another key.
    let ttl = Duration::from_millis(10);
    let mut tries = 0;
    let gone = loop {
        let gone = format!("gone{tries}");
        let put_at = std::time::Instant::now();
        cache.put(&gone, b"v", ttl).await.unwrap();
        tokio::time::sleep(ttl * 2).await;
        let wire = backend.memcached_key(&gone).await.unwrap();
        if raw_get(&server, &wire).is_some() {
            break gone;
        }
        let since = put_at.elapsed();
        assert!(
            since >= Duration::from_secs(1) && tries < 3,
            "the server freed {gone:?} less than {since:?} after the put (try {tries})"
        );
        tries += 1;
    };
    assert_eq!(cache.get(&gone).await.unwrap(), None);
    assert!(!cache.exists(&gone).await.unwrap());
    assert!(
        !cache.delete(&gone).await.unwrap(),
        "deleting an expired key reports false"
    );
    assert_eq!(cache.incr(&gone).await.unwrap(), 1, "an expired counter restarts at 0");
}

#[tokio::test]
async fn counters_are_plain_decimal_text() {
    let server = MemcachedServer::start();
    let backend = backend(&format!(r#"{{"conn":"{}"}}"#, server.addr())).await;
    let cache = Cache::from_backend(backend.clone());
    assert_eq!(cache.incr_by("n", 41).await.unwrap(), 41);
    let wire = backend.memcached_key("n").await.unwrap();
    assert_eq!(raw_get(&server, &wire).as_deref(), Some(&b"41"[..]));
    // memcached's own incr works on them (while they are non-negative).
    assert_eq!(
        server.command(format!("incr {wire} 1\r\n").as_bytes(), "\r\n"),
        b"42\r\n"
    );
    assert_eq!(cache.incr("n").await.unwrap(), 43);
    assert_eq!(
        cache.decr_by("n", 50).await.unwrap(),
        -7,
        "signed, unlike memcached's decr"
    );
}

#[tokio::test]
async fn one_of_many_concurrent_set_if_absent_wins() {
    let server = MemcachedServer::start();
    let cache = Cache::open(&server.url()).await.unwrap();
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let backend = cache.backend().clone();
            tokio::spawn(async move {
                let token = format!("token-{i}");
                backend
                    .set_if_absent("lock", token.as_bytes(), Some(Duration::from_secs(30)))
                    .await
                    .unwrap()
                    .then_some(token)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        winners.extend(attempt.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let owner = winners[0].as_bytes();
    assert!(!cache.backend().delete_if_equals("lock", b"token-x").await.unwrap());
    assert!(cache.backend().delete_if_equals("lock", owner).await.unwrap());
}

#[tokio::test]
async fn bad_configs_and_unreachable_servers_are_named() {
    // Nothing listens there, and a bad config fails before connecting.
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = Cache::new("memcache", &format!(r#"{{"conn":"{nobody}","key":"a:b"}}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: Some(f), .. } if f == "key"),
        "{err}"
    );
    let err = Cache::new("memcache", &format!(r#"{{"conn":"{nobody}","pasword":"x"}}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: Some(f), .. } if f == "pasword"),
        "{err}"
    );
    let err = Cache::open(&format!("memcache://{nobody}?prefx=a")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: Some(f), .. } if f == "prefx"),
        "{err}"
    );

    let err = Cache::new("memcache", &format!(r#"{{"conn":"{nobody}"}}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Connect { address, .. } if *address == nobody),
        "{err}"
    );
}
