//! What the scenarios cache: a realistic `Book`, the application context,
//! and the typed store under test, warm on memory or on a spawned Redis.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use cacheme::{Cache, Client, ClientBuilder, Context, cache_store};
use cacheme_test_support::{CountingProxy, RedisServer};
use serde::{Deserialize, Serialize};

/// Distinct keys every get scenario cycles through (all warm).
pub const KEYS: u64 = 1000;

/// The first key variable of every benchmarked key.
pub const CATEGORY: u32 = 7;

/// A row as a service would cache it: a few strings, a list, numbers.
/// About 120 bytes in bincode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub id: u64,
    pub title: String,
    pub authors: Vec<String>,
    pub tags: Vec<String>,
    pub year: u16,
    pub pages: u32,
    pub rating: f32,
    pub in_print: bool,
}

/// The book the "database" returns for `id`.
pub fn book_of(id: u64) -> Book {
    Book {
        id,
        title: format!("The Left Hand of Darkness, volume {id}"),
        authors: vec!["Ursula K. Le Guin".into(), "An Editor".into()],
        tags: vec!["science fiction".into(), "classic".into(), "hugo".into()],
        year: 1969,
        pages: 304,
        rating: 4.5,
        in_print: true,
    }
}

/// The benchmark's application: a client and a fetch counter, so a
/// scenario can prove that every measured get was a hit.
pub struct App {
    pub cache: Client,
    fetches: AtomicU64,
    server: Option<RedisServer>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

impl App {
    /// On the default in-process memory backend, keys warm.
    pub async fn memory() -> App {
        App::warm(builder().build().expect("memory client"), None).await
    }

    /// On a fresh `redis-server` (prefix `cacheme`), keys warm.
    pub async fn redis() -> App {
        let server = RedisServer::start();
        let cache = Cache::open(&format!("{}?prefix=cacheme", server.url()))
            .await
            .expect("connect to the spawned redis-server");
        // Metrics off: the backend's commands are not timed either.
        let client = builder().cache(cache.without_metrics()).build().expect("redis client");
        App::warm(client, Some(server)).await
    }

    async fn warm(cache: Client, server: Option<RedisServer>) -> App {
        let app = App {
            cache,
            fetches: AtomicU64::new(0),
            server,
        };
        for id in 0..KEYS {
            let _ = BookStore::get(&app, CATEGORY, id).await;
        }
        app.assert_all_hits();
        app
    }

    /// Another app on this app's Redis, connected through a proxy that
    /// counts round trips; nothing warmed (the keys already are).
    pub async fn through_proxy(&self) -> (App, CountingProxy) {
        let server = self.server.as_ref().expect("a redis app");
        let proxy = CountingProxy::start(server.port());
        let cache = Cache::open(&format!("redis://{}?prefix=cacheme", proxy.addr()))
            .await
            .expect("connect through the proxy");
        let client = Client::builder().cache(cache).build().expect("redis client");
        let app = App {
            cache: client,
            fetches: AtomicU64::new(0),
            server: None,
        };
        (app, proxy)
    }

    /// How many times the fetcher ran.
    /// A memory app whose client records metrics (feature `metrics`):
    /// install the recorder first.
    #[cfg(feature = "metrics")]
    pub async fn memory_metered() -> App {
        App::warm(Client::builder().build().expect("memory client"), None).await
    }

    /// Another client on this app's Redis (its keys are warm already),
    /// recording metrics: install the recorder first.
    #[cfg(feature = "metrics")]
    pub async fn metered_twin(&self) -> App {
        let server = self.server.as_ref().expect("a redis app");
        let cache = Cache::open(&format!("{}?prefix=cacheme", server.url()))
            .await
            .expect("connect to the spawned redis-server");
        App {
            cache: Client::builder().cache(cache).build().expect("redis client"),
            fetches: AtomicU64::new(0),
            server: None,
        }
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Panics unless the fetcher ran once per key: every get since warming
    /// was a hit, so the scenario measured what it claims.
    pub fn assert_all_hits(&self) {
        assert_eq!(self.fetches(), KEYS, "a measured get missed");
    }

    /// A plain redis-rs `ConnectionManager` to this app's server: the raw
    /// baseline, the same kind of connection the Redis backend uses.
    pub async fn raw_redis(&self) -> redis::aio::ConnectionManager {
        let server = self.server.as_ref().expect("a redis app");
        redis::Client::open(server.url())
            .expect("redis url")
            .get_connection_manager()
            .await
            .expect("connect raw redis")
    }
}

/// The keys cacheme stores in Redis (with the prefix), in id order: what
/// the raw baselines GET.
/// The builder of the scenarios' clients: with feature `metrics` (the
/// `metrics-*` scenarios), the others measure cacheme with metrics off.
fn builder() -> ClientBuilder {
    let builder = Client::builder();
    #[cfg(feature = "metrics")]
    let builder = builder.metrics(false);
    builder
}

pub fn redis_keys() -> Vec<String> {
    (0..KEYS)
        .map(|id| format!("cacheme:{}", BookStore::key(&CATEGORY, &id)))
        .collect()
}

/// The store under test: a two-variable key, the default codec (bincode).
#[cache_store(key = "category:<category_id>:book:<book_id>", ttl = "1h", version = 1)]
pub async fn book(app: &App, category_id: u32, book_id: u64) -> Result<Book, Infallible> {
    let _ = category_id;
    app.fetches.fetch_add(1, Ordering::Relaxed);
    Ok(book_of(book_id))
}
