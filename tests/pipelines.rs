//! Pipelines (`get_p` + `execute`), `get_m` and batch fetchers
//! (`fetch_many`), on every backend. The source counts its own calls;
//! round trips are counted by a proxy or by the servers themselves.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cacheme::{Cache, Client, Context, MAX_KEYS_PER_COMMAND, Pipeline, PromiseError, cache_store};
use cacheme_test_support::{Calls, CountingProxy, CpuLoad, MemcachedServer, RedisCluster, RedisServer, SentCommands};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Book {
    id: u64,
    title: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Author {
    name: String,
    books: u32,
}

/// The source's errors. `Clone`: a batch fetcher's error goes to every
/// key of its batch.
#[derive(Clone, Debug, PartialEq)]
enum ShopError {
    NotFound(String),
    Down,
}

/// Book ids from here on are unknown to the source.
const UNKNOWN: u64 = 1000;

/// The application: a client and a source that logs every call.
struct Shop {
    client: Client,
    calls: Mutex<Vec<String>>,
    batch_down: AtomicBool,
    /// How long every source call takes.
    delay: Duration,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Context for Shop {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

impl Shop {
    fn on(cache: Cache) -> Shop {
        Shop {
            client: Client::builder().cache(cache).build().unwrap(),
            calls: Mutex::default(),
            batch_down: AtomicBool::new(false),
            delay: Duration::ZERO,
            _guard: None,
        }
    }

    fn keep(mut self, guard: impl std::any::Any + Send + Sync) -> Shop {
        self._guard = Some(Box::new(guard));
        self
    }

    async fn memory() -> Shop {
        Shop::on(Cache::open("memory://").await.unwrap())
    }

    async fn redis() -> Shop {
        let server = RedisServer::start();
        Shop::on(Cache::open(&server.url()).await.unwrap()).keep(server)
    }

    async fn cluster() -> Shop {
        let cluster = RedisCluster::builder().replicas(0).start();
        Shop::on(Cache::open(&cluster.url()).await.unwrap()).keep(cluster)
    }

    async fn file() -> Shop {
        let dir = cacheme_test_support::FileFixture::start();
        let cache = Cache::open(&format!("file://{}", dir.path().display())).await.unwrap();
        Shop::on(cache).keep(dir)
    }

    async fn memcache() -> Shop {
        let server = MemcachedServer::start();
        Shop::on(Cache::open(&server.url()).await.unwrap()).keep(server)
    }

    async fn call(&self, what: String) {
        self.calls.lock().unwrap().push(what);
        tokio::time::sleep(self.delay).await;
    }

    /// Every call since the last look, sorted.
    fn take_calls(&self) -> Vec<String> {
        let mut calls = std::mem::take(&mut *self.calls.lock().unwrap());
        calls.sort();
        calls
    }
}

fn book_of(id: u64) -> Book {
    Book {
        id,
        title: format!("book {id}"),
    }
}

#[cache_store(key = "book:<id>", ttl = "5m", fetch_many = books)]
async fn book(ctx: &Shop, id: u64) -> Result<Book, ShopError> {
    ctx.call(format!("book {id}")).await;
    if id >= UNKNOWN {
        return Err(ShopError::NotFound(format!("book {id}")));
    }
    Ok(book_of(id))
}

/// The batch form of `book`: unknown ids are left out of the answer.
async fn books(ctx: &Shop, ids: Vec<u64>) -> Result<HashMap<u64, Book>, ShopError> {
    let sorted: BTreeSet<u64> = ids.iter().copied().collect();
    ctx.call(format!("books {sorted:?}")).await;
    if ctx.batch_down.load(Ordering::SeqCst) {
        return Err(ShopError::Down);
    }
    Ok(ids
        .into_iter()
        .filter(|&id| id < UNKNOWN)
        .map(|id| (id, book_of(id)))
        .collect())
}

/// No batch fetcher: misses are fetched one by one, concurrently.
#[cache_store(key = "author:<name>", ttl = "5m")]
async fn author(ctx: &Shop, name: String) -> Result<Author, ShopError> {
    ctx.call(format!("author {name}")).await;
    if name == "nobody" {
        return Err(ShopError::NotFound(name));
    }
    Ok(Author {
        books: name.len() as u32,
        name,
    })
}

/// Two parameters, singleflight and a batch fetcher returning a list.
#[cache_store(key = "stock:<shop>:<sku>", ttl = "30s", singleflight, fetch_many = stocks)]
async fn stock(ctx: &Shop, shop: u32, sku: String) -> Result<u32, ShopError> {
    ctx.call(format!("stock {shop} {sku}")).await;
    Ok(shop * 100 + sku.len() as u32)
}

async fn stocks(ctx: &Shop, keys: Vec<(u32, String)>) -> Result<Vec<((u32, String), u32)>, ShopError> {
    let sorted: BTreeSet<(u32, String)> = keys.iter().cloned().collect();
    ctx.call(format!("stocks {sorted:?}")).await;
    Ok(keys
        .into_iter()
        .map(|(shop, sku)| {
            let n = shop * 100 + sku.len() as u32;
            ((shop, sku), n)
        })
        .collect())
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Shop::memory().await).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Shop::redis().await).await })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Shop::cluster().await).await })*
        }
        mod file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Shop::file().await).await })*
        }
        mod memcache {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Shop::memcache().await).await })*
        }
    };
}

