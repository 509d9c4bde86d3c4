//! Bad data and a failing source, on every backend against real servers:
//! a value that no longer decodes is a miss for every step (the lock
//! included), misses coalesce in the process without `singleflight`, a
//! failing source sees one call per failure, and a fill the server refuses
//! releases its lock at once. Fetches are counted by the test's source.
//!
//! Time bounds here are far below what the defect they guard against
//! costs (a stall of `lock_ttl` or more, 10 s by default), and far above
//! what a loaded machine needs, so they cannot flake.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, Pipeline, cache_store};
use cacheme_test_support::child::{self, expect_success, sleep_until_unix_ms, unix_ms};
use cacheme_test_support::{FileFixture, MemcachedServer, RedisCluster, RedisServer};
use serde::{Deserialize, Serialize};

/// Much less than the stall a bad value or a held lock causes (at least
/// `lock_ttl`, 10 s), much more than a loaded machine needs.
const PROMPT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u32,
    name: String,
    tags: Vec<String>,
}

fn item_of(id: u32) -> Item {
    Item {
        id,
        name: format!("item {id}"),
        tags: vec!["fresh".to_owned()],
    }
}

/// An error type that is not `Clone`: cannot be handed to followers.
#[derive(Debug, PartialEq)]
struct Opaque(String);

struct App {
    client: Client,
    fetches: AtomicUsize,
    /// Fetches fail while set.
    failing: bool,
    fetch_time: Duration,
    /// Appends a line per fetch when set (counted across processes).
    log: Option<PathBuf>,
    /// Size of the `big` store's values.
    big: usize,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

impl App {
    fn new(client: Client, guard: impl Any + Send + Sync) -> App {
        App {
            client,
            fetches: AtomicUsize::new(0),
            failing: false,
            fetch_time: Duration::from_millis(20),
            log: None,
            big: 0,
            _guard: Box::new(guard),
        }
    }

    fn fetched(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    async fn source(&self) {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if let Some(log) = &self.log {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            file.write_all(format!("{}\n", std::process::id()).as_bytes()).unwrap();
        }
        tokio::time::sleep(self.fetch_time).await;
    }

    /// Where a store key is stored: backends that cannot list keys add the
    /// store's generation (`:g0` until an `invalidate_all`).
    fn at(&self, key: &str) -> String {
        if self.client.cache().backend().supports_delete_matching() {
            key.to_owned()
        } else {
            format!("{key}:g0")
        }
    }

    /// Writes `bytes` where the store keeps `key`.
    async fn plant(&self, key: &str, bytes: &[u8]) {
        let backend = self.client.cache().backend();
        backend
            .set(&self.at(key), bytes, Some(Duration::from_secs(60)))
            .await
            .unwrap();
    }

    async fn stored(&self, key: &str) -> Option<Vec<u8>> {
        self.client.cache().backend().get(&self.at(key)).await.unwrap()
    }
}

#[cache_store(key = "item:<id>", ttl = "1m")]
async fn item(ctx: &App, id: u32) -> Result<Item, String> {
    ctx.source().await;
    if ctx.failing {
        return Err("the source is down".to_owned());
    }
    Ok(item_of(id))
}

#[cache_store(key = "opaque:<id>", ttl = "1m")]
async fn opaque(ctx: &App, id: u32) -> Result<Item, Opaque> {
    ctx.source().await;
    if ctx.failing {
        return Err(Opaque("the source is down".to_owned()));
    }
    Ok(item_of(id))
}

#[cache_store(key = "big:<id>", ttl = "1m")]
async fn big(ctx: &App, id: u32) -> Result<String, String> {
    ctx.source().await;
    Ok(format!("{id}").repeat(ctx.big))
}

async fn memory() -> App {
    App::new(Client::memory().unwrap(), ())
}

async fn redis() -> App {
    let server = RedisServer::start();
    App::new(Client::open(&server.url()).await.unwrap(), server)
}

async fn cluster() -> App {
    let cluster = RedisCluster::start();
    App::new(Client::open(&cluster.url()).await.unwrap(), cluster)
}

async fn memcache() -> App {
    let server = MemcachedServer::start();
    App::new(Client::open(&server.url()).await.unwrap(), server)
}

async fn file() -> App {
    let dir = FileFixture::start();
    let cache = Cache::open(&format!("file://{}", dir.path().display())).await.unwrap();
    App::new(Client::builder().cache(cache).build().unwrap(), dir)
}

/// Bytes that do not decode as an `Item` in bincode: JSON of an older
/// shape, nothing at all, a truncated value.
const GARBAGE: [&[u8]; 3] = [br#"{"id":1,"title":"old shape"}"#, b"", &[3, 0]];

/// Every backend runs every scenario.
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod on_memory { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $scenario() { super::$scenario(super::memory().await).await })* }
        mod on_redis { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $scenario() { super::$scenario(super::redis().await).await })* }
        mod on_redis_cluster { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $scenario() { super::$scenario(super::cluster().await).await })* }
        mod on_memcached { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $scenario() { super::$scenario(super::memcache().await).await })* }
        mod on_file { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $scenario() { super::$scenario(super::file().await).await })* }
    };
}

