//! Hot keys served from process memory: `singleflight` coalesces whole
//! gets (one backend read per key in flight), invalidations are exact in
//! the process, the memory backend decodes a value once, and the local
//! tier serves hits without a round trip and stays coherent across
//! processes (announcements over pub/sub), even when its push connection
//! is killed or the server restarts.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, LocalTier, Pipeline, cache_store};
use cacheme_test_support::child::{self, expect_success};
use cacheme_test_support::{RedisCluster, RedisServer, SentCommands};
use futures_util::FutureExt;
use futures_util::future::join_all;
use serde::{Deserialize, Deserializer, Serialize};

/// How many times a value of [`Counted`] was decoded, in this process.
static DECODED: AtomicUsize = AtomicUsize::new(0);

/// A value that counts its decodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(deserializer).map(Counted)
    }
}

/// The source of truth: a version per id, in memory or (shared by
/// several processes) in a Redis server of its own.
enum Db {
    Memory(Mutex<HashMap<u32, u64>>),
    Redis(redis::aio::MultiplexedConnection),
}

struct App {
    cache: Client,
    db: Db,
    fetches: AtomicUsize,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

impl App {
    fn new(cache: Client) -> Self {
        App {
            cache,
            db: Db::Memory(Mutex::default()),
            fetches: AtomicUsize::new(0),
        }
    }

    async fn version(&self, id: u32) -> u64 {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        match &self.db {
            Db::Memory(map) => map.lock().unwrap().get(&id).copied().unwrap_or(0),
            Db::Redis(connection) => {
                let found: Option<u64> = redis::cmd("GET")
                    .arg(format!("source:{id}"))
                    .query_async(&mut connection.clone())
                    .await
                    .unwrap();
                found.unwrap_or(0)
            }
        }
    }

    fn set_version(&self, id: u32, version: u64) {
        match &self.db {
            Db::Memory(map) => {
                map.lock().unwrap().insert(id, version);
            }
            Db::Redis(_) => unreachable!("the shared source is written by the test"),
        }
    }
}

#[cache_store(key = "warm:<id>", ttl = "1m", singleflight)]
async fn warm(ctx: &App, id: u32) -> Result<Counted, String> {
    Ok(Counted(ctx.version(id).await))
}

#[cache_store(key = "plain:<id>", ttl = "1m")]
async fn plain(ctx: &App, id: u32) -> Result<Counted, String> {
    Ok(Counted(ctx.version(id).await))
}

#[cache_store(key = "near:<id>", ttl = "1m", local(capacity = 1000, ttl = "30s"))]
async fn near(ctx: &App, id: u32) -> Result<Counted, String> {
    Ok(Counted(ctx.version(id).await))
}

#[cache_store(key = "volatile:<id>", ttl = "1m", local = false)]
async fn volatile(ctx: &App, id: u32) -> Result<Counted, String> {
    Ok(Counted(ctx.version(id).await))
}

/// How many times `command` was called, from `INFO commandstats`.
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// `GET` calls: a store's single reads.
async fn gets(server: &RedisServer) -> u64 {
    calls(server, "get").await
}

async fn redis_app(server: &RedisServer) -> App {
    App::new(Client::open(&server.url()).await.unwrap())
}

/// Polls `future` once (it then has its read in flight, or is done).
fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    future.now_or_never()
}

#[tokio::test]
async fn singleflight_reads_a_warm_key_once_for_a_hundred_concurrent_gets_on_redis() {
    let server = RedisServer::start();
    let app = redis_app(&server).await;
    app.set_version(1, 7);
    assert_eq!(WarmStore::get(&app, 1).await, Ok(Counted(7)));
    assert_eq!(PlainStore::get(&app, 1).await, Ok(Counted(7)));
    app.cache.flush().await;

    let before = gets(&server).await;
    let values = join_all((0..100).map(|_| WarmStore::get(&app, 1))).await;
    assert!(values.iter().all(|v| v == &Ok(Counted(7))), "{values:?}");
    assert_eq!(gets(&server).await - before, 1, "one GET for 100 concurrent gets");

    let before = gets(&server).await;
    let values = join_all((0..100).map(|_| PlainStore::get(&app, 1))).await;
    assert!(values.iter().all(|v| v == &Ok(Counted(7))), "{values:?}");
    assert_eq!(
        gets(&server).await - before,
        100,
        "without singleflight every get reads"
    );
    assert_eq!(app.fetches.load(Ordering::SeqCst), 2, "warm keys are not fetched");
}

