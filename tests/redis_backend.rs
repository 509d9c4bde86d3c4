//! Redis-specific behaviour, against a real redis-server started per test:
//! configuration forms, SELECT, ACL, clear scoping, error reporting,
//! password redaction and reconnection.

use std::time::{Duration, Instant};

use cacheme::{Cache, Error, Op};
use cacheme_test_support::child::unix_ms;
use cacheme_test_support::{CapturedLogs, RedisServer, StallingProxy, free_port};
use redis::AsyncCommands;

/// A raw redis-rs connection to inspect what cacheme wrote.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `cmdstat_<name>` calls from `INFO commandstats`, 0 when never called.
async fn calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    let needle = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn beego_json_with_a_hostless_conn_stores_under_the_key_prefix() {
    let server = RedisServer::start();
    let config = format!(
        r#"{{"key":"app","conn":":{}","dbNum":"0","password":""}}"#,
        server.port()
    );
    let cache = Cache::new("redis", &config).await.unwrap();
    cache.put("user:1", b"ann", Duration::from_secs(60)).await.unwrap();

    let mut conn = raw(&server.url()).await;
    let stored: Option<Vec<u8>> = conn.get("app:user:1").await.unwrap();
    assert_eq!(stored.as_deref(), Some(&b"ann"[..]));
    let pttl: i64 = conn.pttl("app:user:1").await.unwrap();
    assert!((59_000..=60_000).contains(&pttl), "TTL sent in milliseconds: {pttl}");
}

#[tokio::test]
async fn default_prefix_is_cacheme_and_ttls_keep_their_milliseconds() {
    let server = RedisServer::start();
    let cache = Cache::open(&server.url()).await.unwrap();
    let before = unix_ms();
    cache.put("k", b"v", Duration::from_millis(1500)).await.unwrap();
    let after = unix_ms();
    // The expiry as an instant (same machine, same clock): set during the
    // put, 1.5 s on, however long the checks take. A TTL rounded to whole
    // seconds would land 500 ms off (a put slower than that aside).
    let mut conn = raw(&server.url()).await;
    let expires: u64 = redis::cmd("PEXPIRETIME")
        .arg("cacheme:k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (before + 1500..=after + 1500).contains(&expires),
        "a 1.5 s TTL must reach Redis as 1500 ms: expires at {expires}, put within [{before}, {after}]"
    );
}

