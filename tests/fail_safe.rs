//! Fail-safe and freshness (`stale_for`, `fail_safe_throttle`,
//! `soft_timeout`, `hard_timeout`, `refresh_after`) on every backend:
//! memory, a spawned Redis, a Redis cluster, memcached and a temp-dir file
//! cache. Time is a `TestClock` the tests move; the servers keep values by
//! their own time, far longer than a test runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cacheme::testing::TestClock;
use cacheme::{Cache, Client, Context, FetchTimeout, MemoryBackend, cache_store};
use tokio::sync::Semaphore;

#[derive(Clone, Debug, PartialEq)]
enum AppError {
    Down,
    TooSlow(FetchTimeout),
}

impl From<FetchTimeout> for AppError {
    fn from(timeout: FetchTimeout) -> Self {
        AppError::TooSlow(timeout)
    }
}

/// The test's context: a client on a driven clock, and a source the test
/// can break, gate, make panic and change.
#[derive(Clone)]
struct App(Arc<Inner>);

struct Inner {
    cache: Client,
    clock: TestClock,
    fetches: AtomicUsize,
    failing: AtomicBool,
    panicking: AtomicBool,
    /// While set, fetches wait for a permit of `release`.
    gated: AtomicBool,
    release: Semaphore,
    /// What the source answers.
    version: Mutex<String>,
    /// Keeps the backend's server or directory alive.
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.0.cache
    }
}

impl App {
    fn on(cache: Cache, clock: TestClock, guard: impl std::any::Any + Send + Sync) -> App {
        App(Arc::new(Inner {
            cache: Client::builder().cache(cache).clock(&clock).build().unwrap(),
            clock,
            fetches: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            panicking: AtomicBool::new(false),
            gated: AtomicBool::new(false),
            release: Semaphore::new(0),
            version: Mutex::new("v1".to_owned()),
            _guard: Box::new(guard),
        }))
    }

    async fn memory() -> App {
        let clock = TestClock::new();
        let cache = Cache::from_backend(MemoryBackend::with_capacity(1_000).with_clock(&clock));
        App::on(cache, clock, ())
    }

    async fn redis() -> App {
        let server = cacheme_test_support::RedisServer::start();
        let cache = Cache::open(&format!("{}?prefix=failsafe", server.url())).await.unwrap();
        App::on(cache, TestClock::new(), server)
    }

    async fn cluster() -> App {
        let cluster = cacheme_test_support::RedisCluster::builder()
            .masters(3)
            .replicas(0)
            .start();
        let cache = Cache::new("redis-cluster", &cluster.config("failsafe")).await.unwrap();
        App::on(cache, TestClock::new(), cluster)
    }

    async fn memcache() -> App {
        let server = cacheme_test_support::MemcachedServer::start();
        let cache = Cache::open(&server.url()).await.unwrap();
        App::on(cache, TestClock::new(), server)
    }

    async fn file() -> App {
        let dir = cacheme_test_support::FileFixture::start();
        let cache = Cache::open(&format!("file://{}", dir.path().display())).await.unwrap();
        App::on(cache, TestClock::new(), dir)
    }

    fn fetches(&self) -> usize {
        self.0.fetches.load(Ordering::SeqCst)
    }

    fn advance(&self, by: Duration) {
        self.0.clock.advance(by);
    }

    fn answer(&self, version: &str) {
        *self.0.version.lock().unwrap() = version.to_owned();
    }

    async fn source(&self, id: u64) -> Result<String, AppError> {
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        if self.0.gated.load(Ordering::SeqCst) {
            self.0.release.acquire().await.unwrap().forget();
        }
        if self.0.panicking.load(Ordering::SeqCst) {
            panic!("the source panicked");
        }
        if self.0.failing.load(Ordering::SeqCst) {
            return Err(AppError::Down);
        }
        Ok(format!("{} of {id}", self.0.version.lock().unwrap()))
    }

