//! Typed stores (`#[cache_store]`), modelled on cacheme-go's own suite and
//! run on every backend: memory, a spawned Redis, a temp-dir file cache and
//! a spawned memcached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cacheme::{Cache, Client, Context, Event, EventKind, Logger, cache_store};
use cacheme_test_support::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Book {
    id: u64,
    title: String,
    tags: Vec<String>,
    author: Author,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Author {
    name: String,
    born: Option<u16>,
}

/// What the logger saw: (kind, store, key).
type Events = Arc<Mutex<Vec<(EventKind, &'static str, String)>>>;

#[derive(Debug, PartialEq)]
struct AppError(String);

/// The test's application context: a client, a fake source, and what the
/// source was asked.
struct App {
    cache: Client,
    fetches: Mutex<HashMap<&'static str, usize>>,
    /// Values the "database" returns; tests change them to see refetches.
    title_suffix: Mutex<String>,
    failing: Mutex<bool>,
    events: Events,
    _server: Option<RedisServer>,
    /// Keeps another backend's server or directory alive.
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

#[derive(Clone)]
struct Recorder(Events);

impl Logger for Recorder {
    fn log(&self, event: &Event<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((event.kind, event.store, event.key.to_owned()));
    }
}

thread_local! {
    /// Whether `App::on` gives every store a local tier: set by [`local`]
    /// around building the app (tests build it on the test's own thread,
    /// in `block_on`).
    static LOCAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl App {
    fn on(cache: Cache, server: Option<RedisServer>) -> App {
        let events = Arc::new(Mutex::new(Vec::new()));
        let local = LOCAL.with(std::cell::Cell::get);
        let mut builder = Client::builder().cache(cache).logger(Recorder(events.clone()));
        if local {
            builder = builder.local(cacheme::LocalTier::new(1000));
        }
        App {
            cache: builder.build().unwrap(),
            fetches: Mutex::default(),
            title_suffix: Mutex::new("first".into()),
            failing: Mutex::new(false),
            events,
            _server: server,
            _guard: None,
        }
    }

    #[cfg(feature = "file")]
    async fn file() -> App {
        let dir = cacheme_test_support::FileFixture::start();
        let cache = Cache::open(&format!("file://{}", dir.path().display())).await.unwrap();
        App {
            _guard: Some(Box::new(dir)),
            ..App::on(cache, None)
        }
    }

    #[cfg(feature = "memcached")]
    async fn memcache() -> App {
        let server = cacheme_test_support::MemcachedServer::start();
        let cache = Cache::open(&server.url()).await.unwrap();
        App {
            _guard: Some(Box::new(server)),
            ..App::on(cache, None)
        }
    }

    /// The key a store key is stored (and logged) under: backends that
    /// cannot list keys add the store's generation (`:g0` until an
    /// `invalidate_all`).
    fn stored(&self, key: &str) -> String {
        if self.cache.cache().backend().supports_delete_matching() {
            key.to_owned()
        } else {
            format!("{key}:g0")
        }
    }

    async fn memory() -> App {
        App::on(Cache::open("memory://").await.unwrap(), None)
    }

    async fn redis() -> App {
        let server = RedisServer::start();
        let cache = Cache::open(&format!("{}?prefix=cacheme", server.url())).await.unwrap();
        App::on(cache, Some(server))
    }

    /// A plain redis-rs connection to this app's server, to look at what
    /// cacheme stored.
    async fn raw_redis(&self) -> ::redis::aio::MultiplexedConnection {
        let server = self._server.as_ref().expect("a redis app");
        ::redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn fetched(&self, store: &'static str) -> usize {
        self.fetches.lock().unwrap().get(store).copied().unwrap_or(0)
    }

    fn source(&self, store: &'static str) -> Result<String, AppError> {
        *self.fetches.lock().unwrap().entry(store).or_default() += 1;
        if *self.failing.lock().unwrap() {
            return Err(AppError(format!("{store} source is down")));
        }
        Ok(self.title_suffix.lock().unwrap().clone())
    }

    fn events(&self) -> Vec<(EventKind, &'static str, String)> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

fn book_of(id: u64, suffix: &str) -> Book {
    Book {
        id,
        title: format!("book {id} {suffix}"),
        tags: vec!["a".into(), "b".into()],
        author: Author {
            name: "ann".into(),
            born: Some(1970),
        },
    }
}

#[cache_store(key = "string:<id>", ttl = "5m")]
async fn string_value(ctx: &App, id: u32) -> Result<String, AppError> {
    Ok(format!("{id}-{}", ctx.source("string")?))
}

#[cache_store(key = "int:<id>", ttl = "5m", version = 3)]
async fn int_value(ctx: &App, id: i64) -> Result<i64, AppError> {
    ctx.source("int")?;
    Ok(id * 10)
}

#[cache_store(key = "category:<category_id>:book:<book_id>", ttl = "5m", version = 1, singleflight)]
async fn book(ctx: &App, category_id: u32, book_id: u64) -> Result<Book, AppError> {
    let suffix = ctx.source("book")?;
    Ok(book_of(book_id, &format!("{category_id} {suffix}")))
}

#[cache_store(key = "maybe:<id>", ttl = "5m", codec = "json")]
async fn maybe_book(ctx: &App, id: u64) -> Result<Option<Book>, AppError> {
    let suffix = ctx.source("maybe")?;
    Ok(id.is_multiple_of(2).then(|| book_of(id, &suffix)))
}

#[cache_store(key = "books:<category>", ttl = "5m", codec = "msgpack")]
async fn books(ctx: &App, category: String) -> Result<Vec<Book>, AppError> {
    let suffix = ctx.source("books")?;
    Ok((1..=3).map(|id| book_of(id, &format!("{category} {suffix}"))).collect())
}

#[cache_store(key = "book-map:<category>", ttl = "5m")]
async fn book_map(ctx: &App, category: String) -> Result<HashMap<String, Book>, AppError> {
    let suffix = ctx.source("map")?;
    Ok((1..=2)
        .map(|id| (format!("{category}-{id}"), book_of(id, &suffix)))
        .collect())
}

#[cache_store(key = "pair:<a>:<b>", ttl = "5m")]
async fn pair(ctx: &App, a: String, b: String) -> Result<String, AppError> {
    ctx.source("pair")?;
    Ok(format!("{a}|{b}"))
}

static VERSION: AtomicU32 = AtomicU32::new(1);

/// Same key shape as `string_value`, but in its own namespace.
/// A borrowed key parameter: `get`, `invalidate` and `update` take a `&str`.
#[cache_store(key = "by-name:<name>", ttl = "5m")]
async fn by_name(ctx: &App, name: &str) -> Result<String, AppError> {
    Ok(format!("{name}-{}", ctx.source("by-name")?))
}

mod renamed {
    //! The facade reached by another path, as a crate re-exporting it would.
    pub use ::cacheme as facade;
}

/// Generated code names `crate::renamed::facade::__private`, not `::cacheme`.
#[cache_store(key = "renamed:<id>", ttl = "5m", crate = "crate::renamed::facade")]
async fn renamed_value(ctx: &App, id: u32) -> Result<String, AppError> {
    Ok(format!("{id}-{}", ctx.source("renamed")?))
}

#[tokio::test]
async fn the_crate_option_finds_the_facade_and_spec_is_one_static() {
    let app = App::memory().await;
    assert_eq!(RenamedValueStore::get(&app, 1).await.unwrap(), "1-first");
    assert_eq!(RenamedValueStore::key(&1), "renamed:1:v1");
    let registered = cacheme::__private::STORES
        .iter()
        .filter(|spec| spec.name == "RenamedValueStore")
        .collect::<Vec<_>>();
    assert_eq!(registered.len(), 1);
    assert!(
        std::ptr::eq(*registered[0], RenamedValueStore::SPEC),
        "SPEC is the registered static itself"
    );
}

#[cache_store(key = "string:<id>", ttl = "5m", prefix = "shop")]
async fn shop_string(ctx: &App, id: u32) -> Result<String, AppError> {
    Ok(format!("shop {id}-{}", ctx.source("shop_string")?))
}

fn current_version() -> String {
    VERSION.load(Ordering::SeqCst).to_string()
}

#[cache_store(key = "versioned:<id>", ttl = "5m", version = current_version)]
async fn versioned(ctx: &App, id: u32) -> Result<String, AppError> {
    Ok(format!("{id}@{}", ctx.source("versioned")?))
}

/// Expands a test body (an `async fn(App)`) into a memory and a redis test.
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
        #[cfg(feature = "file")]
        mod file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::file().await).await })*
        }
        #[cfg(feature = "memcached")]
        mod memcache {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::App::memcache().await).await })*
        }
        // The same with a local tier over every remote backend.
        mod redis_local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::local(super::App::redis()).await).await })*
        }
        #[cfg(feature = "file")]
        mod file_local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::local(super::App::file()).await).await })*
        }
        #[cfg(feature = "memcached")]
        mod memcache_local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::local(super::App::memcache()).await).await })*
        }
    };
}

