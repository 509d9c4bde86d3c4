//! Namespaces never overlap: a key prefix that would let one cache read or
//! clear another's keys is refused, with the same rule and an error naming
//! the field on every backend (real servers), caches whose prefixes start
//! alike stay apart on one Redis and one cluster, and a file cache may not
//! own the root of the file system.

use std::path::Path;

use cacheme::{Cache, Error};
use cacheme_test_support::{MemcachedServer, RedisCluster, RedisServer};

/// Prefixes that would overlap another cache's namespace (or are unusable).
const BAD_PREFIXES: &[&str] = &["app:sessions", "app:", ":", "{app}", "a b", ""];

/// The field named by a config error, and its message.
fn refused(result: Result<Cache, Error>) -> (String, String) {
    match result {
        Err(Error::Config {
            field: Some(field),
            reason,
            ..
        }) => (field, reason),
        Err(other) => panic!("not a config error naming a field: {other}"),
        Ok(cache) => panic!("accepted: {cache:?}"),
    }
}

/// Every bad prefix is refused through `url` (`?prefix=`) and through the
/// provider's Beego JSON (`key`); `json` builds the JSON for a prefix.
async fn assert_bad_prefixes_refused(url: &str, provider: &str, json: impl Fn(&str) -> String) {
    for prefix in BAD_PREFIXES {
        let encoded = prefix.replace(' ', "%20");
        let (field, reason) = refused(Cache::open(&format!("{url}?prefix={encoded}")).await);
        assert_eq!(field, "prefix", "{url} {prefix:?}: {reason}");
        let (field, reason) = refused(Cache::new(provider, &json(prefix)).await);
        assert_eq!(field, "key", "{provider} {prefix:?}: {reason}");
        if prefix.contains(':') {
            assert!(reason.contains("':'"), "the reason names the separator: {reason}");
        }
    }
}

#[tokio::test]
async fn a_prefix_holding_the_separator_is_refused_on_every_backend() {
    let redis = RedisServer::start();
    assert_bad_prefixes_refused(&format!("{}/0", redis.url()), "redis", |prefix| {
        format!(r#"{{"key":"{prefix}","conn":"{}"}}"#, redis.addr())
    })
    .await;

    let memcached = MemcachedServer::start();
    assert_bad_prefixes_refused(&memcached.url(), "memcache", |prefix| {
        format!(r#"{{"key":"{prefix}","conn":"{}"}}"#, memcached.addr())
    })
    .await;

    let cluster = RedisCluster::builder().replicas(0).start();
    assert_bad_prefixes_refused(&cluster.url(), "redis-cluster", |prefix| cluster.config(prefix)).await;

    // The same servers take a good prefix.
    for url in [
        format!("{}/0?prefix=app-sessions", redis.url()),
        format!("{}?prefix=app-sessions", memcached.url()),
        format!("{}?prefix=app-sessions", cluster.url()),
    ] {
        let cache = Cache::open(&url).await.unwrap();
        cache.put_forever("k", b"v").await.unwrap();
        assert!(cache.exists("k").await.unwrap(), "{url}");
    }
}

/// `app` and `app-sessions` (and `app.sessions`) share a server: none sees
/// or clears the others' keys, lookalike keys included.
async fn assert_neighbours_stay_apart(open: impl AsyncFn(&str) -> Cache) {
    let app = open("app").await;
    let sessions = open("app-sessions").await;
    let dotted = open("app.sessions").await;
    sessions.put_forever("k", b"sessions").await.unwrap();
    dotted.put_forever("k", b"dotted").await.unwrap();
    app.put_forever("k", b"app").await.unwrap();
    for lookalike in ["sessions:k", "-sessions:k", ".sessions:k", "-sessions", ""] {
        assert_eq!(app.get(lookalike).await.unwrap(), None, "{lookalike:?}");
    }
    let mut seen = Vec::new();
    let mut visit = |key: &str| seen.push(key.to_owned());
    app.backend().scan_keys("*", &mut visit).await.unwrap();
    assert_eq!(seen, ["k"], "app walks only its own keys");

    app.clear().await.unwrap();
    assert_eq!(app.get("k").await.unwrap(), None);
    assert_eq!(sessions.get("k").await.unwrap().as_deref(), Some(&b"sessions"[..]));
    assert_eq!(dotted.get("k").await.unwrap().as_deref(), Some(&b"dotted"[..]));

    app.put_forever("k", b"app").await.unwrap();
    sessions.clear().await.unwrap();
    assert_eq!(sessions.get("k").await.unwrap(), None);
    assert_eq!(app.get("k").await.unwrap().as_deref(), Some(&b"app"[..]));
    assert_eq!(dotted.get("k").await.unwrap().as_deref(), Some(&b"dotted"[..]));
}

#[tokio::test]
async fn prefixes_that_start_alike_stay_apart_on_one_redis() {
    let server = RedisServer::start();
    let url = format!("{}/0", server.url());
    assert_neighbours_stay_apart(async |prefix: &str| Cache::open(&format!("{url}?prefix={prefix}")).await.unwrap())
        .await;
}

#[tokio::test]
async fn prefixes_that_start_alike_stay_apart_on_one_cluster() {
    let cluster = RedisCluster::builder().replicas(0).start();
    assert_neighbours_stay_apart(async |prefix: &str| {
        Cache::new("redis-cluster", &cluster.config(prefix)).await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn the_file_system_root_is_refused_in_both_config_forms() {
    let locks = Path::new("/.cacheme-locks");
    let existed = locks.exists();
    for url in ["file://", "file:///", "file:///tmp/..", "file://localhost/"] {
        let (field, reason) = refused(Cache::open(url).await);
        assert_eq!(field, "url", "{url}: {reason}");
        assert!(reason.contains("root"), "{url}: {reason}");
    }
    for json in [
        r#"{"CachePath":"/"}"#,
        r#"{"CachePath":"/tmp/../"}"#,
        r#"{"CachePath":""}"#,
    ] {
        let (field, reason) = refused(Cache::new("file", json).await);
        assert_eq!(field, "CachePath", "{json}: {reason}");
    }
    assert!(existed || !locks.exists(), "nothing was created at the root");

    // A directory of its own is fine, in both forms.
    let dir = tempfile::tempdir().unwrap();
    let by_url = Cache::open(&format!("file://{}", dir.path().display())).await.unwrap();
    by_url.put_forever("k", b"v").await.unwrap();
    let by_json = Cache::new("file", &serde_json::json!({ "CachePath": dir.path() }).to_string())
        .await
        .unwrap();
    assert_eq!(by_json.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}