#[tokio::test]
async fn singleflight_reads_a_warm_key_once_for_a_hundred_concurrent_gets_on_a_cluster() {
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let cache = Cache::new("redis-cluster", &cluster.config("hot")).await.unwrap();
    let app = App::new(Client::builder().cache(cache).build().unwrap());
    app.set_version(1, 7);
    assert_eq!(WarmStore::get(&app, 1).await, Ok(Counted(7)));
    app.cache.flush().await;

    let mut sent = SentCommands::new(&cluster);
    let (values, calls) = sent.of(join_all((0..100).map(|_| WarmStore::get(&app, 1)))).await;
    assert!(values.iter().all(|v| v == &Ok(Counted(7))), "{values:?}");
    let total: u64 = calls.values().filter_map(|node| node.get("get")).sum();
    assert_eq!(total, 1, "one GET for 100 concurrent gets: {calls:?}");
}

/// Decodes of [`Shared`] values, in this process.
static SHARED_DECODED: AtomicUsize = AtomicUsize::new(0);

/// A value that counts its decodes, used by one test only.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Shared(u64);

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SHARED_DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(deserializer).map(Shared)
    }
}

#[cache_store(key = "shared:<id>", ttl = "1m", singleflight)]
async fn shared(ctx: &App, id: u32) -> Result<Shared, String> {
    Ok(Shared(ctx.version(id).await))
}

#[tokio::test]
async fn singleflight_followers_take_the_leaders_decoded_value() {
    let server = RedisServer::start();
    let app = redis_app(&server).await;
    app.set_version(1, 9);
    assert_eq!(SharedStore::get(&app, 1).await, Ok(Shared(9)));
    app.cache.flush().await;

    let before = (gets(&server).await, SHARED_DECODED.load(Ordering::SeqCst));
    let values = join_all((0..100).map(|_| SharedStore::get(&app, 1))).await;
    assert!(values.iter().all(|v| v == &Ok(Shared(9))), "{values:?}");
    assert_eq!(gets(&server).await - before.0, 1, "one GET for 100 concurrent gets");
    // The leader decodes what it read; its 99 followers clone its value.
    let decoded = SHARED_DECODED.load(Ordering::SeqCst) - before.1;
    assert_eq!(decoded, 1, "100 coalesced gets decoded {decoded} times");
}

/// Decodes of [`SharedInBatches`] values, in this process.
static BATCH_DECODED: AtomicUsize = AtomicUsize::new(0);

/// A value that counts its decodes, used by one test only.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct SharedInBatches(u64);

impl<'de> Deserialize<'de> for SharedInBatches {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BATCH_DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(deserializer).map(SharedInBatches)
    }
}

#[cache_store(key = "shared-in-batches:<id>", ttl = "1m", singleflight)]
async fn shared_in_batches(ctx: &App, id: u32) -> Result<SharedInBatches, String> {
    Ok(SharedInBatches(ctx.version(id).await))
}

