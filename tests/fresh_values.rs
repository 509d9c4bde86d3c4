//! Writing and reading values the caller already has (`set`, `peek`),
//! per-key outcomes of `get_m`, and spread expiries (`ttl_jitter`), on
//! every backend: memory, a spawned Redis, a Redis cluster, memcached and
//! a temp-dir file cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cacheme::{Cache, Client, Context, cache_store};
use tokio::sync::{Notify, Semaphore};

#[derive(Clone, Debug, PartialEq)]
enum AppError {
    NotFound(u64),
}

/// The test's context: a client, a counting source, and a gate that holds
/// fetches of [`GATED`] until the test releases them.
struct App {
    cache: Client,
    fetches: Mutex<HashMap<u64, usize>>,
    /// Signalled when a gated fetch has started.
    started: Notify,
    /// A gated fetch waits for a permit.
    release: Semaphore,
    /// Keeps the backend's server or directory alive.
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

/// The id whose fetch fails.
const MISSING: u64 = 999;
/// The id whose fetch waits at the gate.
const GATED: u64 = 500;

impl App {
    fn on(cache: Cache, guard: impl std::any::Any + Send + Sync) -> App {
        App {
            cache: Client::builder().cache(cache).build().unwrap(),
            fetches: Mutex::default(),
            started: Notify::new(),
            release: Semaphore::new(0),
            _guard: Box::new(guard),
        }
    }

    async fn memory() -> App {
        App::on(Cache::open("memory://").await.unwrap(), ())
    }

    async fn redis() -> App {
        let server = cacheme_test_support::RedisServer::start();
        let cache = Cache::open(&format!("{}?prefix=fresh", server.url())).await.unwrap();
        App::on(cache, server)
    }

    async fn cluster() -> App {
        let cluster = cacheme_test_support::RedisCluster::builder()
            .masters(3)
            .replicas(0)
            .start();
        let cache = Cache::new("redis-cluster", &cluster.config("fresh")).await.unwrap();
        App::on(cache, cluster)
    }

    async fn memcache() -> App {
        let server = cacheme_test_support::MemcachedServer::start();
        let cache = Cache::open(&server.url()).await.unwrap();
        App::on(cache, server)
    }

    async fn file() -> App {
        let dir = cacheme_test_support::FileFixture::start();
        let cache = Cache::open(&format!("file://{}", dir.path().display())).await.unwrap();
        App::on(cache, dir)
    }

