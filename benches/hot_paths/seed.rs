//! The seed's benchmark (issue "hot keys"): cacheme-go's own workload —
//! 100 concurrent tasks looping over 10 warm keys — on Redis and on a
//! 3-master Redis Cluster, with the GETs the servers received per
//! contender; and the memory backend against raw moka under the same
//! concurrency.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use cacheme::{Cache, Client, Codec, Context, cache_store};
use cacheme_test_support::{RedisCluster, RedisServer};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use moka::future::Cache as Moka;
use redis::AsyncCommands;
use tokio::task::JoinSet;

use crate::fixtures::{Book, book_of};
use crate::harness::{Contender, Measured, Report, Settings, Table, compare, contender, human_ns};

/// Concurrent tasks, as in cacheme-go's benchmark.
const TASKS: u64 = 100;
/// Keys the tasks loop over.
const KEYS: u64 = 10;
/// Gets per contender when counting what the server received.
const COUNTED: u64 = 100_000;

/// The client the seed measures: the default build's (feature `metrics`
/// is off by default; the bench is built with it for the `metrics-*`
/// scenarios, which measure its cost), so its metrics are switched off.
fn seed_client(cache: Option<Cache>) -> Client {
    let builder = Client::builder();
    #[cfg(feature = "metrics")]
    let builder = builder.metrics(false);
    match cache {
        Some(cache) => builder.cache(cache),
        None => builder,
    }
    .build()
    .unwrap()
}

/// The seed scenario's application: a client, nothing else.
pub struct SeedApp {
    cache: Client,
}