/// `get_m` and pipeline entries that follow a single get's read of a key
/// take its decoded value too, as single-get followers do.
#[tokio::test]
async fn batches_following_a_read_take_the_leaders_decoded_value() {
    let server = RedisServer::start();
    let app = redis_app(&server).await;
    app.set_version(1, 7);
    assert_eq!(SharedInBatchesStore::get(&app, 1).await, Ok(SharedInBatches(7)));
    app.cache.flush().await;

    let before = (gets(&server).await, BATCH_DECODED.load(Ordering::SeqCst));
    // The single get is polled first: it leads the read, the batches
    // find its flight and follow it.
    let led = SharedInBatchesStore::get(&app, 1);
    let batches = join_all((0..20).map(|_| async {
        let batch = SharedInBatchesStore::get_m(&app).add(1).add(1).run().await;
        batch.oks().map(|v| v.0).collect::<Vec<_>>()
    }));
    let pipelines = join_all((0..20).map(|_| async {
        let mut pipeline = Pipeline::new();
        let promise = SharedInBatchesStore::get_p(&app, &mut pipeline, 1);
        pipeline.execute().await.unwrap();
        promise.into_result().unwrap()
    }));
    let (led, batches, pipelines) = tokio::join!(led, batches, pipelines);
    assert_eq!(led, Ok(SharedInBatches(7)));
    assert!(batches.iter().all(|b| b == &[7, 7]), "{batches:?}");
    assert!(pipelines.iter().all(|v| v == &SharedInBatches(7)), "{pipelines:?}");
    assert_eq!(
        gets(&server).await - before.0,
        1,
        "one GET for the get and its followers"
    );
    let decoded = BATCH_DECODED.load(Ordering::SeqCst) - before.1;
    assert_eq!(decoded, 1, "a read followed by 40 batches decoded {decoded} times");
}

type Get = for<'a> fn(&'a App, u32) -> Pin<Box<dyn Future<Output = Result<Counted, String>> + 'a>>;
type Write = for<'a> fn(&'a App, u32) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Gets racing an `invalidate` in one process: a get that starts after the
/// invalidation returned never gets the value read before it, and the
/// flight that read it does not keep it in the local tier.
async fn an_invalidation_is_exact_in_the_process(app: &App, get: Get, update: Write, invalidate: Write) {
    for round in 1..=20u64 {
        let id = 100 + round as u32;
        app.set_version(id, round);
        // In the cache (not in the local tier: `update` drops it there).
        update(app, id).await;
        // A get in flight: it has sent its read of the old value.
        let mut early = get(app, id);
        assert!(poll_once(&mut early).is_none(), "round {round}: the read is in flight");
        app.set_version(id, round + 1000);
        invalidate(app, id).await;
        // Joining the early flight would wait for it (it is not polled):
        // a get after the invalidation must not.
        let late = tokio::time::timeout(Duration::from_secs(10), get(app, id))
            .await
            .unwrap_or_else(|_| panic!("round {round}: a get after invalidate joined the flight begun before"));
        assert_eq!(late, Ok(Counted(round + 1000)), "round {round}: a get after invalidate");
        // The early get may return the old value: it started before.
        early.await.unwrap();
        assert_eq!(
            get(app, id).await,
            Ok(Counted(round + 1000)),
            "round {round}: the old value was not kept"
        );
    }
}

#[tokio::test]
async fn gets_racing_an_invalidate_never_see_the_old_value_afterwards_on_redis() {
    let server = RedisServer::start();
    let app = redis_app(&server).await;
    an_invalidation_is_exact_in_the_process(
        &app,
        |app, id| Box::pin(WarmStore::get(app, id)),
        |app, id| {
            Box::pin(async move {
                WarmStore::update(app, id).await.unwrap();
            })
        },
        |app, id| Box::pin(async move { WarmStore::invalidate(app, id).await.unwrap() }),
    )
    .await;
    NearStore::get(&app, 1).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    an_invalidation_is_exact_in_the_process(
        &app,
        |app, id| Box::pin(NearStore::get(app, id)),
        |app, id| {
            Box::pin(async move {
                NearStore::update(app, id).await.unwrap();
            })
        },
        |app, id| Box::pin(async move { NearStore::invalidate(app, id).await.unwrap() }),
    )
    .await;
}