/// Builds the app with a local tier for every store.
async fn local(app: impl std::future::Future<Output = App>) -> App {
    LOCAL.with(|local| local.set(true));
    let app = app.await;
    LOCAL.with(|local| local.set(false));
    assert!(app.cache.cache().backend().provider() != "memory");
    app
}

on_every_backend!(
    values_of_every_shape_round_trip,
    cold_then_warm_reports_miss_fetch_then_hit,
    invalidate_refetches_and_update_replaces,
    fetch_errors_reach_the_caller_and_are_not_cached,
    different_parameter_lists_never_share_a_key,
    bumping_the_version_hides_old_values,
    get_m_keeps_order_reads_by_params_and_fetches_duplicates_once,
    invalidate_all_removes_one_version_of_one_store,
    borrowed_parameters_get_invalidate_and_update,
    get_m_extends_from_an_iterator,
);

async fn borrowed_parameters_get_invalidate_and_update(app: App) {
    let name = String::from("ann");
    assert_eq!(ByNameStore::get(&app, &name).await.unwrap(), "ann-first");
    assert_eq!(ByNameStore::get(&app, "ann").await.unwrap(), "ann-first");
    assert_eq!(app.fetched("by-name"), 1, "the second get is a hit");
    *app.title_suffix.lock().unwrap() = "second".into();
    ByNameStore::invalidate(&app, "ann").await.unwrap();
    assert_eq!(ByNameStore::get(&app, "ann").await.unwrap(), "ann-second");
    *app.title_suffix.lock().unwrap() = "third".into();
    assert_eq!(ByNameStore::update(&app, "ann").await.unwrap(), "ann-third");
    assert_eq!(ByNameStore::get(&app, "ann").await.unwrap(), "ann-third");
    assert_eq!(app.fetched("by-name"), 3);
    assert_eq!(ByNameStore::key(&"a:b"), "by-name:a%3Ab:v1");
}