on_every_backend!(
    a_pipeline_mixes_stores_and_each_promise_keeps_its_own_outcome,
    get_m_calls_the_batch_fetcher_once_with_the_missed_keys,
    a_failing_batch_fetcher_fails_only_its_own_keys,
);

async fn a_pipeline_mixes_stores_and_each_promise_keeps_its_own_outcome(shop: Shop) {
    for round in 0..2 {
        let mut pipeline = Pipeline::new();
        let one = BookStore::get_p(&shop, &mut pipeline, 1);
        let two = BookStore::get_p(&shop, &mut pipeline, 2);
        let unknown = BookStore::get_p(&shop, &mut pipeline, UNKNOWN);
        let again = BookStore::get_p(&shop, &mut pipeline, 1);
        let ursula = AuthorStore::get_p(&shop, &mut pipeline, "ursula".to_owned());
        let nobody = AuthorStore::get_p(&shop, &mut pipeline, "nobody".to_owned());
        let apples = StockStore::get_p(&shop, &mut pipeline, 3, "apple".to_owned());
        let pears = StockStore::get_p(&shop, &mut pipeline, 4, "pear".to_owned());
        assert_eq!(pipeline.len(), 8);
        assert!(!one.is_resolved());
        pipeline.execute().await.unwrap();

        assert_eq!(one.into_result().unwrap(), book_of(1));
        assert_eq!(two.into_result().unwrap(), book_of(2));
        assert_eq!(
            again.into_result().unwrap(),
            book_of(1),
            "a key added twice resolves twice"
        );
        assert!(matches!(
            unknown.into_result(),
            Err(PromiseError::Fetch(ShopError::NotFound(what))) if what == "book 1000"
        ));
        assert_eq!(ursula.into_result().unwrap().books, 6);
        assert!(matches!(
            nobody.into_result(),
            Err(PromiseError::Fetch(ShopError::NotFound(_)))
        ));
        assert_eq!(apples.into_result().unwrap(), 305);
        assert_eq!(pears.into_result().unwrap(), 404);

        let calls = shop.take_calls();
        if round == 0 {
            // One batch per store with a batch fetcher; what the batch
            // did not find is asked of the single fetcher (its error).
            assert_eq!(
                calls,
                [
                    "author nobody",
                    "author ursula",
                    "book 1000",
                    "books {1, 2, 1000}",
                    "stocks {(3, \"apple\"), (4, \"pear\")}",
                ]
            );
        } else {
            // Values are cached; errors are not.
            assert_eq!(calls, ["author nobody", "book 1000", "books {1000}"]);
        }
    }
}