on_every_backend!(
    an_undecodable_value_is_refetched_at_once_by_get_get_m_and_pipelines,
    a_hundred_gets_of_a_cold_key_fetch_once_without_singleflight,
    a_failing_source_is_called_once_for_a_hundred_callers,
);

async fn an_undecodable_value_is_refetched_at_once_by_get_get_m_and_pipelines(app: App) {
    for (n, garbage) in GARBAGE.iter().enumerate() {
        let base = 10 * n as u32;
        // get
        app.plant(&ItemStore::key(&base), garbage).await;
        let before = app.fetched();
        let started = Instant::now();
        assert_eq!(ItemStore::get(&app, base).await.unwrap(), item_of(base));
        assert!(started.elapsed() < PROMPT, "get took {:?}", started.elapsed());
        assert_eq!(app.fetched(), before + 1, "one fetch for the bad value");
        assert_ne!(app.stored(&ItemStore::key(&base)).await.as_deref(), Some(*garbage));
        assert_eq!(ItemStore::get(&app, base).await.unwrap(), item_of(base));
        assert_eq!(app.fetched(), before + 1, "the fresh value replaced it");

        // get_m: two bad values and a good one
        for id in [base + 1, base + 2] {
            app.plant(&ItemStore::key(&id), garbage).await;
        }
        let before = app.fetched();
        let started = Instant::now();
        let mut batch = ItemStore::get_m(&app);
        batch = batch.add(base + 1).add(base + 2).add(base);
        let found = batch.run().await.into_all().unwrap();
        assert!(started.elapsed() < PROMPT, "get_m took {:?}", started.elapsed());
        let values: Vec<Item> = found.iter().cloned().collect();
        assert_eq!(values, vec![item_of(base + 1), item_of(base + 2), item_of(base)]);
        assert_eq!(app.fetched(), before + 2, "one fetch per bad value");

        // a pipeline
        app.plant(&ItemStore::key(&(base + 3)), garbage).await;
        let before = app.fetched();
        let started = Instant::now();
        let mut pipeline = Pipeline::new();
        let promise = ItemStore::get_p(&app, &mut pipeline, base + 3);
        pipeline.execute().await.unwrap();
        assert_eq!(promise.into_result().unwrap(), item_of(base + 3));
        assert!(started.elapsed() < PROMPT, "the pipeline took {:?}", started.elapsed());
        assert_eq!(app.fetched(), before + 1);
    }
}

async fn a_hundred_gets_of_a_cold_key_fetch_once_without_singleflight(app: App) {
    let app = Arc::new(app);
    let gets: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { ItemStore::get(&app, 7).await })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap(), item_of(7));
    }
    assert_eq!(app.fetched(), 1, "100 concurrent gets of a cold key fetch once");
}

/// 100 concurrent callers of a key whose source fails: they share the
/// failure (the store's error is `Clone`) instead of calling the source
/// one after another; 100 calls in a row would take 100 x 100 ms.
async fn a_failing_source_is_called_once_for_a_hundred_callers(app: App) {
    let app = Arc::new(App {
        failing: true,
        fetch_time: Duration::from_millis(100),
        ..app
    });
    let started = Instant::now();
    let gets: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { ItemStore::get(&app, 3).await })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap_err(), "the source is down");
    }
    let fetches = app.fetched();
    assert!(fetches <= 3, "{fetches} fetches for one failing key");
    assert!(started.elapsed() < PROMPT, "the callers took {:?}", started.elapsed());
}

/// With an error that cannot be shared, followers of a failed fetch each
/// fetch once, together: bounded time, not one caller after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_of_an_unshareable_failure_fetch_together() {
    let app = Arc::new(App {
        failing: true,
        fetch_time: Duration::from_millis(200),
        ..redis().await
    });
    let started = Instant::now();
    let gets: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { OpaqueStore::get(&app, 3).await })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap_err(), Opaque("the source is down".to_owned()));
    }
    // One after another: 50 x 200 ms = 10 s.
    assert!(started.elapsed() < PROMPT, "the callers took {:?}", started.elapsed());
    assert!(app.fetched() <= 51);
}