async fn get_m_extends_from_an_iterator(app: App) {
    let mut multi = StringValueStore::get_m(&app);
    multi.extend([1, 2]);
    for id in [3, 1] {
        multi.push(id);
    }
    let found = multi.run().await.into_all().unwrap();
    assert_eq!(
        found.iter().cloned().collect::<Vec<_>>(),
        ["1-first", "2-first", "3-first", "1-first"]
    );
    assert_eq!(app.fetched("string"), 3);
}

async fn values_of_every_shape_round_trip(app: App) {
    for _ in 0..2 {
        assert_eq!(StringValueStore::get(&app, 7).await.unwrap(), "7-first");
        assert_eq!(IntValueStore::get(&app, -4).await.unwrap(), -40);
        assert_eq!(BookStore::get(&app, 1, 2).await.unwrap(), book_of(2, "1 first"));
        assert_eq!(MaybeBookStore::get(&app, 2).await.unwrap(), Some(book_of(2, "first")));
        assert_eq!(
            MaybeBookStore::get(&app, 3).await.unwrap(),
            None,
            "a cached None is a value"
        );
        assert_eq!(BooksStore::get(&app, "sf".into()).await.unwrap().len(), 3);
        let map = BookMapStore::get(&app, "x".into()).await.unwrap();
        assert_eq!(map["x-2"], book_of(2, "first"));
    }
    for store in ["string", "int", "book", "maybe", "books", "map"] {
        let expected = if store == "maybe" { 2 } else { 1 };
        assert_eq!(
            app.fetched(store),
            expected,
            "{store}: the second round must be served from the cache"
        );
    }
}