async fn get_m_calls_the_batch_fetcher_once_with_the_missed_keys(shop: Shop) {
    assert_eq!(BookStore::get(&shop, 2).await.unwrap(), book_of(2));
    assert_eq!(shop.take_calls(), ["book 2"], "a single get uses the single fetcher");

    let books = BookStore::get_m(&shop)
        .add(3)
        .add(2)
        .add(4)
        .add(3)
        .run()
        .await
        .into_all()
        .unwrap();
    assert_eq!(
        books.iter().map(|b| b.id).collect::<Vec<_>>(),
        [3, 2, 4, 3],
        "in the order added"
    );
    assert_eq!(books.get(&4), Some(&book_of(4)));
    assert_eq!(
        shop.take_calls(),
        ["books {3, 4}"],
        "only the misses, once each, in one call"
    );

    let stock = StockStore::get_m(&shop)
        .add(1, "a".to_owned())
        .add(2, "bb".to_owned())
        .run()
        .await
        .into_all()
        .unwrap();
    assert_eq!(stock.get(&(2, "bb".to_owned())), Some(&202));
    assert_eq!(shop.take_calls(), ["stocks {(1, \"a\"), (2, \"bb\")}"]);

    // Warm: no call at all.
    let again = BookStore::get_m(&shop)
        .add(2)
        .add(3)
        .add(4)
        .run()
        .await
        .into_all()
        .unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(shop.take_calls(), Vec::<String>::new());

    // A key the batch does not return: that key has the fetcher's error,
    // the others their values.
    let found = BookStore::get_m(&shop).add(5).add(UNKNOWN).run().await;
    let not_found = ShopError::NotFound("book 1000".to_owned());
    assert_eq!(found.get(&UNKNOWN), Some(&Err(not_found.clone())));
    assert_eq!(found.value(&5), Some(&book_of(5)));
    assert_eq!(found.into_all().unwrap_err(), not_found);
    assert_eq!(shop.take_calls(), ["book 1000", "books {5, 1000}"]);
    assert_eq!(BookStore::get(&shop, 5).await.unwrap(), book_of(5));
    assert_eq!(shop.take_calls(), Vec::<String>::new(), "the found key was cached");
}

async fn a_failing_batch_fetcher_fails_only_its_own_keys(shop: Shop) {
    shop.batch_down.store(true, Ordering::SeqCst);
    let mut pipeline = Pipeline::new();
    let one = BookStore::get_p(&shop, &mut pipeline, 1);
    let two = BookStore::get_p(&shop, &mut pipeline, 2);
    let author = AuthorStore::get_p(&shop, &mut pipeline, "le guin".to_owned());
    pipeline.execute().await.unwrap();
    assert!(matches!(one.into_result(), Err(PromiseError::Fetch(ShopError::Down))));
    assert!(matches!(two.into_result(), Err(PromiseError::Fetch(ShopError::Down))));
    assert_eq!(author.into_result().unwrap().books, 7);
    assert_eq!(shop.take_calls(), ["author le guin", "books {1, 2}"]);

    // Nothing of the failed batch was cached, and its locks were released:
    // the next pipeline fetches at once.
    shop.batch_down.store(false, Ordering::SeqCst);
    let mut pipeline = Pipeline::new();
    let one = BookStore::get_p(&shop, &mut pipeline, 1);
    tokio::time::timeout(Duration::from_secs(2), pipeline.execute())
        .await
        .expect("no lock of the failed batch is left behind")
        .unwrap();
    assert_eq!(one.into_result().unwrap(), book_of(1));
    assert_eq!(shop.take_calls(), ["books {1}"]);
}