impl Context for SeedApp {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

#[cache_store(key = "seed:plain:<id>", ttl = "1h")]
async fn seed_plain(_app: &SeedApp, id: u64) -> Result<Book, Infallible> {
    Ok(book_of(id))
}

#[cache_store(key = "seed:sf:<id>", ttl = "1h", singleflight)]
async fn seed_sf(_app: &SeedApp, id: u64) -> Result<Book, Infallible> {
    Ok(book_of(id))
}

#[cache_store(key = "seed:local:<id>", ttl = "1h", local(capacity = 1000))]
async fn seed_local(_app: &SeedApp, id: u64) -> Result<Book, Infallible> {
    Ok(book_of(id))
}

/// Runs `n` gets over `TASKS` spawned tasks (each `n / TASKS`, key `i % KEYS`).
async fn spread<F, Fut>(n: u64, get: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let get = get.clone();
        tasks.spawn(async move {
            for i in 0..n.div_ceil(TASKS) {
                get((t + i) % KEYS).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One raw GET in flight, shared by whoever asks for its key meanwhile.
type Flight = Shared<BoxFuture<'static, Arc<Vec<u8>>>>;

/// A raw GET coalesced per key in the process, by hand: what `singleflight`
/// does, with nothing else around it.
#[derive(Clone, Default)]
struct Coalesced {
    flights: Arc<Mutex<HashMap<u64, Flight>>>,
}

impl Coalesced {
    async fn get(&self, id: u64, read: impl FnOnce() -> BoxFuture<'static, Arc<Vec<u8>>>) -> Arc<Vec<u8>> {
        let flight = {
            let mut flights = self.flights.lock().unwrap();
            flights.entry(id).or_insert_with(|| read().shared()).clone()
        };
        let bytes = flight.clone().await;
        let mut flights = self.flights.lock().unwrap();
        if flights.get(&id).is_some_and(|current| current.ptr_eq(&flight)) {
            flights.remove(&id);
        }
        bytes
    }
}

/// A raw connection to GET through: one server or a cluster.
#[derive(Clone)]
enum Raw {
    Node(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    async fn get(mut self, key: String) -> Vec<u8> {
        match &mut self {
            Raw::Node(c) => c.get(key).await.unwrap(),
            Raw::Cluster(c) => c.get(key).await.unwrap(),
        }
    }
}

/// The contenders on a Redis backend, baseline first.
fn redis_contenders(app: &Arc<SeedApp>, raw: &Raw, prefix: &str) -> Vec<Contender<'static>> {
    let key = {
        let prefix = prefix.to_owned();
        move |id: u64| format!("{prefix}{}", SeedPlainStore::key(&id))
    };
    let raw_get = {
        let (raw, key) = (raw.clone(), key.clone());
        move |n| {
            let (raw, key) = (raw.clone(), key.clone());
            spread(n, move |id| {
                let (raw, key) = (raw.clone(), key.clone());
                async move {
                    let bytes = raw.get(key(id)).await;
                    black_box(Codec::Bincode.decode::<Book>(&bytes).unwrap());
                }
            })
        }
    };
    let coalesced = {
        let (raw, key, table) = (raw.clone(), key.clone(), Coalesced::default());
        move |n| {
            let (raw, key, table) = (raw.clone(), key.clone(), table.clone());
            spread(n, move |id| {
                let (raw, key, table) = (raw.clone(), key.clone(), table.clone());
                async move {
                    let bytes = table
                        .get(id, move || async move { Arc::new(raw.get(key(id)).await) }.boxed())
                        .await;
                    black_box(Codec::Bincode.decode::<Book>(&bytes).unwrap());
                }
            })
        }
    };
    let typed = |which: u8| {
        let app = Arc::clone(app);
        move |n| {
            let app = Arc::clone(&app);
            spread(n, move |id| {
                let app = Arc::clone(&app);
                async move {
                    let book = match which {
                        0 => SeedPlainStore::get(&app, id).await,
                        1 => SeedSfStore::get(&app, id).await,
                        _ => SeedLocalStore::get(&app, id).await,
                    };
                    black_box(book.unwrap());
                }
            })
        }
    };
    // cacheme's `Backend::get` with the key given: splits the typed get
    // into the backend layer and the store layer above it.
    let backend = {
        let app = Arc::clone(app);
        move |n| {
            let app = Arc::clone(&app);
            spread(n, move |id| {
                let app = Arc::clone(&app);
                async move {
                    let key = SeedPlainStore::key(&id);
                    let bytes = app.cache.cache().backend().get(&key).await.unwrap().unwrap();
                    black_box(Codec::Bincode.decode::<Book>(&bytes).unwrap());
                }
            })
        }
    };
    vec![
        contender("raw redis-rs GET + decode (baseline)", raw_get),
        contender("raw GET coalesced per key + decode", coalesced),
        contender("cacheme backend get + decode (key given)", backend),
        contender("typed get, no singleflight", typed(0)),
        contender("typed get, singleflight", typed(1)),
        contender("typed get, local tier", typed(2)),
    ]
}

/// Warms every store's keys and waits until the local tier serves.
async fn warm(app: &SeedApp) {
    for id in 0..KEYS {
        SeedPlainStore::get(app, id).await.unwrap();
        SeedSfStore::get(app, id).await.unwrap();
        SeedLocalStore::get(app, id).await.unwrap();
    }
    app.cache.flush().await;
    // The memory backend has no tier (it keeps decoded values itself).
    let remote = app.cache.cache().backend().provider() != "memory";
    while remote && !app.cache.local_tiers_serving() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for id in 0..KEYS {
        SeedLocalStore::get(app, id).await.unwrap();
    }
}

/// `cmdstat_get` calls summed over `nodes`.
fn gets(nodes: &[String]) -> u64 {
    nodes
        .iter()
        .map(|addr| {
            let mut connection = redis::Client::open(format!("redis://{addr}"))
                .unwrap()
                .get_connection()
                .unwrap();
            let info: String = redis::cmd("INFO").arg("commandstats").query(&mut connection).unwrap();
            info.lines()
                .find_map(|line| line.strip_prefix("cmdstat_get:calls="))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().unwrap())
        })
        .sum()
}

/// Times the contenders side by side, then runs each once more on its own
/// to count the GETs the servers received; one table.
async fn measure(settings: &Settings, make: impl Fn() -> Vec<Contender<'static>>, nodes: &[String]) -> Table {
    let measured: Vec<Measured> = compare(settings, make()).await;
    let mut received = Vec::new();
    for mut one in make() {
        let before = gets(nodes);
        one.run(COUNTED).await;
        let sent = gets(nodes) - before;
        received.push(sent * (1_000_000 / COUNTED));
    }
    let mut table = Table::new([
        "contender",
        "time/get (median)",
        "ratio (q1–q3)",
        "GETs per 1,000,000 gets",
        "allocs/get",
    ]);
    for (i, (m, sent)) in measured.iter().zip(received).enumerate() {
        let ratio = if i == 0 {
            "1.00 (baseline)".to_owned()
        } else {
            format!("**{:.2}** ({:.2}–{:.2})", m.ratio, m.ratio_q1, m.ratio_q3)
        };
        table.row([
            m.name.clone(),
            human_ns(m.ns),
            ratio,
            sent.to_string(),
            format!("{:.1}", m.allocs),
        ]);
    }
    table
}

const ABOUT: &str = "cacheme-go's workload: 100 concurrent tasks, 10 warm keys looped (TTL 1 h, so every \
                     get is a hit), ns per get. Targets: `singleflight` <= **0.35x** the raw baseline \
                     and <= 100,000 GETs per 1,000,000 gets; local tier <= **0.1x**. GETs counted from \
                     `INFO commandstats` in a separate run of 100,000 gets per contender, scaled.";

/// The seed's workload on one Redis server.
pub async fn seed_redis(settings: &Settings) -> Report {
    let server = RedisServer::start();
    let cache = Cache::open(&format!("{}?prefix=seed", server.url())).await.unwrap();
    let app = Arc::new(SeedApp {
        cache: seed_client(Some(cache)),
    });
    warm(&app).await;
    let raw = Raw::Node(
        redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap(),
    );
    let nodes = [server.addr()];
    let table = measure(settings, || redis_contenders(&app, &raw, "seed:"), &nodes).await;
    Report {
        title: "seed (Redis): 100 tasks, 10 hot keys".into(),
        about: ABOUT.into(),
        table,
    }
}

/// The seed's workload on a 3-master Redis Cluster.
pub async fn seed_cluster(settings: &Settings) -> Report {
    let cluster = RedisCluster::builder().masters(3).replicas(0).start();
    let cache = Cache::new("redis-cluster", &cluster.config("seed")).await.unwrap();
    let app = Arc::new(SeedApp {
        cache: seed_client(Some(cache)),
    });
    warm(&app).await;
    let nodes: Vec<String> = cluster.masters();
    let urls: Vec<String> = nodes.iter().map(|addr| format!("redis://{addr}")).collect();
    let raw = Raw::Cluster(
        redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap(),
    );
    let table = measure(settings, || redis_contenders(&app, &raw, "seed:"), &nodes).await;
    Report {
        title: "seed (Redis Cluster, 3 masters): 100 tasks, 10 hot keys".into(),
        about: format!("{ABOUT} Cluster target: the typed get (no singleflight) <= **1.1x** the raw cluster GET."),
        table,
    }
}

/// The memory backend against raw moka, 100 tasks over 10 keys.
pub async fn seed_memory(settings: &Settings) -> Report {
    let app = Arc::new(SeedApp {
        cache: seed_client(None),
    });
    warm(&app).await;
    let moka: Moka<u64, Book> = Moka::builder().max_capacity(1000).build();
    for id in 0..KEYS {
        moka.insert(id, book_of(id)).await;
    }
    let measured = compare(
        settings,
        vec![
            contender("raw moka future::Cache get (Book, cloned out)", move |n| {
                let moka = moka.clone();
                spread(n, move |id| {
                    let moka = moka.clone();
                    async move {
                        black_box(moka.get(&id).await.unwrap());
                    }
                })
            }),
            // The cache the memory backend is built on (moka's sync cache,
            // since session 12), used by hand: what a typed get could cost
            // with nothing around it.
            contender("raw moka sync::Cache get (Book, cloned out)", {
                let sync: moka::sync::Cache<u64, Book> = moka::sync::Cache::builder().max_capacity(1000).build();
                for id in 0..KEYS {
                    sync.insert(id, book_of(id));
                }
                move |n| {
                    let sync = sync.clone();
                    spread(n, move |id| {
                        let sync = sync.clone();
                        async move {
                            black_box(sync.get(&id).unwrap());
                        }
                    })
                }
            }),
            // Two steps between raw moka and the memory backend, to split
            // the ratio: string keys (the backend's), and a value shared
            // through an `Arc` (one count touched by every reader).
            contender("raw moka get, Book held in an Arc (cloned out)", {
                let arcs: Moka<u64, Arc<Book>> = Moka::builder().max_capacity(1000).build();
                for id in 0..KEYS {
                    arcs.insert(id, Arc::new(book_of(id))).await;
                }
                move |n| {
                    let arcs = arcs.clone();
                    spread(n, move |id| {
                        let arcs = arcs.clone();
                        async move {
                            black_box((*arcs.get(&id).await.unwrap()).clone());
                        }
                    })
                }
            }),
            contender("raw moka get, the store's String keys", {
                let named: Moka<String, Book> = Moka::builder().max_capacity(1000).build();
                for id in 0..KEYS {
                    named.insert(SeedPlainStore::key(&id), book_of(id)).await;
                }
                let names: Arc<Vec<String>> = Arc::new((0..KEYS).map(|id| SeedPlainStore::key(&id)).collect());
                move |n| {
                    let (named, names) = (named.clone(), Arc::clone(&names));
                    spread(n, move |id| {
                        let (named, names) = (named.clone(), Arc::clone(&names));
                        async move {
                            black_box(named.get(&names[id as usize]).await.unwrap());
                        }
                    })
                }
            }),
            contender("typed get on the memory backend", move |n| {
                let app = Arc::clone(&app);
                spread(n, move |id| {
                    let app = Arc::clone(&app);
                    async move {
                        black_box(SeedPlainStore::get(&app, id).await.unwrap());
                    }
                })
            }),
        ],
    )
    .await;
    Report {
        title: "seed (memory): typed get vs raw moka, 100 tasks, 10 keys".into(),
        about: "The memory backend keeps decoded values beside their bytes: a typed hit clones the value \
                out, as raw moka does. Target: <= **1.2x** raw moka `get` of the same struct (moka's async \
                `future::Cache`, as the issue measured it). The backend is built on moka's `sync::Cache`, \
                whose `get` is the second row. Two more steps split the ratio: moka keyed by the store's \
                strings, and a value held in an `Arc`."
            .into(),
        table: crate::harness::ratio_table(&measured),
    }
}