async fn cold_then_warm_reports_miss_fetch_then_hit(app: App) {
    BookStore::get(&app, 1, 2).await.unwrap();
    let key = app.stored("category:1:book:2:v1");
    assert_eq!(
        app.events(),
        [
            (EventKind::Miss, "BookStore", key.clone()),
            (EventKind::Fetch, "BookStore", key.clone())
        ]
    );
    BookStore::get(&app, 1, 2).await.unwrap();
    // With a local tier the hit may be served from it (once the tier
    // serves: at once on files and memcached, once subscribed on Redis).
    let events = app.events();
    let hit = match events.as_slice() {
        [(EventKind::LocalHit, _, _)] if app.cache.local_tiers_serving() => EventKind::LocalHit,
        _ => EventKind::Hit,
    };
    assert_eq!(events, [(hit, "BookStore", key)]);
}

async fn invalidate_refetches_and_update_replaces(app: App) {
    assert_eq!(BookStore::get(&app, 1, 2).await.unwrap().title, "book 2 1 first");
    *app.title_suffix.lock().unwrap() = "second".into();
    assert_eq!(
        BookStore::get(&app, 1, 2).await.unwrap().title,
        "book 2 1 first",
        "still cached"
    );

    BookStore::invalidate(&app, 1, 2).await.unwrap();
    assert_eq!(BookStore::get(&app, 1, 2).await.unwrap().title, "book 2 1 second");
    assert_eq!(app.fetched("book"), 2);

    *app.title_suffix.lock().unwrap() = "third".into();
    let updated = BookStore::update(&app, 1, 2).await.unwrap();
    assert_eq!(updated.title, "book 2 1 third");
    assert_eq!(BookStore::get(&app, 1, 2).await.unwrap().title, "book 2 1 third");
    assert_eq!(app.fetched("book"), 3, "update fetches once; the get after it hits");
}

async fn fetch_errors_reach_the_caller_and_are_not_cached(app: App) {
    *app.failing.lock().unwrap() = true;
    assert_eq!(
        StringValueStore::get(&app, 1).await,
        Err(AppError("string source is down".into()))
    );
    let err = StringValueStore::update(&app, 1).await.unwrap_err();
    assert!(matches!(err, cacheme::UpdateError::Fetch(AppError(_))));
    *app.failing.lock().unwrap() = false;
    assert_eq!(StringValueStore::get(&app, 1).await.unwrap(), "1-first");
    assert_eq!(app.fetched("string"), 3);
}

async fn different_parameter_lists_never_share_a_key(app: App) {
    assert_eq!(PairStore::get(&app, "a:b".into(), "c".into()).await.unwrap(), "a:b|c");
    assert_eq!(PairStore::get(&app, "a".into(), "b:c".into()).await.unwrap(), "a|b:c");
    assert_eq!(PairStore::get(&app, "a b".into(), "".into()).await.unwrap(), "a b|");
    assert_eq!(PairStore::get(&app, "a".into(), " ".into()).await.unwrap(), "a| ");
    assert_eq!(app.fetched("pair"), 4);
    assert_ne!(
        PairStore::key(&"a:b".into(), &"c".into()),
        PairStore::key(&"a".into(), &"b:c".into())
    );
}