    fn fetched(&self, id: u64) -> usize {
        self.fetches.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    fn total_fetches(&self) -> usize {
        self.fetches.lock().unwrap().values().sum()
    }

    async fn source(&self, id: u64) -> Result<String, AppError> {
        *self.fetches.lock().unwrap().entry(id).or_default() += 1;
        if id == GATED {
            self.started.notify_one();
            self.release.acquire().await.unwrap().forget();
        }
        if id == MISSING {
            return Err(AppError::NotFound(id));
        }
        Ok(format!("fetched {id}"))
    }
}

#[cache_store(key = "title:<id>", ttl = "5m")]
async fn title(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

#[cache_store(key = "by-name:<name>", ttl = "5m")]
async fn by_name(ctx: &App, name: &str) -> Result<String, AppError> {
    ctx.source(name.len() as u64).await
}

#[cache_store(key = "spread:<id>", ttl = "100s", ttl_jitter = "10%")]
async fn spread(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
}

#[cache_store(key = "spread-span:<id>", ttl = "100s", ttl_jitter = "20s")]
async fn spread_span(ctx: &App, id: u64) -> Result<String, AppError> {
    ctx.source(id).await
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
    set_then_get_serves_the_set_value_without_a_fetch,
    peek_never_fetches,
    get_m_gives_each_key_its_own_outcome,
);

// Backends that coordinate fetches (every one but memory, whose fills are
// not fenced: see docs/cache_store.md) break the fetch lock on `set`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_fetch_wins_over_its_fill_on_redis() {
    set_during_a_fetch_wins_over_its_fill(App::redis().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_fetch_wins_over_its_fill_on_a_cluster() {
    set_during_a_fetch_wins_over_its_fill(App::cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_fetch_wins_over_its_fill_on_memcached() {
    set_during_a_fetch_wins_over_its_fill(App::memcache().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_fetch_wins_over_its_fill_on_files() {
    set_during_a_fetch_wins_over_its_fill(App::file().await).await;
}

// `Backend::ttl` is answered by memory and Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_ttls_spread_below_the_ttl_in_memory() {
    jittered_ttls_spread_below_the_ttl(App::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_ttls_spread_below_the_ttl_on_redis() {
    jittered_ttls_spread_below_the_ttl(App::redis().await).await;
}

async fn set_then_get_serves_the_set_value_without_a_fetch(app: App) {
    TitleStore::set(&app, 1, &"from the database".to_owned()).await.unwrap();
    assert_eq!(TitleStore::get(&app, 1).await.unwrap(), "from the database");
    assert_eq!(app.fetched(1), 0, "set then get: no fetch");

    // Over an existing value too.
    assert_eq!(TitleStore::get(&app, 2).await.unwrap(), "fetched 2");
    // The fill is written off the caller's path: let it land first.
    app.cache.flush().await;
    TitleStore::set(&app, 2, &"renamed".to_owned()).await.unwrap();
    assert_eq!(TitleStore::get(&app, 2).await.unwrap(), "renamed");
    assert_eq!(app.fetched(2), 1);

    // A store with a borrowed parameter has them too.
    ByNameStore::set(&app, "ann", &"set".to_owned()).await.unwrap();
    assert_eq!(ByNameStore::peek(&app, "ann").await.unwrap().as_deref(), Some("set"));
    assert_eq!(ByNameStore::get(&app, "ann").await.unwrap(), "set");
    assert_eq!(app.fetched(3), 0);
}

async fn peek_never_fetches(app: App) {
    assert_eq!(TitleStore::peek(&app, 3).await.unwrap(), None);
    assert_eq!(app.total_fetches(), 0, "a missing key is not fetched");
    assert_eq!(TitleStore::get(&app, 3).await.unwrap(), "fetched 3");
    // The fill is written off the caller's path.
    app.cache.flush().await;
    assert_eq!(TitleStore::peek(&app, 3).await.unwrap().as_deref(), Some("fetched 3"));
    TitleStore::set(&app, 3, &"set".to_owned()).await.unwrap();
    assert_eq!(TitleStore::peek(&app, 3).await.unwrap().as_deref(), Some("set"));
    TitleStore::invalidate(&app, 3).await.unwrap();
    assert_eq!(TitleStore::peek(&app, 3).await.unwrap(), None);
    assert_eq!(app.fetched(3), 1);
}

async fn get_m_gives_each_key_its_own_outcome(app: App) {
    let found = TitleStore::get_m(&app).add(1).add(MISSING).add(2).add(1).run().await;
    assert_eq!(found.len(), 4);
    assert_eq!(found.distinct(), 3);
    assert_eq!(found.get(&MISSING), Some(&Err(AppError::NotFound(MISSING))));
    assert_eq!(found.value(&1).map(String::as_str), Some("fetched 1"));
    assert_eq!(
        found.oks().map(String::as_str).collect::<Vec<_>>(),
        ["fetched 1", "fetched 2", "fetched 1"],
        "in added order, duplicates included"
    );
    assert_eq!(found.errs().collect::<Vec<_>>(), [&AppError::NotFound(MISSING)]);
    assert!(!found.all_ok());
    assert_eq!(found.into_all().unwrap_err(), AppError::NotFound(MISSING));
    app.cache.flush().await;

    // The found keys were cached; the failing one was not.
    assert_eq!(TitleStore::get(&app, 1).await.unwrap(), "fetched 1");
    assert_eq!(TitleStore::get(&app, 2).await.unwrap(), "fetched 2");
    assert_eq!((app.fetched(1), app.fetched(2), app.fetched(MISSING)), (1, 1, 1));
    let again = TitleStore::get_m(&app).add(2).add(1).run().await.into_all().unwrap();
    assert_eq!(again.iter().cloned().collect::<Vec<_>>(), ["fetched 2", "fetched 1"]);
    assert_eq!((app.fetched(1), app.fetched(2)), (1, 1), "warm: no fetch");
}

async fn set_during_a_fetch_wins_over_its_fill(app: App) {
    let get = TitleStore::get(&app, GATED);
    let write = async {
        app.started.notified().await;
        TitleStore::set(&app, GATED, &"set meanwhile".to_owned()).await.unwrap();
        app.release.add_permits(1);
    };
    let (got, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(get, write) })
        .await
        .expect("the gated fetch was released");
    assert_eq!(got.unwrap(), "fetched 500", "the caller gets its own fetch");
    // The fill is written off the caller's path: wait for it.
    app.cache.flush().await;
    assert_eq!(
        TitleStore::peek(&app, GATED).await.unwrap().as_deref(),
        Some("set meanwhile"),
        "the fill started before the set did not land over it"
    );
    assert_eq!(app.fetched(GATED), 1);
}

/// The TTLs left on `keys`' stored values, through `Backend::ttl`.
async fn ttls_left(app: &App, keys: impl IntoIterator<Item = String>) -> Vec<Duration> {
    let backend = app.cache.cache().backend();
    let mut left = Vec::new();
    for key in keys {
        let ttl = backend.ttl(&key).await.unwrap().expect("stored").expect("with a TTL");
        left.push(ttl);
    }
    left
}

/// Every TTL within `[ttl - spread - slack, ttl]`, and not all the same.
fn assert_spread(left: &[Duration], ttl: Duration, spread: Duration) {
    // Generous slack for a loaded machine between the write and the read.
    let lowest = ttl - spread - Duration::from_secs(5);
    assert!(
        left.iter().all(|d| *d <= ttl && *d >= lowest),
        "every TTL within [{lowest:?}, {ttl:?}]: {left:?}"
    );
    let (min, max) = (left.iter().min().unwrap(), left.iter().max().unwrap());
    assert!(*max - *min > spread / 4, "the TTLs are spread: {min:?} to {max:?}");
}

async fn jittered_ttls_spread_below_the_ttl(app: App) {
    let ttl = Duration::from_secs(100);
    // Every write path: get (miss), get_m (batch), set, update.
    for id in 0..20 {
        SpreadStore::get(&app, id).await.unwrap();
    }
    let mut many = SpreadStore::get_m(&app);
    many.extend(20..40);
    assert!(many.run().await.all_ok());
    for id in 40..50 {
        SpreadStore::set(&app, id, &"set".to_owned()).await.unwrap();
    }
    for id in 50..60 {
        SpreadStore::update(&app, id).await.unwrap();
    }
    app.cache.flush().await;
    let left = ttls_left(&app, (0..60).map(|id| SpreadStore::key(&id))).await;
    assert_spread(&left, ttl, Duration::from_secs(10));
    for range in [0..20, 20..40, 40..50, 50..60] {
        assert_spread(
            &left[range.start as usize..range.end as usize],
            ttl,
            Duration::from_secs(10),
        );
    }

    for id in 0..30 {
        SpreadSpanStore::get(&app, id).await.unwrap();
    }
    app.cache.flush().await;
    let left = ttls_left(&app, (0..30).map(|id| SpreadSpanStore::key(&id))).await;
    assert_spread(&left, ttl, Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_of_an_undecodable_value_is_none_and_of_a_dead_cache_an_error() {
    let mut server = cacheme_test_support::RedisServer::start();
    let app = App::on(Cache::open(&server.url()).await.unwrap(), ());
    // Bytes of another type under the key: a String whose length (64)
    // runs past its end.
    let key = TitleStore::key(&9);
    app.cache.cache().put_forever(&key, b"\x40abc").await.unwrap();
    assert_eq!(TitleStore::peek(&app, 9).await.unwrap(), None);
    assert_eq!(app.total_fetches(), 0);
    assert!(
        app.cache.cache().backend().get(&key).await.unwrap().is_some(),
        "peek leaves the bad bytes to the next get"
    );

    server.stop();
    assert!(TitleStore::peek(&app, 9).await.is_err(), "no source to fall back on");
    assert_eq!(app.total_fetches(), 0);
}
