//! No `Duration` panics: a client's `lock_ttl` outside
//! `MIN_LOCK_TTL..=MAX_LOCK_TTL` (zero and `Duration::MAX` included) is
//! refused when the client is built, and a store whose `ttl` is the longest
//! the macro accepts caches its values on every backend (the backend clamps
//! it to `MAX_TTL`). Any `Duration` given to `Cache::put` is covered by the
//! conformance suite (`any_duration_is_a_ttl`).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cacheme::{Cache, Client, Context, Error, MAX_LOCK_TTL, MIN_LOCK_TTL, Op, cache_store};
use cacheme_test_support::{FileFixture, MemcachedServer, RedisCluster, RedisServer};

struct App {
    client: Client,
    fetches: AtomicUsize,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

/// About the longest TTL `#[cache_store]` accepts (u64::MAX milliseconds).
#[cache_store(key = "forever:<id>", ttl = "213503982334d")]
async fn forever(app: &App, id: u32) -> Result<String, std::convert::Infallible> {
    app.fetches.fetch_add(1, Ordering::SeqCst);
    Ok(format!("value {id}"))
}

fn refused_lock_ttl(ttl: Duration) -> Error {
    Client::builder()
        .lock_ttl(ttl)
        .build()
        .expect_err(&format!("lock_ttl {ttl:?} must be refused"))
}

#[test]
fn a_lock_ttl_outside_the_bounds_is_refused_when_the_client_is_built() {
    for ttl in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(1),
        MIN_LOCK_TTL - Duration::from_nanos(1),
        MAX_LOCK_TTL + Duration::from_nanos(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ] {
        let error = refused_lock_ttl(ttl);
        assert!(
            matches!(error, Error::InvalidArgument { op: Op::Lock, .. }),
            "{ttl:?}: {error}"
        );
        assert!(error.to_string().contains("ClientBuilder::lock_ttl"), "{error}");
    }
    for ttl in [MIN_LOCK_TTL, Duration::from_secs(10), MAX_LOCK_TTL] {
        Client::builder().lock_ttl(ttl).build().unwrap();
    }
}

/// Two gets of a store with the longest TTL, with the longest lock: the
/// value is written (one fetch), the lock is taken and released.
async fn longest_ttls_cache(url: &str) {
    let app = App {
        client: Client::builder()
            .cache(Cache::open(url).await.unwrap())
            .lock_ttl(MAX_LOCK_TTL)
            .build()
            .unwrap(),
        fetches: AtomicUsize::new(0),
    };
    assert!(ForeverStore::SPEC.ttl > cacheme::MAX_TTL * 1000);
    // A write the backend refused would leave the (one day) lock held and
    // the second get waiting on it: bounded, so that fails rather than hangs.
    for _ in 0..2 {
        let get = tokio::time::timeout(Duration::from_secs(60), ForeverStore::get(&app, 1));
        assert_eq!(get.await.expect("a get within 60 s").unwrap(), "value 1");
    }
    assert_eq!(app.fetches.load(Ordering::SeqCst), 1, "{url}: the value was cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_ttls_cache_on_memory() {
    longest_ttls_cache("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_ttls_cache_on_redis() {
    let server = RedisServer::start();
    longest_ttls_cache(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_ttls_cache_on_a_redis_cluster() {
    let cluster = RedisCluster::builder().replicas(0).start();
    longest_ttls_cache(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_ttls_cache_on_memcached() {
    let server = MemcachedServer::start();
    longest_ttls_cache(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_ttls_cache_on_files() {
    let dir = FileFixture::start();
    longest_ttls_cache(&format!("file://{}", dir.path().display())).await;
}