async fn bumping_the_version_hides_old_values(app: App) {
    // Other tests in this binary use their own stores; only this one moves VERSION.
    VERSION.store(1, Ordering::SeqCst);
    assert_eq!(VersionedStore::get(&app, 5).await.unwrap(), "5@first");
    *app.title_suffix.lock().unwrap() = "second".into();
    assert_eq!(VersionedStore::get(&app, 5).await.unwrap(), "5@first");
    VERSION.store(2, Ordering::SeqCst);
    assert_eq!(
        VersionedStore::key(&5),
        "versioned:5:v2",
        "the version fn is called per key"
    );
    assert_eq!(
        VersionedStore::get(&app, 5).await.unwrap(),
        "5@second",
        "v2 does not see v1's value"
    );
    VERSION.store(1, Ordering::SeqCst);
    assert_eq!(
        VersionedStore::get(&app, 5).await.unwrap(),
        "5@first",
        "v1's value is still there"
    );
    assert_eq!(app.fetched("versioned"), 2);
}

async fn get_m_keeps_order_reads_by_params_and_fetches_duplicates_once(app: App) {
    BookStore::get(&app, 1, 1).await.unwrap();
    let mut m = BookStore::get_m(&app);
    m = m.add(1, 3).add(1, 1).add(2, 7).add(1, 3);
    let found = m.run().await.into_all().unwrap();
    let ids: Vec<u64> = found.iter().map(|b| b.id).collect();
    assert_eq!(ids, [3, 1, 7, 3]);
    assert_eq!((found.len(), found.distinct()), (4, 3));
    assert_eq!(found.get(&(2, 7)).unwrap().title, "book 7 2 first");
    assert!(found.get(&(9, 9)).is_none());
    assert_eq!(
        app.fetched("book"),
        3,
        "1 warm-up + 2 distinct misses; the hit and the duplicate are not fetched"
    );

    let again = BookStore::get_m(&app)
        .add(2, 7)
        .add(1, 3)
        .run()
        .await
        .into_all()
        .unwrap();
    assert_eq!(again.iter().map(|b| b.id).collect::<Vec<_>>(), [7, 3]);
    assert_eq!(app.fetched("book"), 3, "all hits now");
    let single = StringValueStore::get_m(&app)
        .add(4)
        .add(5)
        .run()
        .await
        .into_all()
        .unwrap();
    assert_eq!(single.get(&5).map(String::as_str), Some("5-first"));
}

async fn invalidate_all_removes_one_version_of_one_store(app: App) {
    for id in 0..50 {
        IntValueStore::get(&app, id).await.unwrap();
        StringValueStore::get(&app, id as u32).await.unwrap();
    }
    assert_eq!(
        IntValueStore::invalidate_all(&app, 2).await.unwrap(),
        0,
        "nothing was written as v2"
    );
    // Backends that cannot list keys move to a new generation and cannot count.
    let removed = if app.cache.cache().backend().supports_delete_matching() {
        50
    } else {
        0
    };
    assert_eq!(IntValueStore::invalidate_all(&app, 3).await.unwrap(), removed);
    for id in 0..50 {
        IntValueStore::get(&app, id).await.unwrap();
        StringValueStore::get(&app, id as u32).await.unwrap();
    }
    assert_eq!(app.fetched("int"), 100, "every int key was refetched");
    assert_eq!(app.fetched("string"), 50, "the other store was untouched");
}

#[tokio::test]
async fn the_stored_redis_key_is_prefix_key_version() {
    let app = App::redis().await;
    BookStore::get(&app, 7, 42).await.unwrap();
    let mut conn = app.raw_redis().await;
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    assert_eq!(keys, ["cacheme:category:7:book:42:v1"]);
    let ttl: i64 = ::redis::cmd("PTTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    assert!((290_000..=300_000).contains(&ttl), "ttl = \"5m\": {ttl}");
}