#[tokio::test]
async fn the_memory_backend_decodes_a_value_once() {
    let app = App::new(Client::memory().unwrap());
    app.set_version(1, 3);
    assert_eq!(PlainStore::get(&app, 1).await, Ok(Counted(3)));
    let before = DECODED.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(PlainStore::get(&app, 1).await, Ok(Counted(3)));
    }
    // Tests of this binary run in parallel: only this key's decodes count
    // here, and other tests decode other keys; so bound it, not equal it.
    let decoded = DECODED.load(Ordering::SeqCst) - before;
    assert!(decoded <= 1, "10 hits decoded {decoded} times");
    // A write replaces the decoded value with its bytes.
    app.set_version(1, 4);
    PlainStore::update(&app, 1).await.unwrap();
    assert_eq!(PlainStore::get(&app, 1).await, Ok(Counted(4)));
}

#[tokio::test]
async fn the_local_tier_serves_hits_without_a_round_trip() {
    let server = RedisServer::start();
    let app = redis_app(&server).await;
    app.set_version(1, 5);
    // The tier serves once the announcements are heard.
    NearStore::get(&app, 1).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    assert_eq!(NearStore::get(&app, 1).await, Ok(Counted(5)));
    assert_eq!(app.cache.local_entries(), 1);
    let before = gets(&server).await;
    for _ in 0..50 {
        assert_eq!(NearStore::get(&app, 1).await, Ok(Counted(5)));
    }
    assert_eq!(gets(&server).await - before, 0, "hits never leave the process");
    app.set_version(1, 6);
    NearStore::update(&app, 1).await.unwrap();
    assert_eq!(
        NearStore::get(&app, 1).await,
        Ok(Counted(6)),
        "update drops the local value"
    );
}

/// A client's default tier holds every store's values but those of a
/// store declared with `local = false`: each get of that store reads
/// Redis, while the store without `local` is served in process.
#[tokio::test]
async fn a_store_with_local_false_is_left_out_of_the_default_tier() {
    let server = RedisServer::start();
    let cache = Cache::open(&server.url()).await.unwrap();
    let app = App::new(
        Client::builder()
            .cache(cache)
            .local(LocalTier::new(100))
            .build()
            .unwrap(),
    );
    app.set_version(1, 5);
    PlainStore::get(&app, 1).await.unwrap();
    VolatileStore::get(&app, 1).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    assert_eq!(PlainStore::get(&app, 1).await, Ok(Counted(5)));
    assert_eq!(
        app.cache.local_entries(),
        1,
        "the default tier holds PlainStore's value"
    );

    let before = gets(&server).await;
    for _ in 0..10 {
        assert_eq!(PlainStore::get(&app, 1).await, Ok(Counted(5)));
        assert_eq!(VolatileStore::get(&app, 1).await, Ok(Counted(5)));
    }
    assert_eq!(
        gets(&server).await - before,
        10,
        "one GET per VolatileStore get, none for PlainStore"
    );
    assert_eq!(app.cache.local_entries(), 1, "nothing of VolatileStore is held");
    let stats = app.cache.stats();
    let (plain, volatile) = (
        stats.store("PlainStore").unwrap(),
        stats.store("VolatileStore").unwrap(),
    );
    assert!(plain.local_hits >= 10, "{plain:?}");
    assert_eq!((volatile.local_hits, volatile.hits), (0, 10), "{volatile:?}");
}

/// Values of about 1,000 bytes, in a tier bounded by 1,000 values and
/// 20,000 bytes: the bytes bind.
#[cache_store(key = "heavy:<id>", ttl = "1m", local(capacity = 1000, max_bytes = 20_000))]
async fn heavy(ctx: &App, id: u32) -> Result<String, String> {
    let _ = ctx;
    Ok(format!("{id:>1000}"))
}

