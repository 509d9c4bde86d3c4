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
    /// How many keys each call of a batch fetcher asked for.
    batches: Mutex<Vec<usize>>,
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
            batches: Mutex::default(),
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

#[cache_store(key = "maybe:<id>", ttl = "1h", none_ttl = "30s")]
async fn maybe(ctx: &App, id: u64) -> Result<Option<String>, AppError> {
    let found = ctx.source(id).await?;
    Ok((id != 404).then_some(found))
}

/// "Not found" is cached for `none_ttl`, found values for the TTL.
async fn a_missing_value_is_cached_for_none_ttl(app: App) {
    assert_eq!(MaybeStore::get(&app, 404).await.unwrap(), None);
    assert_eq!(MaybeStore::get(&app, 404).await.unwrap(), None);
    assert_eq!(app.fetches(), 1, "the second request did not reach the source");
    assert_eq!(MaybeStore::get(&app, 7).await.unwrap().as_deref(), Some("v1 of 7"));
    assert_eq!(app.fetches(), 2);
    let kept = |id: u64| {
        let (key, app) = (MaybeStore::key(&id), app.clone());
        async move { app.cacheme().cache().backend().ttl(&key).await.ok().flatten() }
    };
    // Where the backend reports TTLs (Redis PTTL, memory), the
    // server keeps "not found" only for `none_ttl`.
    if let Some(Some(left)) = kept(404).await {
        assert!(left <= Duration::from_secs(30) && left > Duration::ZERO, "{left:?}");
    }
    if let Some(Some(left)) = kept(7).await {
        assert!(left > Duration::from_secs(30 * 60), "{left:?}");
    }

    app.advance(Duration::from_secs(31));
    assert_eq!(MaybeStore::get(&app, 404).await.unwrap(), None);
    assert_eq!(app.fetches(), 3, "asked again after none_ttl");
    assert_eq!(MaybeStore::get(&app, 7).await.unwrap().as_deref(), Some("v1 of 7"));
    assert_eq!(app.fetches(), 3, "a found value lives its TTL");
}

/// A value that says how long it lives.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Token {
    secret: String,
    expires_in_secs: u64,
}

fn token_ttl(token: &Token) -> Duration {
    Duration::from_secs(token.expires_in_secs)
}

#[cache_store(key = "token:<id>", ttl = "1h", ttl_from = token_ttl)]
async fn token(ctx: &App, id: u64) -> Result<Token, AppError> {
    Ok(Token {
        secret: ctx.source(id).await?,
        expires_in_secs: id,
    })
}