#[tokio::test]
async fn a_store_prefix_nests_inside_the_client_namespace() {
    let app = App::redis().await;
    StringValueStore::get(&app, 1).await.unwrap();
    ShopStringStore::get(&app, 1).await.unwrap();
    assert_eq!(ShopStringStore::key(&1), "shop:string:1:v1");
    let mut conn = app.raw_redis().await;
    let mut keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["cacheme:shop:string:1:v1", "cacheme:string:1:v1"]);
    assert_eq!(ShopStringStore::invalidate_all(&app, "1").await.unwrap(), 1);
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    assert_eq!(keys, ["cacheme:string:1:v1"], "only the prefixed store's key went");
    ShopStringStore::get(&app, 1).await.unwrap();
    app.cache.cache().clear().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    assert!(keys.is_empty(), "clear reaches prefixed stores too: {keys:?}");
}

#[tokio::test]
async fn a_value_that_no_longer_decodes_is_a_logged_miss_that_refetches() {
    let app = App::memory().await;
    // Another program (or an older build) left bytes of another type under the key.
    app.cache
        .cache()
        .put_forever("category:1:book:2:v1", b"\x05not a book")
        .await
        .unwrap();
    assert_eq!(BookStore::get(&app, 1, 2).await.unwrap(), book_of(2, "1 first"));
    let kinds: Vec<EventKind> = app.events().into_iter().map(|(kind, _, _)| kind).collect();
    assert_eq!(kinds, [EventKind::DecodeError, EventKind::Miss, EventKind::Fetch]);
    assert_eq!(BookStore::get(&app, 1, 2).await.unwrap(), book_of(2, "1 first"));
    assert_eq!(app.fetched("book"), 1, "the refetched value replaced the bad bytes");
}

#[tokio::test]
async fn a_dead_backend_degrades_to_the_source_not_to_an_error() {
    let mut app = App::redis().await;
    app._server.as_mut().unwrap().stop();
    assert_eq!(StringValueStore::get(&app, 1).await.unwrap(), "1-first");
    assert_eq!(app.fetched("string"), 1);
    let kinds: Vec<EventKind> = app.events().into_iter().map(|(kind, _, _)| kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::BackendError, // the read: the cache is skipped for this call
            EventKind::Fetch,
        ]
    );
    assert!(
        StringValueStore::invalidate(&app, 1).await.is_err(),
        "invalidate reports what it could not do"
    );
}