/// `local(max_bytes = ...)` bounds what a store's tier holds by the values'
/// encoded size: of 100 values of ~1 kB, a 20 kB tier holds at most 19;
/// every get still returns its value (from the backend when not held).
#[tokio::test]
async fn a_byte_bound_caps_the_tier_by_value_size() {
    let server = RedisServer::start();
    let app = redis_app(&server).await;
    HeavyStore::get(&app, 0).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    for round in 0..3 {
        for id in 0..100 {
            let value = HeavyStore::get(&app, id).await.unwrap();
            assert_eq!(
                (value.len(), value.trim_start()),
                (1000, id.to_string().as_str()),
                "round {round}"
            );
        }
    }
    let held = app.cache.local_entries();
    // Each value weighs its bincode bytes (1,000 + a length) plus its
    // key: 20 of them would pass 20,000 bytes.
    assert!((1..=19).contains(&held), "holds {held} values of ~1 kB in 20 kB");
}

/// A value that cannot be held decoded (not `Clone`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Unclonable(u64);

#[cache_store(key = "unclonable:<id>", ttl = "1m")]
async fn unclonable(ctx: &App, id: u32) -> Result<Unclonable, String> {
    Ok(Unclonable(ctx.version(id).await))
}

/// The client's default tier skips a store whose values cannot be held
/// decoded: nothing is held for it, and its writes announce nothing
/// (no other process holds its values either).
#[tokio::test]
async fn a_default_tier_leaves_out_stores_whose_values_cannot_be_held() {
    let server = RedisServer::start();
    let cache = Cache::open(&server.url()).await.unwrap();
    let app = App::new(
        Client::builder()
            .cache(cache)
            .local(LocalTier::new(100))
            .build()
            .unwrap(),
    );
    app.set_version(1, 7);
    PlainStore::get(&app, 1).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    let held = app.cache.local_entries();
    assert_eq!(UnclonableStore::get(&app, 1).await, Ok(Unclonable(7)));
    assert_eq!(UnclonableStore::get(&app, 1).await, Ok(Unclonable(7)));
    assert_eq!(app.cache.local_entries(), held, "nothing of UnclonableStore held");

    let before = publishes(&server).await;
    UnclonableStore::update(&app, 1).await.unwrap();
    assert_eq!(publishes(&server).await, before, "its writes are not announced");
    PlainStore::update(&app, 1).await.unwrap();
    assert_eq!(publishes(&server).await, before + 1, "a store with a tier announces");
}

/// `PUBLISH` calls: announcements (on one server a heartbeat is a `PING`).
async fn publishes(server: &RedisServer) -> u64 {
    calls(server, "publish").await
}

/// A process with no tier announces its writes only when told to
/// (`announce_all_writes`): then a reader whose client gives every store a
/// tier sees them; otherwise it sends nothing.
#[tokio::test]
async fn a_writer_without_a_tier_announces_its_writes_when_told_to() {
    let server = RedisServer::start();
    let client = |builder: cacheme::ClientBuilder| async {
        builder
            .cache(Cache::open(&server.url()).await.unwrap())
            .build()
            .unwrap()
    };
    let reader = App::new(client(Client::builder().local(LocalTier::new(100))).await);
    let quiet = App::new(client(Client::builder()).await);
    let writer = App::new(client(Client::builder().announce_all_writes(true)).await);
    reader.set_version(1, 1);
    PlainStore::get(&reader, 1).await.unwrap();
    until(|| async { reader.cache.local_tiers_serving() }).await;
    assert_eq!(PlainStore::get(&reader, 1).await, Ok(Counted(1)));
    assert_eq!(reader.cache.local_entries(), 1, "held by the client's default tier");

    let before = publishes(&server).await;
    quiet.set_version(1, 2);
    PlainStore::update(&quiet, 1).await.unwrap();
    assert_eq!(publishes(&server).await, before, "no tier, not told: nothing announced");

    writer.set_version(1, 3);
    PlainStore::update(&writer, 1).await.unwrap();
    assert_eq!(publishes(&server).await, before + 1, "one announcement per write");
    until(|| async { PlainStore::get(&reader, 1).await == Ok(Counted(3)) }).await;
}

/// `cmdstat_mget` calls from `INFO commandstats` (a batch's reads).
async fn mgets(server: &RedisServer) -> u64 {
    calls(server, "mget").await
}