/// Each value lives the TTL it chose (`ttl_from`), on the server too.
async fn a_value_lives_the_ttl_it_chose(app: App) {
    assert_eq!(TokenStore::get(&app, 10).await.unwrap().expires_in_secs, 10);
    assert_eq!(TokenStore::get(&app, 100).await.unwrap().expires_in_secs, 100);
    assert_eq!(app.fetches(), 2);
    let key = TokenStore::key(&100);
    if let Ok(Some(Some(left))) = app.cacheme().cache().backend().ttl(&key).await {
        assert!(
            left <= Duration::from_secs(100) && left > Duration::from_secs(60),
            "{left:?}"
        );
    }
    app.advance(Duration::from_secs(9));
    TokenStore::get(&app, 10).await.unwrap();
    assert_eq!(app.fetches(), 2, "still fresh at 9 s of 10");
    app.advance(Duration::from_secs(2));
    TokenStore::get(&app, 10).await.unwrap();
    TokenStore::get(&app, 100).await.unwrap();
    assert_eq!(app.fetches(), 3, "the 10 s token expired, the 100 s one did not");
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

/// `get_m` and pipelines serve stale values too when their refetch fails,
/// each key throttled as a `get` is.
async fn batches_serve_stale_values_when_the_source_fails(app: App) {
    let warm = SafeStore::get_m(&app).add(20).add(21).run().await.into_all().unwrap();
    assert_eq!(warm.iter().cloned().collect::<Vec<_>>(), ["v1 of 20", "v1 of 21"]);
    assert_eq!(app.fetches(), 2);
    app.0.failing.store(true, Ordering::SeqCst);
    app.advance(MINUTE * 2);

    let stale = SafeStore::get_m(&app).add(20).add(21).run().await.into_all().unwrap();
    assert_eq!(stale.iter().cloned().collect::<Vec<_>>(), ["v1 of 20", "v1 of 21"]);
    assert_eq!(app.fetches(), 4, "each key asked once");

    let mut pipeline = cacheme::Pipeline::new();
    let twenty = SafeStore::get_p(&app, &mut pipeline, 20);
    let one_more = SafeStore::get_p(&app, &mut pipeline, 21);
    pipeline.execute().await.unwrap();
    assert_eq!(twenty.into_result().unwrap(), "v1 of 20");
    assert_eq!(one_more.into_result().unwrap(), "v1 of 21");
    assert_eq!(app.fetches(), 4, "within the throttle: served again, not asked");

    app.advance(Duration::from_secs(11));
    let mut pipeline = cacheme::Pipeline::new();
    let twenty = SafeStore::get_p(&app, &mut pipeline, 20);
    pipeline.execute().await.unwrap();
    assert_eq!(twenty.into_result().unwrap(), "v1 of 20");
    assert_eq!(app.fetches(), 5);
}

#[cache_store(key = "near:<id>", ttl = "1m", stale_for = "1h", refresh_after = "30s", local)]
async fn near(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

/// Through a local tier: fresh values are served from process memory, a
/// due one refreshes its key in the background (and the tier then serves
/// the new value), and a stale one is served when its refetch fails.
async fn a_local_tier_serves_fresh_values_refreshes_ahead_and_fails_safe(app: App) {
    // The memory backend has no tier over it: it serves decoded values itself.
    let remote = app.cacheme().cache().provider() != "memory";
    assert_eq!(NearStore::get(&app, 30).await.unwrap(), "v1 of 30");
    if remote {
        // On Redis the tier serves once this client hears announcements.
        let client = app.cacheme().clone();
        let serving = async {
            while !client.local_tiers_serving() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("the tier serves");
        assert_eq!(NearStore::get(&app, 30).await.unwrap(), "v1 of 30");
    }
    assert_eq!(NearStore::get(&app, 30).await.unwrap(), "v1 of 30");
    let local_hits = app.cacheme().stats().store("NearStore").map_or(0, |s| s.local_hits);
    assert_eq!(local_hits >= 1, remote, "a get is a local hit over a remote backend");

    app.answer("v2");
    app.advance(Duration::from_secs(31));
    assert_eq!(
        NearStore::get(&app, 30).await.unwrap(),
        "v1 of 30",
        "due: answered at once"
    );
    app.until("v2 of 30", || NearStore::get(&app, 30)).await;
    assert_eq!(app.fetches(), 2);

    app.0.failing.store(true, Ordering::SeqCst);
    app.advance(MINUTE * 2);
    assert_eq!(
        NearStore::get(&app, 30).await.unwrap(),
        "v2 of 30",
        "stale, not the error"
    );
}

async fn shelves(ctx: &App, ids: Vec<u64>) -> Result<Vec<(u64, String)>, AppError> {
    ctx.0.batches.lock().unwrap().push(ids.len());
    let version = ctx.0.version.lock().unwrap().clone();
    Ok(ids.into_iter().map(|id| (id, format!("{version} of {id}"))).collect())
}

#[cache_store(key = "shelf:<id>", ttl = "1m", refresh_after = "30s", fetch_many = shelves)]
async fn shelf(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

/// Keys of a store with `fetch_many` that fall due together are refreshed
/// by its batch fetcher, in few calls (see below), never by the per-key
/// fetcher.
async fn due_keys_are_refreshed_through_fetch_many(app: App) {
    let ids = [41, 42, 43, 44, 45];
    let mut multi = ShelfStore::get_m(&app);
    multi.extend(ids);
    multi.run().await.into_all().unwrap();
    assert_eq!(*app.0.batches.lock().unwrap(), [5], "warmed by one batch");
    app.answer("v2");
    app.advance(Duration::from_secs(31));

    let due = futures_util::future::join_all(ids.map(|id| ShelfStore::get(&app, id))).await;
    assert!(
        due.iter().all(|got| got.as_deref().is_ok_and(|v| v.starts_with("v1"))),
        "{due:?}"
    );
    for id in ids {
        app.until(&format!("v2 of {id}"), || ShelfStore::get(&app, id)).await;
    }
    let batches = app.0.batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        10,
        "each key refreshed once: {batches:?}"
    );
    // A due key joins the batch when its read lands, and a batch closes
    // 10 ms after its first key. In memory the five reads land in one poll,
    // on a Redis server they travel together on one connection: one batch,
    // two if the machine stalls between them. Elsewhere each read is a
    // round trip of its own (a cluster node's connection, a pooled
    // memcached connection, a blocking file read) that a loaded machine
    // can delay past the window: there, not one batch per key.
    let most = match app.cacheme().cache().provider() {
        "memory" | "redis" => 2,
        _ => ids.len() - 1,
    };
    assert!(batches.len() - 1 <= most, "the due keys were batched: {batches:?}");
    assert_eq!(app.fetches(), 0, "the per-key fetcher was never called");
}

/// The last resort: the cache is down (its server stopped) and the source
/// fails; a value the local tier held within its stale end is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tier_serves_stale_when_the_cache_is_down_and_the_source_fails() {
    let mut server = RedisServer::start();
    let cache = Cache::open(&format!("{}?prefix=failsafe&timeout=200ms", server.url()))
        .await
        .unwrap();
    let clock = TestClock::new();
    let app = App::on(cache, clock, ());
    assert_eq!(NearStore::get(&app, 50).await.unwrap(), "v1 of 50");
    let client = app.cacheme().clone();
    let serving = async {
        while !client.local_tiers_serving() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("the tier serves");
    assert_eq!(NearStore::get(&app, 50).await.unwrap(), "v1 of 50");

    server.stop();
    app.0.failing.store(true, Ordering::SeqCst);
    app.advance(MINUTE * 2);
    for _ in 0..3 {
        assert_eq!(
            NearStore::get(&app, 50).await.unwrap(),
            "v1 of 50",
            "stale, from the tier"
        );
    }
    // Past its stale end, the error comes through.
    app.advance(Duration::from_secs(2 * 60 * 60));
    assert_eq!(NearStore::get(&app, 50).await, Err(AppError::Down));
    // A store without `stale_for` has no last resort.
    assert_eq!(SafeStore::get(&app, 51).await, Err(AppError::Down));
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
    a_missing_value_is_cached_for_none_ttl,
    a_value_lives_the_ttl_it_chose,
    batches_serve_stale_values_when_the_source_fails,
    a_local_tier_serves_fresh_values_refreshes_ahead_and_fails_safe,
    due_keys_are_refreshed_through_fetch_many,
);

// ---- fleets: three processes on one Redis (or cluster), real time ----
//
// A `TestClock` cannot be shared by processes, so these run on the system
// clock with TTLs of seconds; their bounds are counts with wide margins.

use cacheme_test_support::child::{self, expect_success};
use cacheme_test_support::{RedisCluster, RedisServer};
use std::time::Instant;

const FLEET_CACHE: &str = "CACHEME_FAIL_SAFE_CACHE";
const FLEET_SOURCE: &str = "CACHEME_FAIL_SAFE_SOURCE";
const FLEET_MODE: &str = "CACHEME_FAIL_SAFE_MODE";
/// How long a member runs after the fleet is told to go, in ms.
const FLEET_RUN: &str = "CACHEME_FAIL_SAFE_RUN";
/// How many members there are.
const MEMBERS: u64 = 3;

/// The fleet's source: a Redis server of its own counting fetches
/// (`fetches`), failing while `failing` is set, answering `v{n}`.
#[derive(Clone)]
struct Fleet {
    cache: Client,
    source: ::redis::aio::MultiplexedConnection,
}

impl Context for Fleet {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

impl Fleet {
    async fn new(cache_url: &str, source_url: &str) -> Fleet {
        let cache = if cache_url.starts_with('{') {
            Cache::new("redis-cluster", cache_url).await.unwrap()
        } else {
            Cache::open(cache_url).await.unwrap()
        };
        let source = ::redis::Client::open(source_url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Fleet {
            cache: Client::builder().cache(cache).build().unwrap(),
            source,
        }
    }

    async fn fetch(&self) -> Result<String, AppError> {
        let mut source = self.source.clone();
        let n: u64 = ::redis::cmd("INCR")
            .arg("fetches")
            .query_async(&mut source)
            .await
            .unwrap();
        // A slow source: callers that waited for it would be seen.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let failing: Option<u64> = ::redis::cmd("GET")
            .arg("failing")
            .query_async(&mut source)
            .await
            .unwrap();
        if failing == Some(1) {
            return Err(AppError::Down);
        }
        Ok(format!("v{n}"))
    }

    async fn fetches(&self) -> u64 {
        let mut source = self.source.clone();
        let n: Option<u64> = ::redis::cmd("GET")
            .arg("fetches")
            .query_async(&mut source)
            .await
            .unwrap();
        n.unwrap_or(0)
    }

    /// Polls the source's `key` (every 10 ms, for a minute at most) until
    /// it reaches `value`.
    async fn until(&self, key: &str, value: u64) {
        let mut source = self.source.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now: Option<u64> = ::redis::cmd("GET").arg(key).query_async(&mut source).await.unwrap();
            if now >= Some(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{key} never reached {value} (at {now:?})");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn incr(&self, key: &str) {
        let mut source = self.source.clone();
        let _: u64 = ::redis::cmd("INCR").arg(key).query_async(&mut source).await.unwrap();
    }

    async fn set(&self, key: &str, value: u64) {
        let mut source = self.source.clone();
        let _: () = ::redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut source)
            .await
            .unwrap();
    }
}

#[cache_store(key = "fleet-safe:<id>", ttl = "1s", stale_for = "1h", fail_safe_throttle = "2s")]
async fn fleet_safe(ctx: &Fleet, id: u64) -> Result<String, AppError> {
    let _ = id;
    ctx.fetch().await
}

#[cache_store(key = "fleet-ahead:<id>", ttl = "3s", refresh_after = "1s")]
async fn fleet_ahead(ctx: &Fleet, id: u64) -> Result<String, AppError> {
    let _ = id;
    ctx.fetch().await
}

/// A fleet member: 8 tasks getting key 1 in a loop until the end time;
/// every get must succeed, and (refresh mode) none may miss and the member
/// must be served a refreshed value (whichever process refreshed it: one
/// member may win no refresh at all). It is the fleet test run again as a
/// child ([`child::is_child`]).
async fn fleet_member() {
    let [cache, source, mode, run] = [FLEET_CACHE, FLEET_SOURCE, FLEET_MODE, FLEET_RUN]
        .map(|name| std::env::var(name).unwrap_or_else(|_| panic!("the fleet member's {name}")));
    let fleet = Fleet::new(&cache, &source).await;
    // Every member up (connected) before the parent warms the key and
    // says go: however long this process took to start, the run begins
    // with the value the parent wrote just now.
    fleet.incr("fleet-ready").await;
    fleet.until("fleet-go", 1).await;
    let end = Instant::now() + Duration::from_millis(run.parse().unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (fleet, mode) = (fleet.clone(), mode.clone());
            tokio::spawn(async move {
                let mut last = String::new();
                while Instant::now() < end {
                    let got = match mode.as_str() {
                        "fail-safe" => FleetSafeStore::get(&fleet, 1).await,
                        _ => FleetAheadStore::get(&fleet, 1).await,
                    };
                    last = got.unwrap_or_else(|error| panic!("a get failed: {error:?}"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                last
            })
        })
        .collect();
    let mut last_values = Vec::new();
    for task in tasks {
        last_values.push(task.await.unwrap());
    }
    if mode == "refresh" {
        let stats = fleet.cacheme().stats().store("FleetAheadStore").cloned().unwrap();
        assert_eq!(stats.misses, 0, "a caller waited for a fetch: {stats:?}");
        // The run lasts many refresh intervals: every task ends on a value
        // some process refreshed, not on the warm-up's.
        assert!(
            last_values.iter().all(|value| value != "v1"),
            "never served a refreshed value: {last_values:?} {stats:?}"
        );
    }
}

/// Runs [`MEMBERS`] fleet members in `mode` for `run`: once they are all
/// up, `before_go` runs, then they are told to go.
async fn run_fleet(
    fleet: &Fleet,
    cache_url: &str,
    source_url: &str,
    mode: &str,
    run: Duration,
    before_go: impl Future,
) {
    let members: Vec<_> = (0..MEMBERS)
        .map(|_| {
            child::this_test_again()
                .env(FLEET_CACHE, cache_url)
                .env(FLEET_SOURCE, source_url)
                .env(FLEET_MODE, mode)
                .env(FLEET_RUN, run.as_millis().to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    fleet.until("fleet-ready", MEMBERS).await;
    before_go.await;
    fleet.set("fleet-go", 1).await;
    for member in members {
        expect_success(member).await;
    }
}

/// The source fails after the value expired: every caller of three
/// processes gets the stale value, and the fleet asks the source about
/// once per throttle interval (2 s), not once per process or per caller.
async fn a_fleet_is_served_stale_and_spares_a_failing_source(cache_url: &str) {
    let source = RedisServer::start();
    let fleet = Fleet::new(cache_url, &source.url()).await;
    assert_eq!(FleetSafeStore::get(&fleet, 1).await.unwrap(), "v1");
    fleet.set("failing", 1).await;
    let run = Duration::from_secs(6);
    run_fleet(&fleet, cache_url, &source.url(), "fail-safe", run, async {}).await;
    // 1 warm-up + at most one per throttle interval (+1 at each edge).
    let failed = fleet.fetches().await - 1;
    assert!(
        (1..=6).contains(&failed),
        "{failed} fetches in {run:?} for a 2 s throttle"
    );
}

/// A hot key under constant traffic from three processes over 5 times its
/// TTL: no caller ever misses (so none waits for a fetch), and the fleet
/// refreshes it about once per `refresh_after`, not once per process.
async fn a_fleet_refreshes_a_hot_key_ahead_once(cache_url: &str) {
    let source = RedisServer::start();
    let fleet = Fleet::new(cache_url, &source.url()).await;
    let run = Duration::from_secs(15);
    // Warmed once the members are up, so the run starts on a new value.
    let warm = async { assert_eq!(FleetAheadStore::get(&fleet, 1).await.unwrap(), "v1") };
    run_fleet(&fleet, cache_url, &source.url(), "refresh", run, warm).await;
    // Every refresh takes >= 1.2 s (1 s of age + a 200 ms fetch): at most
    // ~13 for the fleet; three processes refreshing each would make ~36.
    let refreshes = fleet.fetches().await - 1;
    assert!((3..=18).contains(&refreshes), "{refreshes} refreshes in {run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_fleet_is_served_stale_and_spares_a_failing_source() {
    if child::is_child() {
        return fleet_member().await;
    }
    let server = RedisServer::start();
    a_fleet_is_served_stale_and_spares_a_failing_source(&format!("{}?prefix=fleet", server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_fleet_is_served_stale_and_spares_a_failing_source() {
    if child::is_child() {
        return fleet_member().await;
    }
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    a_fleet_is_served_stale_and_spares_a_failing_source(&cluster.config("fleet")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_fleet_refreshes_a_hot_key_ahead_once() {
    if child::is_child() {
        return fleet_member().await;
    }
    let server = RedisServer::start();
    a_fleet_refreshes_a_hot_key_ahead_once(&format!("{}?prefix=fleet", server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_fleet_refreshes_a_hot_key_ahead_once() {
    if child::is_child() {
        return fleet_member().await;
    }
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    a_fleet_refreshes_a_hot_key_ahead_once(&cluster.config("fleet")).await;
}