#[tokio::test]
async fn a_promise_read_before_execute_says_so() {
    let shop = Shop::memory().await;
    let mut pipeline = Pipeline::new();
    let early = BookStore::get_p(&shop, &mut pipeline, 1);
    drop(pipeline);
    assert!(matches!(early.into_result(), Err(PromiseError::NotExecuted)));
    assert!(Pipeline::new().is_empty());
    Pipeline::new().execute().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_get_m_of_the_same_keys_in_any_order_run_once() {
    let shop = Shop {
        delay: Duration::from_millis(100),
        ..Shop::memory().await
    };
    let keys: Vec<(u32, String)> = (0..20).map(|n| (n, format!("sku{n}"))).collect();
    let mut reversed = keys.clone();
    reversed.reverse();
    let run = |keys: Vec<(u32, String)>| {
        let shop = &shop;
        async move {
            let mut m = StockStore::get_m(shop);
            for (shop, sku) in keys {
                m.push(shop, sku);
            }
            m.run().await.into_all().unwrap().iter().copied().collect::<Vec<u32>>()
        }
    };
    let (a, b, c) = tokio::join!(run(keys.clone()), run(reversed), run(keys));
    assert_eq!(a.len(), 20);
    assert_eq!(a, c);
    assert_eq!(b.iter().rev().copied().collect::<Vec<_>>(), a);
    let calls = shop.take_calls();
    assert_eq!(
        calls.len(),
        1,
        "three concurrent get_m share one batch fetch: {calls:?}"
    );
    assert!(calls[0].starts_with("stocks "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_be_read_serves_every_promise_from_the_source() {
    let mut server = RedisServer::start();
    let shop = Shop::on(Cache::open(&server.url()).await.unwrap());
    assert_eq!(BookStore::get(&shop, 1).await.unwrap(), book_of(1));
    shop.take_calls();
    server.stop();

    let mut pipeline = Pipeline::new();
    let one = BookStore::get_p(&shop, &mut pipeline, 1);
    let author = AuthorStore::get_p(&shop, &mut pipeline, "ursula".to_owned());
    pipeline
        .execute()
        .await
        .expect("a cache failure is not the pipeline's failure");
    assert_eq!(one.into_result().unwrap(), book_of(1));
    assert!(author.into_result().is_ok());
    let mut calls = shop.take_calls();
    calls.sort();
    assert_eq!(calls.len(), 2, "each promise from the source once: {calls:?}");

    // get_m keeps get's policy: the cache is an optimisation, the source
    // still answers.
    let books = BookStore::get_m(&shop).add(1).add(2).run().await.into_all().unwrap();
    assert_eq!(books.iter().cloned().collect::<Vec<_>>(), [book_of(1), book_of(2)]);
    assert_eq!(shop.take_calls(), ["books {1, 2}"]);
}

// ---------------------------------------------------------------------------
// Round trips.

/// A shop on a Redis reached through a round-trip counting proxy.
async fn counted_redis() -> (Shop, CountingProxy) {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let shop = Shop::on(
        Cache::open(&format!("redis://127.0.0.1:{}", proxy.port()))
            .await
            .unwrap(),
    )
    .keep(server);
    load_scripts(&shop).await;
    (shop, proxy)
}

/// Runs a cold batch of another store, so the lock and fill scripts are
/// loaded on every node (the first use of a script costs a NOSCRIPT retry).
async fn load_scripts(shop: &Shop) {
    let mut m = StockStore::get_m(shop);
    for n in 0..100 {
        m.push(n, "warm-up".to_owned());
    }
    m.run().await.into_all().unwrap();
    shop.take_calls();
}

/// Commands (or memcached exchanges) a batch of `keys` keys takes per step.
fn chunks(keys: usize) -> u64 {
    keys.div_ceil(MAX_KEYS_PER_COMMAND) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_get_m_of_1000_keys_is_one_request_per_chunk_on_redis() {
    let _load = CpuLoad::start();
    let (shop, proxy) = counted_redis().await;
    let mut m = BookStore::get_m(&shop);
    for id in 0..1000 {
        m.push(id);
    }
    let before = proxy.requests();
    assert_eq!(m.run().await.into_all().unwrap().len(), 1000);
    assert_eq!(
        proxy.requests() - before,
        3 * chunks(1000),
        "cold: read, lock all, fill all, each in chunks"
    );
    assert_eq!(shop.take_calls().len(), 1, "one batch fetch");

    for id in 0..1000 {
        m.push(id);
    }
    let before = proxy.requests();
    assert_eq!(m.run().await.into_all().unwrap().len(), 1000);
    assert_eq!(proxy.requests() - before, chunks(1000), "warm: one MGET per chunk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_three_stores_is_one_round_trip_warm_and_three_cold_on_redis() {
    let _load = CpuLoad::start();
    let (shop, proxy) = counted_redis().await;
    for (round, expected) in [(0, 3), (1, 1)] {
        let mut pipeline = Pipeline::new();
        let promises: Vec<_> = (0..100).map(|id| BookStore::get_p(&shop, &mut pipeline, id)).collect();
        let authors: Vec<_> = (0..50)
            .map(|n| AuthorStore::get_p(&shop, &mut pipeline, format!("author{n}")))
            .collect();
        let stock = StockStore::get_p(&shop, &mut pipeline, 1, "x".to_owned());
        let before = proxy.requests();
        pipeline.execute().await.unwrap();
        assert_eq!(proxy.requests() - before, expected, "round {round}");
        assert!(promises.into_iter().all(|p| p.into_result().is_ok()));
        assert!(authors.into_iter().all(|p| p.into_result().is_ok()));
        assert_eq!(stock.into_result().unwrap(), 101);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_get_m_of_1000_keys_is_one_multi_get_per_chunk_on_memcached() {
    let _load = CpuLoad::start();
    let server = MemcachedServer::start();
    let proxy = CountingProxy::start(server.port());
    // Both generations (the cache's, for `clear`, and the store's) are
    // trusted for the whole test: a re-read would be one more request.
    let url = format!("memcache://127.0.0.1:{}?generationRefreshMs=600000", proxy.port());
    let cache = Cache::open(&url).await.unwrap();
    let shop = Shop {
        client: Client::builder()
            .cache(cache)
            .generation_refresh(Duration::from_secs(600))
            .build()
            .unwrap(),
        ..Shop::on(Cache::open("memory://").await.unwrap())
    }
    .keep(server);
    let mut m = BookStore::get_m(&shop);
    for id in 0..1000 {
        m.push(id);
    }
    assert_eq!(m.run().await.into_all().unwrap().len(), 1000);
    // The fills run off the caller's path: let them land before counting.
    shop.client.flush().await;
    for id in 0..1000 {
        m.push(id);
    }
    let before = proxy.requests();
    assert_eq!(m.run().await.into_all().unwrap().len(), 1000);
    assert_eq!(proxy.requests() - before, chunks(1000), "one multi-get per chunk");
}

/// What each master received: only `EVALSHA`s (one per batch step).
fn evalshas(calls: &Calls) -> Vec<u64> {
    for node in calls.values() {
        assert_eq!(
            node.keys().collect::<Vec<_>>(),
            ["evalsha"],
            "only batch scripts: {calls:?}"
        );
    }
    calls.values().map(|node| node["evalsha"]).collect()
}

/// Per master (in address order), how many slots its keys matching
/// `pattern` hash to.
fn slots_per_master(cluster: &RedisCluster, pattern: &str) -> Vec<u64> {
    let mut masters = cluster.masters();
    masters.sort();
    masters
        .iter()
        .map(|addr| {
            let mut node = cluster.node_connection(addr);
            let keys: Vec<String> = ::redis::cmd("KEYS").arg(pattern).query(&mut node).unwrap();
            let slots: BTreeSet<u16> = keys
                .iter()
                .map(|key| {
                    ::redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(key)
                        .query(&mut node)
                        .unwrap()
                })
                .collect();
            slots.len() as u64
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_m_costs_one_command_per_cluster_slot_and_step() {
    let cluster = RedisCluster::builder().replicas(0).start();
    let shop = Shop::on(Cache::open(&cluster.url()).await.unwrap());
    load_scripts(&shop).await;
    let mut sent = SentCommands::new(&cluster);

    let mut m = BookStore::get_m(&shop);
    for id in 0..1000 {
        m.push(id);
    }
    let (values, calls) = sent.of(m.run()).await;
    assert_eq!(values.into_all().unwrap().len(), 1000);
    // A script declares its keys, and a cluster takes declared keys of
    // one slot per call.
    let slots = slots_per_master(&cluster, "*book*");
    assert!(
        slots.iter().sum::<u64>() > 900,
        "the keys spread over many slots: {slots:?}"
    );
    let cold: Vec<u64> = slots.iter().map(|n| 3 * n).collect();
    assert_eq!(evalshas(&calls), cold, "cold: read, lock all, fill all, once per slot");
    assert_eq!(shop.take_calls().len(), 1, "one batch fetch");

    for id in 0..1000 {
        m.push(id);
    }
    let (values, calls) = sent.of(m.run()).await;
    assert_eq!(values.into_all().unwrap().len(), 1000);
    assert_eq!(evalshas(&calls), slots, "warm: one read per slot");
}