#[tokio::test]
async fn get_m_and_pipelines_read_and_fill_the_local_tier() {
    let server = RedisServer::start();
    // Keys 2 and 3 are in Redis only (another client cached them, and
    // announced it before this one listened), key 4 nowhere, key 1 in
    // this client's tier.
    let other = redis_app(&server).await;
    for id in 2..=3 {
        other.set_version(id, 10 + u64::from(id));
        NearStore::get(&other, id).await.unwrap();
    }
    other.cache.flush().await;
    let app = redis_app(&server).await;
    for id in 1..=4 {
        app.set_version(id, 10 + u64::from(id));
    }
    NearStore::get(&app, 1).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    let fetched = app.fetches.load(Ordering::SeqCst);
    let batch = NearStore::get_m(&app).add(1).add(2).add(3).add(4).run().await;
    let versions: Vec<u64> = batch.oks().map(|c| c.0).collect();
    assert_eq!(versions, [11, 12, 13, 14]);
    assert_eq!(app.fetches.load(Ordering::SeqCst) - fetched, 1, "only key 4 is fetched");
    assert_eq!(app.cache.local_entries(), 4, "what the batch read or fetched is held");

    // Now nothing leaves the process: single gets, a batch, a pipeline
    // that asks for one key twice.
    let (gets_before, mgets_before) = (gets(&server).await, mgets(&server).await);
    let decoded = DECODED.load(Ordering::SeqCst);
    for id in 1..=4 {
        assert_eq!(NearStore::get(&app, id).await, Ok(Counted(10 + u64::from(id))));
    }
    let again = NearStore::get_m(&app).add(4).add(3).add(2).add(1).run().await;
    assert_eq!(again.oks().map(|c| c.0).collect::<Vec<_>>(), [14, 13, 12, 11]);
    let mut pipeline = Pipeline::new();
    let first = NearStore::get_p(&app, &mut pipeline, 2);
    let second = NearStore::get_p(&app, &mut pipeline, 2);
    pipeline.execute().await.unwrap();
    assert_eq!(first.into_result().unwrap(), Counted(12));
    assert_eq!(second.into_result().unwrap(), Counted(12));
    assert_eq!(gets(&server).await - gets_before, 0, "no GET left the process");
    assert_eq!(mgets(&server).await - mgets_before, 0, "no MGET left the process");
    assert_eq!(DECODED.load(Ordering::SeqCst), decoded, "local hits decode nothing");

    // An update drops the local value: the next batch reads the new one.
    app.set_version(3, 99);
    NearStore::update(&app, 3).await.unwrap();
    let after = NearStore::get_m(&app).add(3).add(1).run().await;
    assert_eq!(after.oks().map(|c| c.0).collect::<Vec<_>>(), [99, 11]);
}

/// Retries `condition` (every 10 ms, at most 30 s) until it holds.
async fn until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < Duration::from_secs(30), "the condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Coherence across processes: process A updates a key 1,000 times; process
// B reads it in a loop through its local tier and records, per version,
// how long after A's `update` returned it first saw it. The source of
// truth is a Redis server of its own (it survives the cache's restart).

const CACHE_URL: &str = "HOT_KEYS_CACHE";
const SOURCE_URL: &str = "HOT_KEYS_SOURCE";
const TRIALS: u64 = 1_000;
/// The staleness B accepts, per trial: far above the loopback figure,
/// far below the local tier's 30 s TTL (what a missed notice would cost).
const BOUND: Duration = Duration::from_secs(5);