#[tokio::test]
async fn select_is_sent_only_for_a_nonzero_db() {
    let server = RedisServer::start();
    let mut admin = raw(&server.url()).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();

    let db0 = Cache::open(&format!("{}/0?prefix=zero", server.url())).await.unwrap();
    for i in 0..5 {
        db0.put_forever(&format!("k{i}"), b"v").await.unwrap();
    }
    assert_eq!(calls(&mut admin, "select").await, 0, "db 0 must not send SELECT");

    let config = format!(r#"{{"key":"three","conn":"{}","dbNum":"3"}}"#, server.addr());
    let db3 = Cache::new("redis", &config).await.unwrap();
    for i in 0..5 {
        db3.put_forever(&format!("k{i}"), b"in-three").await.unwrap();
        db3.get(&format!("k{i}")).await.unwrap();
    }
    assert_eq!(
        calls(&mut admin, "select").await,
        1,
        "SELECT once per connection, not per command"
    );

    let mut in_three = raw(&format!("{}/3", server.url())).await;
    let stored: Option<Vec<u8>> = in_three.get("three:k0").await.unwrap();
    assert_eq!(stored.as_deref(), Some(&b"in-three"[..]));
    let in_zero: Option<Vec<u8>> = admin.get("three:k0").await.unwrap();
    assert_eq!(in_zero, None);
}

#[tokio::test]
async fn password_and_acl_user_authenticate_in_both_config_forms() {
    let server = RedisServer::builder()
        .password("default-pw")
        .acl_user("alice", "alice-pw")
        .start();
    let by_url = Cache::open(&format!("redis://:default-pw@{}", server.addr()))
        .await
        .unwrap();
    by_url.put_forever("a", b"1").await.unwrap();
    let by_json = Cache::new(
        "redis",
        &format!(r#"{{"conn":"{}","password":"default-pw"}}"#, server.addr()),
    )
    .await
    .unwrap();
    assert_eq!(by_json.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));

    let alice_url = Cache::open(&format!("redis://alice:alice-pw@{}", server.addr()))
        .await
        .unwrap();
    assert_eq!(alice_url.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    let alice_json = format!(r#"{{"conn":"{}","user":"alice","password":"alice-pw"}}"#, server.addr());
    let alice_json = Cache::new("redis", &alice_json).await.unwrap();
    assert_eq!(alice_json.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));

    let no_password = Cache::open(&server.url()).await;
    assert!(matches!(no_password, Err(Error::Connect { .. })), "{no_password:?}");
}

#[tokio::test]
async fn passwords_never_appear_in_debug_display_errors_or_logs() {
    const SECRET: &str = "s3cret-Pa55word";
    let logs = CapturedLogs::start();

    let server = RedisServer::builder().password(SECRET).start();
    let mut shown = Vec::new();

    let good = Cache::open(&format!("redis://:{SECRET}@{}/0?prefix=p", server.addr()))
        .await
        .unwrap();
    good.put_forever("k", b"v").await.unwrap();
    shown.push(format!("{good:?}"));
    let json = format!(r#"{{"conn":"{}","password":"{SECRET}"}}"#, server.addr());
    let good_json = Cache::new("redis", &json).await.unwrap();
    shown.push(format!("{good_json:?}"));
    shown.push(format!(
        "{:?}",
        cacheme::ProviderConfig::from_json("redis", &json).unwrap()
    ));

    // Wrong password, right server.
    let wrong = Cache::open(&format!("redis://:{SECRET}x@{}", server.addr()))
        .await
        .unwrap_err();
    shown.push(format!("{wrong} {wrong:?}"));
    // Unreachable server, by URL and by JSON.
    let closed = free_port();
    let unreachable = Cache::open(&format!("redis://user:{SECRET}@127.0.0.1:{closed}"))
        .await
        .unwrap_err();
    assert!(
        unreachable.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{unreachable}"
    );
    shown.push(format!("{unreachable} {unreachable:?}"));
    let json = format!(r#"{{"conn":"127.0.0.1:{closed}","password":"{SECRET}"}}"#);
    let unreachable = Cache::new("redis", &json).await.unwrap_err();
    shown.push(format!("{unreachable} {unreachable:?}"));
    // A config error in a config that holds a password.
    let bad = Cache::new("redis", &format!(r#"{{"conn":"nope","password":"{SECRET}"}}"#))
        .await
        .unwrap_err();
    shown.push(format!("{bad} {bad:?}"));

    logs.assert_secret_hidden(SECRET, &shown);
}

/// Names a secret may be given under, which a deny-list of "password"-like
/// names would miss.
const SECRET_SPELLINGS: &[&str] = &[
    "password",
    "pasword",
    "passwd",
    "pwd",
    "pass",
    "requirepass",
    "auth",
    "apiKey",
    "token",
    "secret",
    "credentials",
];

#[tokio::test]
async fn secrets_under_any_name_never_appear_in_debug_display_errors_or_logs() {
    const SECRET: &str = "zq9-Hidden-Value";
    let logs = CapturedLogs::start();
    let server = RedisServer::builder().password(SECRET).start();
    let mut shown = Vec::new();
    let good = Cache::open(&format!("redis://:{SECRET}@{}/0?prefix=p", server.addr()))
        .await
        .unwrap();
    shown.push(format!("{good:?}"));

    for spelling in SECRET_SPELLINGS {
        // As a URL query parameter, on every built-in scheme: logged at
        // DEBUG ("opening cache") before the provider refuses the field.
        for url in [
            format!("redis://:{SECRET}@{}/0?prefix=p&{spelling}={SECRET}", server.addr()),
            format!("redis://{}/0?{spelling}={SECRET}#{SECRET}", server.addr()),
            format!("redis-cluster://{}?{spelling}={SECRET}", server.addr()),
            format!("memcache://127.0.0.1:1?{spelling}={SECRET}"),
            format!("memory://?{spelling}={SECRET}"),
            format!("file:///tmp/cacheme-secret-test?{spelling}={SECRET}"),
            format!("file://host/x?{spelling}={SECRET}"),
            format!("nosuch://h?{spelling}={SECRET}"),
        ] {
            let err = Cache::open(&url).await.unwrap_err();
            shown.push(format!("{err} {err:?}"));
            let config = cacheme::ProviderConfig::from_url("redis", cacheme::config::parse_url(&url).unwrap());
            shown.push(format!("{config:?}"));
            shown.push(cacheme::config::redact_url(config.url().unwrap()));
        }
        // As a Beego JSON field, for every provider.
        for provider in ["redis", "redis-cluster", "memcache", "memory", "file"] {
            let json = format!(r#"{{"conn":"{}","{spelling}":"{SECRET}"}}"#, server.addr());
            // Refused as an unknown field, or (redis `password`) accepted.
            match Cache::new(provider, &json).await {
                Ok(cache) => shown.push(format!("{cache:?}")),
                Err(err) => shown.push(format!("{err} {err:?}")),
            }
            let config = cacheme::ProviderConfig::from_json(provider, &json).unwrap();
            shown.push(format!("{config:?}"));
            if let Err(err) = config.unsigned(spelling) {
                shown.push(format!("{err} {err:?}"));
            }
        }
    }
    // Text that is not a URL at all, or user info where a host was due.
    for text in [
        SECRET.to_owned(),
        format!("redis:{SECRET}@127.0.0.1:1"),
        format!("redis://u:{SECRET}@[::1"),
    ] {
        let err = Cache::open(&text).await.unwrap_err();
        shown.push(format!("{err} {err:?}"));
    }
    for conn in [format!("u:{SECRET}@127.0.0.1"), format!("{SECRET}@h:port")] {
        let err = Cache::new("redis", &format!(r#"{{"conn":"{conn}"}}"#))
            .await
            .unwrap_err();
        shown.push(format!("{err} {err:?}"));
        let err = Cache::new("memcache", &format!(r#"{{"conn":"{conn}"}}"#))
            .await
            .unwrap_err();
        shown.push(format!("{err} {err:?}"));
    }
    assert!(
        logs.text().contains("opening cache"),
        "the DEBUG line that shows the URL was captured"
    );
    logs.assert_secret_hidden(SECRET, &shown);
}

#[tokio::test]
async fn clear_removes_only_keys_under_the_prefix_and_never_flushes() {
    let server = RedisServer::start();
    let mut conn = raw(&server.url()).await;
    for foreign in ["app2:k", "other:k", "app", "appk", "ab:x", "a*x"] {
        let _: () = conn.set(foreign, "foreign").await.unwrap();
    }
    let app = Cache::open(&format!("{}?prefix=app", server.url())).await.unwrap();
    for i in 0..3000 {
        app.put_forever(&format!("k{i}"), b"v").await.unwrap();
    }
    let globby = Cache::new("redis", &format!(r#"{{"key":"a*","conn":"{}"}}"#, server.addr()))
        .await
        .unwrap();
    globby.put_forever("mine", b"v").await.unwrap();

    app.clear().await.unwrap();
    globby.clear().await.unwrap();

    let left: Vec<String> = conn.keys("*").await.unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["a*x", "ab:x", "app", "app2:k", "appk", "other:k"]);
    assert_eq!(
        calls(&mut conn, "flushdb").await + calls(&mut conn, "flushall").await,
        0
    );
    assert!(
        calls(&mut conn, "unlink").await >= 3,
        "3000 keys are removed in batches"
    );
}

#[tokio::test]
async fn a_server_error_is_an_error_never_a_missing_key() {
    let mut server = RedisServer::start();
    let cache = Cache::open(&format!("{}?prefix=app", server.url())).await.unwrap();
    let mut conn = raw(&server.url()).await;
    let _: () = conn.lpush("app:list", "x").await.unwrap();

    let err = cache.get("list").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                op: Op::Get,
                provider: "redis",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"list\""), "the error names the key: {err}");
    let err = cache.incr("list").await.unwrap_err();
    assert!(matches!(err, Error::Backend { op: Op::Incr, .. }), "{err}");

    server.stop();
    let err = cache.get("anything").await.unwrap_err();
    assert!(
        matches!(err, Error::Backend { op: Op::Get, .. }),
        "a dead server is an error: {err}"
    );
    assert!(cache.get_multi(&["a", "b"]).await.is_err());
    assert!(cache.exists("a").await.is_err());
}

/// The connection reconnects with one attempt per call, no backoff: a
/// call on a server that refuses connections fails at once rather than
/// waiting on retries (the timeout here is a minute, so it hides nothing),
/// and the first call after the server is back succeeds, though the last
/// reconnection attempt was refused while it was down. (Two worker
/// threads: the attempt a failed call starts runs on one while the server
/// is still down, as in a service, and not only when the next call polls
/// it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_at_once_on_a_dead_server_and_the_first_after_its_restart_succeeds() {
    let mut server = RedisServer::start();
    let cache = Cache::open(&format!("{}?timeout=60s", server.url())).await.unwrap();
    cache.put_forever("before", b"1").await.unwrap();

    server.stop();
    let started = Instant::now();
    for _ in 0..30 {
        assert!(cache.get("before").await.is_err());
    }
    // Refused connections on loopback take microseconds; retries with a
    // backoff took hundreds of milliseconds per call (about 9 s for 30).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "30 calls on a dead server took {:?}",
        started.elapsed()
    );

    server.restart();
    cache.put_forever("after", b"2").await.unwrap();
    assert_eq!(cache.get("after").await.unwrap().as_deref(), Some(&b"2"[..]));
}

#[tokio::test]
async fn the_same_client_recovers_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let cache = Cache::open(&server.url()).await.unwrap();
    cache.put_forever("before", b"1").await.unwrap();

    server.stop();
    assert!(cache.get("before").await.is_err());
    server.restart();

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match cache.put_forever("after", b"2").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for reconnection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the client did not recover within 15 s: {e}"),
        }
    }
    assert_eq!(cache.get("after").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(cache.get("before").await.unwrap(), None, "a fresh server has no data");
    assert_eq!(cache.incr("n").await.unwrap(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_naming_the_address() {
    let port = free_port();
    let err = Cache::new("redis", &format!(r#"{{"conn":"127.0.0.1:{port}"}}"#))
        .await
        .unwrap_err();
    match &err {
        Error::Connect { provider, address, .. } => {
            assert_eq!(*provider, "redis");
            assert_eq!(address, &format!("127.0.0.1:{port}/0"));
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn config_errors_name_the_field_before_connecting() {
    let cases = [
        (r#"{"key":"app"}"#, "conn"),
        (r#"{"conn":1}"#, "conn"),
        (r#"{"conn":"localhost"}"#, "conn"),
        (r#"{"conn":"127.0.0.1:99999"}"#, "conn"),
        (r#"{"conn":":1","dbNum":"zero"}"#, "dbNum"),
        (r#"{"conn":":1","dbNum":true}"#, "dbNum"),
        (r#"{"conn":":1","key":""}"#, "key"),
        (r#"{"conn":":1","pasword":"x"}"#, "pasword"),
    ];
    for (config, field) in cases {
        match Cache::new("redis", config).await {
            Err(Error::Config { field: Some(f), .. }) => assert_eq!(f, field, "{config}"),
            other => panic!("{config}: expected a config error about {field:?}, got {other:?}"),
        }
    }
    match Cache::open("redis://127.0.0.1:1?prefix=").await {
        Err(Error::Config { field: Some(f), .. }) => assert_eq!(f, "prefix"),
        other => panic!("expected an error about the empty prefix, got {other:?}"),
    }
    match Cache::open("redis://127.0.0.1:1,127.0.0.1:2").await {
        Err(Error::Config {
            field: Some(f), reason, ..
        }) => {
            assert_eq!(f, "host");
            assert!(reason.contains("redis-cluster://"), "{reason}");
        }
        other => panic!("a host list is not quietly cut to its first host: {other:?}"),
    }
    match Cache::open("redis://127.0.0.1:1?pool=3").await {
        Err(Error::Config { field: Some(f), .. }) => assert_eq!(f, "pool"),
        other => panic!("expected an error about the unknown parameter, got {other:?}"),
    }
}

#[tokio::test]
async fn ttl_scan_keys_and_memory_used_for_tools() {
    let server = RedisServer::start();
    let cache = Cache::open(&format!("{}?prefix=app", server.url())).await.unwrap();
    let other = Cache::open(&server.url()).await.unwrap();
    cache.put("a:1", b"v", Duration::from_secs(60)).await.unwrap();
    cache.put_forever("a:2", b"v").await.unwrap();
    cache.put_forever("b:1", b"v").await.unwrap();
    other.put_forever("a:3", b"other prefix").await.unwrap();
    let backend = cache.backend();

    let left = backend.ttl("a:1").await.unwrap().unwrap().unwrap();
    assert!(
        left > Duration::from_secs(58) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert_eq!(backend.ttl("a:2").await.unwrap(), Some(None), "no expiry");
    assert_eq!(backend.ttl("absent").await.unwrap(), None);

    let mut seen = Vec::new();
    let visited = backend
        .scan_keys("a:*", &mut |key| seen.push(key.to_owned()))
        .await
        .unwrap();
    seen.sort();
    assert_eq!((visited, seen), (2, vec!["a:1".to_owned(), "a:2".to_owned()]));
    assert_eq!(
        backend.scan_keys("*", &mut |_| {}).await.unwrap(),
        3,
        "only this prefix"
    );
    assert!(cache.exists("a:1").await.unwrap(), "scanning deletes nothing");

    assert!(backend.memory_used().await.unwrap() > 0);
}

// ---- timeouts and value sizes ----

/// How long a call on a frozen server may take with a `timeout` of
/// `timeout`: generous (5x) for a loaded machine, far below the seconds a
/// call took before commands had their own timeout.
fn frozen_bound(timeout: Duration) -> Duration {
    timeout * 5
}

#[tokio::test]
async fn a_frozen_server_fails_calls_within_the_timeout_and_the_connection_recovers() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let cache = Cache::open(&format!("{}?timeout=300ms", server.url())).await.unwrap();
    cache.put("k", b"v", Duration::from_secs(60)).await.unwrap();

    server.freeze();
    for _ in 0..3 {
        let started = Instant::now();
        let err = cache.get("k").await.unwrap_err();
        let took = started.elapsed();
        assert!(took < frozen_bound(timeout), "a get on a frozen server took {took:?}");
        assert!(matches!(err, Error::Backend { op: Op::Get, .. }), "{err:?}");
        assert!(err.to_string().contains("no reply within"), "{err}");
        let started = Instant::now();
        cache.put("k", b"w", Duration::from_secs(60)).await.unwrap_err();
        assert!(started.elapsed() < frozen_bound(timeout), "{:?}", started.elapsed());
    }
    server.thaw();

    // The same client: the late replies of the abandoned commands are
    // dropped, each new command gets its own reply.
    for i in 0..20 {
        let value = format!("value-{i}");
        cache.put("k", value.as_bytes(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(value.as_bytes()));
    }
}

/// A GET dropped while its reply is on the way (its task aborted, not
/// timed out) leaves the connection in step: a GET sent after it, whose
/// reply comes behind the abandoned one, gets its own value, and so do
/// the next ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_dropped_mid_flight_leaves_the_connection_in_step() {
    let server = RedisServer::start();
    let proxy = StallingProxy::start(server.port());
    // A timeout far above the test: only the abort ends the held GET.
    let cache = Cache::open(&proxy.redis_url("?timeout=60s")).await.unwrap();
    cache.put("held", b"held value", Duration::from_secs(60)).await.unwrap();
    for i in 0..10 {
        cache
            .put(&format!("k{i}"), format!("v{i}").as_bytes(), Duration::from_secs(60))
            .await
            .unwrap();
    }

    proxy.arm(b"cacheme:held");
    let dropped = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get("held").await }
    });
    tokio::task::block_in_place(|| proxy.wait_seen(1, Duration::from_secs(30)));
    dropped.abort();
    let ended = dropped.await;
    assert!(
        ended.as_ref().is_err_and(|e| e.is_cancelled()),
        "the GET finished: {ended:?}"
    );

    // Sent while the abandoned reply is still held: its reply comes after.
    let behind = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get("k0").await }
    });
    proxy.release();
    assert_eq!(behind.await.unwrap().unwrap().as_deref(), Some(&b"v0"[..]));
    for i in (0..10).chain(0..10) {
        let value = cache.get(&format!("k{i}")).await.unwrap();
        assert_eq!(value, Some(format!("v{i}").into_bytes()), "k{i}");
    }
    assert_eq!(cache.get("held").await.unwrap().as_deref(), Some(&b"held value"[..]));
}

// Time is paused: it moves only when every task waits (here, on a socket
// that never answers), straight to the next timer; so the call fails
// exactly when a connect timeout fires, whatever the machine's load.
#[tokio::test(start_paused = true)]
async fn a_port_that_never_answers_fails_open_within_the_connect_timeout() {
    // The kernel completes the TCP handshake for the listen backlog; nothing
    // ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    for (url, connect_timeout) in [
        (
            format!("redis://{addr}?connectTimeout=500ms"),
            Duration::from_millis(500),
        ),
        // The default connect timeout (2 s).
        (format!("redis://{addr}"), Duration::from_secs(2)),
    ] {
        let started = tokio::time::Instant::now();
        let err = Cache::open(&url).await.unwrap_err();
        let took = started.elapsed();
        // Not before the connect timeout, and not after it either: no
        // retry or second timer adds to it (1 ms: the timer wheel's grain).
        assert!(
            took >= connect_timeout && took <= connect_timeout + Duration::from_millis(1),
            "{url}: failed after {took:?}"
        );
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}

#[tokio::test]
async fn a_value_over_the_limit_is_refused_before_it_is_sent_and_the_connection_stays_usable() {
    let server = RedisServer::builder().args(["--proto-max-bulk-len", "1mb"]).start();
    let mut conn = raw(&server.url()).await;
    // Configured, or the server's own `proto-max-bulk-len`, asked when
    // connecting.
    for url in [format!("{}?maxValueSize=1m", server.url()), server.url()] {
        refuses_what_the_server_would_refuse(&url, &mut conn).await;
    }
}

async fn refuses_what_the_server_would_refuse(url: &str, conn: &mut redis::aio::MultiplexedConnection) {
    let cache = Cache::open(url).await.unwrap();
    let too_big = vec![7u8; 1536 * 1024];
    let sets = calls(conn, "set").await;

    for err in [
        cache.put("big", &too_big, Duration::from_secs(60)).await.unwrap_err(),
        cache.backend().set_if_absent("big", &too_big, None).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::TooLarge { size: 1_572_864, limit: 1_048_576, key: Some(ref k), .. } if k == "big"),
            "{err:?}"
        );
        assert!(err.to_string().contains("too large"), "{err}");
    }
    // Every command is checked, scripts included.
    let err = cache.backend().delete_if_equals("big", &too_big).await.unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    assert_eq!(calls(conn, "set").await, sets, "nothing was sent");
    assert_eq!(calls(conn, "evalsha").await + calls(conn, "eval").await, 0);

    // The typed hit path's GET is checked too: a key over the limit.
    let gets = calls(conn, "get").await;
    let huge_key = "k".repeat(1536 * 1024);
    let err = cache.get(&huge_key).await.unwrap_err();
    assert!(matches!(err, Error::Backend { op: Op::Get, .. }), "{err:?}");
    assert!(err.to_string().contains("too large"), "{err}");
    assert_eq!(calls(conn, "get").await, gets, "the GET was not sent");

    // The connection was never broken: the next calls work.
    let fits = vec![7u8; 512 * 1024];
    cache.put("big", &fits, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("big").await.unwrap().map(|v| v.len()), Some(fits.len()));
    assert_eq!(calls(conn, "set").await, sets + 1, "only the value that fits was sent");
}

#[tokio::test]
async fn a_200_mib_value_is_written_with_the_default_timeout_and_read_with_a_configured_one() {
    let server = RedisServer::start();
    let writer = Cache::open(&server.url()).await.unwrap();
    let value: Vec<u8> = (0..200 * 1024 * 1024).map(|i: usize| (i % 251) as u8).collect();
    // A command's timeout grows with what it sends (500 ms + 6.25 s at
    // 32 MiB/s here): the default is enough to write it.
    writer.put("huge", &value, Duration::from_secs(60)).await.unwrap();
    // A reply's size is not known before it arrives: reading values this
    // large takes a `timeout` that covers their transfer.
    let reader = Cache::open(&format!("{}?timeout=20s", server.url())).await.unwrap();
    let read = reader.get("huge").await.unwrap().expect("stored");
    assert!(read == value, "the value came back changed ({} bytes)", read.len());
    drop(read);
    // Both connections serve small commands right after.
    for cache in [&writer, &reader] {
        cache.put("small", b"s", Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get("small").await.unwrap().as_deref(), Some(&b"s"[..]));
    }
}