/// A cache whose generation cannot be read (memcached down) still makes
/// one fetch per key in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_coalesce_when_the_generation_cannot_be_read() {
    let mut server = MemcachedServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    server.stop();
    let app = Arc::new(App::new(client, ()));
    let gets: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { ItemStore::get(&app, 5).await })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap(), item_of(5));
    }
    assert_eq!(app.fetched(), 1);
    drop(server);
}

// ---- a fill the server refuses releases the lock ----

/// The first get's fill is refused; a second client (another process's
/// view) must not wait for the lock the first one took.
async fn a_refused_fill_leaves_no_lock(first: App, second: App) {
    let first = App { big: 1 << 20, ..first };
    let second = App { big: 1 << 20, ..second };
    let value = BigStore::get(&first, 1).await.unwrap();
    assert_eq!(value.len(), 1 << 20);
    // The refused fill closed the connection; its release reconnects.
    first.client.flush().await;
    assert_eq!(first.stored(&BigStore::key(&1)).await, None, "the fill was refused");
    let started = Instant::now();
    assert_eq!(BigStore::get(&second, 1).await.unwrap().len(), 1 << 20);
    assert!(
        started.elapsed() < PROMPT,
        "the next get waited {:?} for a lock left behind",
        started.elapsed()
    );
    assert_eq!(second.fetched(), 1);

    // The same through the batch path.
    let found = BigStore::get_m(&first).add(2).run().await.into_all().unwrap();
    assert_eq!(found.get(&2).map(String::len), Some(1 << 20));
    let started = Instant::now();
    let found = BigStore::get_m(&second).add(2).run().await.into_all().unwrap();
    assert_eq!(found.get(&2).map(String::len), Some(1 << 20));
    assert!(
        started.elapsed() < PROMPT,
        "the next get_m waited {:?} for a lock left behind",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_over_memcacheds_item_size_leaves_no_lock() {
    let server = MemcachedServer::builder().item_size("1m").start();
    let first = App::new(Client::open(&server.url()).await.unwrap(), ());
    let second = App::new(Client::open(&server.url()).await.unwrap(), server);
    a_refused_fill_leaves_no_lock(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_over_redis_proto_max_bulk_len_leaves_no_lock() {
    let server = RedisServer::builder().args(["--proto-max-bulk-len", "1mb"]).start();
    let first = App::new(Client::open(&server.url()).await.unwrap(), ());
    let second = App::new(Client::open(&server.url()).await.unwrap(), server);
    a_refused_fill_leaves_no_lock(first, second).await;
}

// ---- a failing source across processes ----

const URL: &str = "CACHEME_BAD_DATA_URL";
const LOG: &str = "CACHEME_BAD_DATA_LOG";
const START_AT: &str = "CACHEME_BAD_DATA_START_AT";

/// A child process (the fleet test run again as a child,
/// [`child::is_child`]): 30 concurrent gets of a key whose source fails.
async fn child_of_a_failing_fleet() {
    let [url, log, start_at] =
        [URL, LOG, START_AT].map(|name| std::env::var(name).unwrap_or_else(|_| panic!("the child's {name}")));
    let app = Arc::new(App {
        failing: true,
        fetch_time: Duration::from_millis(100),
        log: Some(PathBuf::from(log)),
        ..App::new(Client::open(&url).await.unwrap(), ())
    });
    sleep_until_unix_ms(start_at.parse().unwrap()).await;
    let started = Instant::now();
    let gets: Vec<_> = (0..30)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { ItemStore::get(&app, 1).await })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap_err(), "the source is down");
    }
    assert!(
        started.elapsed() < PROMPT,
        "this process's callers took {:?}",
        started.elapsed()
    );
}

fn fetch_count(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_of_thirty_callers_spare_a_failing_source() {
    if child::is_child() {
        return child_of_a_failing_fleet().await;
    }
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fetches");
    let start_at = unix_ms() + 1500;
    let children: Vec<_> = (0..3)
        .map(|_| {
            child::this_test_again()
                .env(URL, server.url())
                .env(LOG, &log)
                .env(START_AT, start_at.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        expect_success(child).await;
    }
    let fetches = fetch_count(&log);
    // At most one call per process per failure; one caller after another
    // would make 90.
    assert!((1..=6).contains(&fetches), "{fetches} fetches for 3 x 30 callers");
}