fn unix_micros() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_micros()).unwrap()
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn read(source: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<u64> {
    redis::cmd("GET").arg(key).query_async(source).await.unwrap()
}

async fn write(source: &mut redis::aio::MultiplexedConnection, key: &str, value: u64) {
    let _: () = redis::cmd("SET").arg(key).arg(value).query_async(source).await.unwrap();
}

async fn cache_client(url: &str) -> Client {
    let cache = if url.starts_with('{') {
        Cache::new("redis-cluster", url).await.unwrap()
    } else {
        Cache::open(url).await.unwrap()
    };
    Client::builder()
        .cache(cache)
        .local(LocalTier::new(1000))
        .build()
        .unwrap()
}

/// Process B: the test run again as a child ([`child::is_child`]).
async fn coherence_reader() {
    let cache = std::env::var(CACHE_URL).expect("the child's cache");
    let source_url = std::env::var(SOURCE_URL).expect("the child's source");
    let mut source = connect(&source_url).await;
    let app = App {
        cache: cache_client(&cache).await,
        db: Db::Redis(source.clone()),
        fetches: AtomicUsize::new(0),
    };
    NearStore::get(&app, 1).await.unwrap();
    until(|| async { app.cache.local_tiers_serving() }).await;
    write(&mut source, "ready", 1).await;
    let mut seen = 0;
    let mut delays = Vec::new();
    let mut stale_since = Instant::now();
    while seen < TRIALS {
        let version = NearStore::get(&app, 1).await.unwrap().0;
        if version > seen {
            let done = read(&mut source, &format!("done:{version}")).await;
            delays.push(done.map_or(0, |at| unix_micros().saturating_sub(at)));
            seen = version;
            write(&mut source, "seen", seen).await;
            stale_since = Instant::now();
        }
        assert!(stale_since.elapsed() < BOUND * 6, "no new version for {BOUND:?} x 6");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    delays.sort_unstable();
    let p = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    let report = format!(
        "staleness over {} versions: p50 {} us, p99 {} us, max {} us",
        delays.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    let _: () = redis::cmd("SET")
        .arg("report")
        .arg(&report)
        .query_async(&mut source)
        .await
        .unwrap();
    assert!(
        Duration::from_micros(p(1.0)) < BOUND,
        "a version was seen later than {BOUND:?}: {report}"
    );
}

/// Process A: runs the trials against a reader in another process, killing
/// the push connections (`CLIENT KILL TYPE pubsub`) now and then, and
/// restarting the server (on a cluster, the master of the announcements'
/// shard) once (`restart`).
async fn coherence_across_processes(cache_url: &str, mut kill_pubsub: impl FnMut(u64), mut restart: impl FnMut()) {
    let source_server = RedisServer::start();
    let mut source = connect(&source_server.url()).await;
    let app = App {
        cache: cache_client(cache_url).await,
        db: Db::Redis(source.clone()),
        fetches: AtomicUsize::new(0),
    };
    let child = child::this_test_again()
        .env(CACHE_URL, cache_url)
        .env(SOURCE_URL, source_server.url())
        .spawn()
        .unwrap();
    let mut source_check = source.clone();
    until(|| {
        let mut source = source_check.clone();
        async move { read(&mut source, "ready").await == Some(1) }
    })
    .await;
    for version in 1..=TRIALS {
        write(&mut source, "source:1", version).await;
        while NearStore::update(&app, 1).await.is_err() {
            // The server is restarting.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        write(&mut source, &format!("done:{version}"), unix_micros()).await;
        if version % 100 == 50 {
            kill_pubsub(version);
        }
        if version == TRIALS / 2 {
            restart();
        }
        until(|| {
            let mut source = source_check.clone();
            async move { read(&mut source, "seen").await >= Some(version) }
        })
        .await;
    }
    expect_success(child).await;
    let report: String = redis::cmd("GET")
        .arg("report")
        .query_async(&mut source_check)
        .await
        .unwrap();
    println!("{report}");
}

fn kill_pubsub_clients(connection: &mut redis::Connection) {
    let _: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(connection)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tiers_stay_coherent_across_processes_on_redis() {
    if child::is_child() {
        return coherence_reader().await;
    }
    let mut server = RedisServer::start();
    let url = server.url();
    let admin = redis::Client::open(url.as_str()).unwrap();
    coherence_across_processes(
        &url,
        |_| kill_pubsub_clients(&mut admin.get_connection().unwrap()),
        || server.restart(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tiers_stay_coherent_across_processes_on_a_cluster() {
    if child::is_child() {
        return coherence_reader().await;
    }
    let mut cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let config = cluster.config("coherent");
    let masters = cluster.masters();
    coherence_across_processes(
        &config,
        |_| {
            for master in &masters {
                // A new connection each time: a master restarts midway.
                let node = redis::Client::open(format!("redis://{master}")).unwrap();
                kill_pubsub_clients(&mut node.get_connection().unwrap());
            }
        },
        || {
            // The master of the store's announcement channel (a shard
            // channel) goes down and comes back empty.
            let master = cluster.master_of("coherent:cacheme:local:NearStore");
            cluster.kill(&master);
            cluster.restart_all();
            cluster.wait_until_ok(Duration::from_secs(60));
        },
    )
    .await;
}

/// How long a silent announcement channel may leave a local tier serving:
/// the heartbeat's 2 s plus a beat's 1 s and its 0.5 s publish (3 s
/// measured, also with both cores kept busy), about tripled for margin.
/// Far below the tier's 30 s TTL, which is what a silent channel cost
/// before heartbeats.
const SILENCE_NOTICED: Duration = Duration::from_secs(10);

/// The master of a store's announcement channel is frozen (no replica
/// takes over) while the key lives on a healthy master: the writer's
/// `update` stores the new value but its announcement is lost, and no
/// connection breaks. The reader's heartbeat on the channel goes unheard,
/// so its local tier stops serving within [`SILENCE_NOTICED`] (the next
/// get reads past it: the key's master, or the source where the frozen
/// node would be needed) and serves again once the node is thawed and the
/// channel is heard again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_announcement_shard_stops_the_local_tier_until_it_is_heard_again() {
    let mut cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let config = cluster.config("frozen");
    let channel_master = cluster.master_of("frozen:cacheme:local:NearStore");
    let writer = App::new(cache_client(&config).await);
    let reader = App::new(cache_client(&config).await);
    // A key whose value lives on another master than the channel.
    let mut chosen = None;
    for id in 0..64 {
        writer.set_version(id, 1);
        reader.set_version(id, 1);
        assert_eq!(NearStore::get(&writer, id).await.unwrap().0, 1);
        let keys = cluster.keys(&format!("frozen:near:{id}*"));
        assert_eq!(keys.len(), 1, "one value key for id {id}: {keys:?}");
        if cluster.master_of(&keys[0]) != channel_master {
            chosen = Some(id);
            break;
        }
    }
    let id = chosen.expect("a key on another master than the channel's");
    // The first get starts the reader listening; once its tier serves,
    // the next one holds the value in it.
    assert_eq!(NearStore::get(&reader, id).await.unwrap().0, 1);
    until(|| async { reader.cache.local_tiers_serving() }).await;
    assert_eq!(NearStore::get(&reader, id).await.unwrap().0, 1);
    assert!(reader.cache.local_entries() > 0, "the value is in the reader's tier");

    cluster.freeze(&channel_master);
    // The source changes (both apps' copies of it).
    writer.set_version(id, 2);
    reader.set_version(id, 2);
    NearStore::update(&writer, id).await.unwrap();
    let updated = Instant::now();
    loop {
        let seen = NearStore::get(&reader, id).await.unwrap().0;
        if seen == 2 {
            break;
        }
        assert_eq!(seen, 1);
        assert!(
            updated.elapsed() < SILENCE_NOTICED,
            "the reader served the old value for {:?} with its announcement channel frozen",
            updated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("new value seen {:.1?} after the update", updated.elapsed());
    assert!(!reader.cache.local_tiers_serving(), "the tier stopped serving");

    cluster.thaw(&channel_master);
    until(|| async { reader.cache.local_tiers_serving() }).await;
    assert_eq!(NearStore::get(&reader, id).await.unwrap().0, 2);
}