#[tokio::test]
async fn codecs_can_be_chosen_per_store_and_per_client() {
    let app = App::memory().await;
    MaybeBookStore::get(&app, 2).await.unwrap();
    let raw = app.cache.cache().get("maybe:2:v1").await.unwrap().unwrap();
    assert!(raw.starts_with(b"{\"id\":2"), "codec = \"json\" stores JSON");
    BooksStore::get(&app, "x".into()).await.unwrap();
    let raw = app.cache.cache().get("books:x:v1").await.unwrap().unwrap();
    assert_eq!(raw[0], 0x93, "codec = \"msgpack\" stores a MessagePack array of 3");

    let json_client = App::on(Cache::open("memory://").await.unwrap(), None);
    let json_client = App {
        cache: Client::builder()
            .cache(json_client.cache.cache().clone())
            .codec(cacheme::Codec::Json)
            .build()
            .unwrap(),
        ..json_client
    };
    StringValueStore::get(&json_client, 3).await.unwrap();
    let raw = json_client.cache.cache().get("string:3:v1").await.unwrap().unwrap();
    assert_eq!(raw, b"\"3-first\"", "the client's codec applies to stores without one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_all_handles_a_hundred_thousand_keys_on_redis() {
    let app = App::redis().await;
    let mut conn = app.raw_redis().await;
    let value = cacheme::Codec::Bincode.encode(&7i64).unwrap();
    for chunk in (0..100_000i64).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = ::redis::pipe();
        for id in chunk {
            pipe.set(format!("cacheme:{}", IntValueStore::key(id)), &value).ignore();
            if id % 100 == 0 {
                // Same store, another version; and another store: both must survive.
                pipe.set(format!("cacheme:int:{id}:v2"), &value).ignore();
                pipe.set(format!("cacheme:{}", StringValueStore::key(&(*id as u32))), &value)
                    .ignore();
            }
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    assert_eq!(
        IntValueStore::get(&app, 99_999).await.unwrap(),
        7,
        "the planted keys are the store's keys"
    );

    assert_eq!(IntValueStore::invalidate_all(&app, 3).await.unwrap(), 100_000);
    let left: u64 = ::redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(left, 2_000, "the other version and the other store are untouched");
    assert_eq!(
        IntValueStore::get(&app, 99_999).await.unwrap(),
        999_990,
        "refetched after invalidate_all"
    );
}

#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_all_reaches_keys_on_every_cluster_master() {
    let cluster = cacheme_test_support::RedisCluster::builder().replicas(0).start();
    let app = App {
        _guard: Some(Box::new(cluster.url())),
        ..App::on(Cache::open(&cluster.url()).await.unwrap(), None)
    };
    for id in 0..300 {
        IntValueStore::get(&app, id).await.unwrap();
        StringValueStore::get(&app, id as u32).await.unwrap();
    }
    // 300 keys hash to slots on all three masters.
    assert_eq!(IntValueStore::invalidate_all(&app, 3).await.unwrap(), 300);
    for id in 0..300 {
        IntValueStore::get(&app, id).await.unwrap();
        StringValueStore::get(&app, id as u32).await.unwrap();
    }
    assert_eq!(app.fetched("int"), 600, "every int key was refetched");
    assert_eq!(app.fetched("string"), 300, "the other store was untouched");
    drop(cluster);
}

#[cfg(feature = "memcached")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_all_by_generation_reaches_other_clients_within_their_refresh() {
    let server = cacheme_test_support::MemcachedServer::start();
    let writer = App::on(Cache::open(&server.url()).await.unwrap(), None);
    // A second process's view: no generation caching at all.
    let fresh = App {
        cache: Client::builder()
            .cache(Cache::open(&server.url()).await.unwrap())
            .generation_refresh(std::time::Duration::ZERO)
            .build()
            .unwrap(),
        ..App::on(Cache::open("memory://").await.unwrap(), None)
    };
    // And one that trusts what it read for a minute.
    let lagging = App {
        cache: Client::builder()
            .cache(Cache::open(&server.url()).await.unwrap())
            .generation_refresh(std::time::Duration::from_secs(60))
            .build()
            .unwrap(),
        ..App::on(Cache::open("memory://").await.unwrap(), None)
    };
    for app in [&writer, &fresh, &lagging] {
        assert_eq!(StringValueStore::get(app, 1).await.unwrap(), "1-first");
    }
    assert_eq!(writer.fetched("string"), 1, "the others read the writer's value");

    assert_eq!(StringValueStore::invalidate_all(&writer, 1).await.unwrap(), 0);
    *writer.title_suffix.lock().unwrap() = "second".into();
    assert_eq!(StringValueStore::get(&writer, 1).await.unwrap(), "1-second");
    assert_eq!(writer.fetched("string"), 2, "the invalidating client refetches at once");
    assert_eq!(
        StringValueStore::get(&fresh, 1).await.unwrap(),
        "1-second",
        "a client that rereads the generation sees the invalidation at once"
    );
    assert_eq!(
        StringValueStore::get(&lagging, 1).await.unwrap(),
        "1-first",
        "within its refresh a client still reads the generation it knew (documented)"
    );
    assert_eq!(fresh.fetched("string") + lagging.fetched("string"), 0);
    drop(server);
}