    /// Waits (a generous bound, polling) until a get of `id` through
    /// `get` answers `want`: a background fill landed.
    async fn until<F, Fut>(&self, want: &str, mut get: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<String, AppError>>,
    {
        let landed = async {
            loop {
                if get().await.as_deref() == Ok(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), landed)
            .await
            .unwrap_or_else(|_| panic!("{want:?} never landed"));
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[cache_store(key = "safe:<id>", ttl = "1m", stale_for = "1h", fail_safe_throttle = "10s")]
async fn safe(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

#[cache_store(key = "soft:<id>", ttl = "1m", stale_for = "1h", soft_timeout = "50ms")]
async fn soft(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

#[cache_store(key = "hard:<id>", ttl = "1m", stale_for = "1h", hard_timeout = "200ms")]
async fn hard(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

#[cache_store(key = "ahead:<id>", ttl = "1m", refresh_after = "30s", singleflight)]
async fn ahead(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

/// A failing source after the TTL: the stale value is served, the source
/// is asked at most once per throttle interval, and never past
/// ttl + stale_for.
async fn a_failing_refetch_serves_the_stale_value_throttled(app: App) {
    assert_eq!(SafeStore::get(&app, 1).await.unwrap(), "v1 of 1");
    app.0.failing.store(true, Ordering::SeqCst);
    app.advance(MINUTE + Duration::from_secs(1));

    assert_eq!(
        SafeStore::get(&app, 1).await.unwrap(),
        "v1 of 1",
        "stale, not the error"
    );
    assert_eq!(app.fetches(), 2);
    for _ in 0..10 {
        assert_eq!(SafeStore::get(&app, 1).await.unwrap(), "v1 of 1");
    }
    assert_eq!(app.fetches(), 2, "the source is not asked again within the throttle");
    let stats = app.cacheme().stats().store("SafeStore").cloned().unwrap();
    assert_eq!(stats.stale, 1, "{stats:?}");

    app.advance(Duration::from_secs(11));
    assert_eq!(SafeStore::get(&app, 1).await.unwrap(), "v1 of 1");
    assert_eq!(app.fetches(), 3, "asked again once the throttle passed");

    // Past ttl + stale_for the stale value is gone: the error comes through.
    app.advance(Duration::from_secs(2 * 60 * 60));
    assert_eq!(SafeStore::get(&app, 1).await, Err(AppError::Down));
    assert_eq!(app.fetches(), 4);

    // The source recovers: a fresh value again.
    app.0.failing.store(false, Ordering::SeqCst);
    app.answer("v2");
    assert_eq!(SafeStore::get(&app, 1).await.unwrap(), "v2 of 1");
}

/// A panicking refetch is a failed one: the stale value is served.
async fn a_panicking_refetch_serves_the_stale_value(app: App) {
    assert_eq!(SafeStore::get(&app, 2).await.unwrap(), "v1 of 2");
    app.0.panicking.store(true, Ordering::SeqCst);
    app.advance(MINUTE * 2);
    assert_eq!(SafeStore::get(&app, 2).await.unwrap(), "v1 of 2");
    assert_eq!(app.fetches(), 2);
}

/// A fresh value is served without a fetch, and a refetch that succeeds
/// replaces a stale one.
async fn a_successful_refetch_replaces_the_stale_value(app: App) {
    assert_eq!(SafeStore::get(&app, 3).await.unwrap(), "v1 of 3");
    assert_eq!(SafeStore::get(&app, 3).await.unwrap(), "v1 of 3");
    assert_eq!(app.fetches(), 1);
    app.answer("v2");
    app.advance(MINUTE * 2);
    assert_eq!(SafeStore::get(&app, 3).await.unwrap(), "v2 of 3");
    assert_eq!(SafeStore::get(&app, 3).await.unwrap(), "v2 of 3");
    assert_eq!(app.fetches(), 2);
    assert_eq!(SafeStore::peek(&app, 3).await.unwrap().as_deref(), Some("v2 of 3"));
}

/// A slow refetch with a stale value present: the caller gets the stale
/// value once the soft timeout passes (the fetch is held at a gate until
/// the test releases it), and the cache is filled with the new value when
/// the fetch answers.
async fn a_slow_refetch_answers_stale_after_the_soft_timeout(app: App) {
    assert_eq!(SoftStore::get(&app, 4).await.unwrap(), "v1 of 4");
    app.advance(MINUTE * 2);
    app.answer("v2");
    app.0.gated.store(true, Ordering::SeqCst);

    let answered = tokio::time::timeout(Duration::from_secs(20), SoftStore::get(&app, 4)).await;
    assert_eq!(answered.expect("answered by the soft timeout").unwrap(), "v1 of 4");
    assert_eq!(app.fetches(), 2);

    app.0.gated.store(false, Ordering::SeqCst);
    app.0.release.add_permits(1);
    app.until("v2 of 4", || SoftStore::get(&app, 4)).await;
    assert_eq!(app.fetches(), 2, "the background fetch filled the cache");
}

/// A fetch past its hard timeout: with nothing stale, the fetcher's own
/// error made from `FetchTimeout`; with a stale value, that value.
async fn a_hung_fetch_ends_at_the_hard_timeout(app: App) {
    app.0.gated.store(true, Ordering::SeqCst);
    match HardStore::get(&app, 5).await {
        Err(AppError::TooSlow(timeout)) => {
            assert_eq!(timeout.store, "HardStore");
            assert_eq!(timeout.limit, Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
    app.0.gated.store(false, Ordering::SeqCst);
    assert_eq!(HardStore::get(&app, 5).await.unwrap(), "v1 of 5");

    app.advance(MINUTE * 2);
    app.0.gated.store(true, Ordering::SeqCst);
    assert_eq!(
        HardStore::get(&app, 5).await.unwrap(),
        "v1 of 5",
        "stale, not the timeout"
    );
}

/// A hit older than `refresh_after` is answered at once and refreshes its
/// key in the background, once.
async fn an_old_hit_refreshes_ahead_in_the_background(app: App) {
    assert_eq!(AheadStore::get(&app, 6).await.unwrap(), "v1 of 6");
    app.answer("v2");
    app.advance(Duration::from_secs(31));
    // Held at the gate: every get of the due value answers at once, and
    // only one refresh runs.
    app.0.gated.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(AheadStore::get(&app, 6).await.unwrap(), "v1 of 6");
    }
    app.0.gated.store(false, Ordering::SeqCst);
    app.0.release.add_permits(1);
    app.until("v2 of 6", || AheadStore::get(&app, 6)).await;
    assert_eq!(app.fetches(), 2, "one refresh");
    assert!(app.cacheme().stats().store("AheadStore").unwrap().refreshes >= 1);
}

/// Expands a test body (an `async fn(App)`) into one test per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::memory().await).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::redis().await).await })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::cluster().await).await })*
        }
        mod memcache {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::memcache().await).await })*
        }
        mod file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::file().await).await })*
        }
    };
}

on_every_backend!(
    a_failing_refetch_serves_the_stale_value_throttled,
    a_panicking_refetch_serves_the_stale_value,
    a_successful_refetch_replaces_the_stale_value,
    a_slow_refetch_answers_stale_after_the_soft_timeout,
    a_hung_fetch_ends_at_the_hard_timeout,
    an_old_hit_refreshes_ahead_in_the_background,
);
