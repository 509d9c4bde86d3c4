//! Degraded start (`connect=lazy`), against real servers: a cache opened
//! while its server is down returns at once, fails its calls fast, and
//! serves once the server is up, without being rebuilt; eager mode (the
//! default) still fails at once, and a wrong password or a bad config fail
//! at once in both modes.

use std::time::{Duration, Instant};

use cacheme::{Cache, Error};
use cacheme_test_support::{MemcachedServer, RedisCluster, RedisServer};

/// Generous bounds: the machine is shared and loaded.
const OPENS_AT_ONCE: Duration = Duration::from_secs(2);
const FAILS_FAST: Duration = Duration::from_millis(500);
const SERVES_WITHIN: Duration = Duration::from_secs(30);

/// Opens `url`, checking it took under [`OPENS_AT_ONCE`].
async fn open_quickly(url: &str) -> cacheme::Result<Cache> {
    let started = Instant::now();
    let opened = Cache::open(url).await;
    let took = started.elapsed();
    assert!(took < OPENS_AT_ONCE, "opening {url} took {took:?}");
    opened
}

/// A call on a cache that is not connected: a backend error, at once.
async fn fails_fast(cache: &Cache) {
    let started = Instant::now();
    let error = cache.get("k").await.unwrap_err();
    let took = started.elapsed();
    assert!(took < FAILS_FAST, "a call took {took:?} to fail");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("not connected"), "{error}");
    let error = cache.put("k", b"v", Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
}

/// Polls (no fixed sleep) until the same cache stores and reads a value.
async fn serves_eventually(cache: &Cache) {
    let deadline = Instant::now() + SERVES_WITHIN;
    loop {
        match cache.put("k", b"v", Duration::from_secs(60)).await {
            Ok(()) => break,
            Err(error) => assert!(
                Instant::now() < deadline,
                "still failing after {SERVES_WITHIN:?}: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_lazy_redis_cache_opens_while_the_server_is_down_and_serves_once_it_is_up() {
    let mut server = RedisServer::start();
    server.stop();
    let cache = open_quickly(&format!("{}/0?connect=lazy&prefix=lazy", server.url()))
        .await
        .unwrap();
    fails_fast(&cache).await;
    server.restart();
    serves_eventually(&cache).await;
}

#[tokio::test]
async fn a_lazy_redis_cache_from_beego_json_serves_once_the_server_is_up() {
    let mut server = RedisServer::start();
    server.stop();
    let config = format!(r#"{{"conn":"{}","connect":"lazy"}}"#, server.addr());
    let started = Instant::now();
    let cache = Cache::new("redis", &config).await.unwrap();
    assert!(started.elapsed() < OPENS_AT_ONCE);
    fails_fast(&cache).await;
    server.restart();
    serves_eventually(&cache).await;
}

#[tokio::test]
async fn a_lazy_redis_cache_whose_server_is_up_is_connected_on_return() {
    let server = RedisServer::start();
    let cache = open_quickly(&format!("{}?connect=lazy", server.url())).await.unwrap();
    cache.put("k", b"v", Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn an_eager_redis_cache_still_fails_at_once_when_the_server_is_down() {
    let mut server = RedisServer::start();
    server.stop();
    for url in [server.url(), format!("{}?connect=eager", server.url())] {
        let error = open_quickly(&url).await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    }
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_in_both_modes() {
    let server = RedisServer::builder().password("right").start();
    for mode in ["eager", "lazy"] {
        for credentials in [":wrong@", ""] {
            let url = format!("redis://{credentials}{}/0?connect={mode}", server.addr());
            let error = open_quickly(&url).await.unwrap_err();
            assert!(matches!(error, Error::Connect { .. }), "{mode}: {error:?}");
            assert!(!error.to_string().contains("wrong"), "the password leaked: {error}");
        }
        let url = format!("redis://:right@{}/0?connect={mode}", server.addr());
        let cache = open_quickly(&url).await.unwrap();
        cache.put("k", b"v", Duration::from_secs(60)).await.unwrap();
    }
}

#[tokio::test]
async fn bad_config_fails_at_once_in_lazy_mode() {
    // Nothing listens on these ports: only the config is checked.
    for url in [
        "redis://127.0.0.1:1/0?connect=lazy&prefix=a:b",
        "redis://127.0.0.1:1/0?connect=sometimes",
        "redis://127.0.0.1:1/0?connect=lazy&colour=blue",
        "memcache://127.0.0.1:1?connect=lazy&poolSize=many",
        "redis-cluster://127.0.0.1:1,127.0.0.1:2/3?connect=lazy",
    ] {
        let error = open_quickly(url).await.unwrap_err();
        assert!(matches!(error, Error::Config { .. }), "{url}: {error:?}");
    }
    let error = Cache::new("redis", r#"{"conn":"127.0.0.1:1","connect":"lazy","dbNum":"x"}"#)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
}

#[tokio::test]
async fn a_lazy_memcached_cache_opens_while_the_server_is_down_and_serves_once_it_is_up() {
    let mut server = MemcachedServer::start();
    server.stop();
    let error = open_quickly(&server.url()).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "eager: {error:?}");
    let cache = open_quickly(&format!("{}?connect=lazy", server.url())).await.unwrap();
    fails_fast(&cache).await;
    assert!(cache.clear().await.is_err());
    server.restart();
    serves_eventually(&cache).await;
}

#[tokio::test]
async fn a_lazy_redis_cluster_cache_opens_while_the_cluster_is_down_and_serves_once_it_is_up() {
    let mut cluster = RedisCluster::builder().replicas(0).start();
    let url = cluster.url();
    cluster.kill_all();
    let error = open_quickly(&url).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "eager: {error:?}");
    let cache = open_quickly(&format!("{url}?connect=lazy")).await.unwrap();
    fails_fast(&cache).await;
    cluster.restart_all();
    cluster.wait_until_ok(SERVES_WITHIN);
    serves_eventually(&cache).await;
}

#[tokio::test]
async fn a_wrong_cluster_password_fails_at_once_in_both_modes() {
    let cluster = RedisCluster::builder().replicas(0).password("right").start();
    let hosts = cluster.addrs().join(",");
    for mode in ["eager", "lazy"] {
        let url = format!("redis-cluster://:wrong@{hosts}?connect={mode}");
        let error = open_quickly(&url).await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{mode}: {error:?}");
    }
}
