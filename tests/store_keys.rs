//! `invalidate_all` of one store never deletes another store's key, on a
//! real Redis (SCAN MATCH then a check of every key against the template)
//! and on memory (the check alone): neither a store with more segments
//! (`foo:<a>:<b>` beside `foo:<id>`) nor a literal no value can spell
//! (`report:*` beside `report:<id>`: a value's `*` is escaped).

use std::sync::atomic::{AtomicU32, Ordering};

use cacheme::{Cache, Client, Context, cache_store};
use cacheme_test_support::RedisServer;

struct App {
    cache: Client,
    fetches: AtomicU32,
    _server: Option<RedisServer>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

impl App {
    async fn on(url: &str, server: Option<RedisServer>) -> App {
        App {
            cache: Client::builder()
                .cache(Cache::open(url).await.unwrap())
                .build()
                .unwrap(),
            fetches: AtomicU32::new(0),
            _server: server,
        }
    }

    fn fetch(&self, value: String) -> Result<String, ()> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    fn fetches(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[cache_store(key = "foo:<id>", ttl = "1m")]
async fn foo(ctx: &App, id: String) -> Result<String, ()> {
    ctx.fetch(format!("foo {id}"))
}

#[cache_store(key = "foo:<a>:<b>", ttl = "1m")]
async fn foo_pair(ctx: &App, a: String, b: String) -> Result<String, ()> {
    ctx.fetch(format!("pair {a} {b}"))
}

#[cache_store(key = "report:<id>", ttl = "1m")]
async fn report(ctx: &App, id: String) -> Result<String, ()> {
    ctx.fetch(format!("report {id}"))
}

// The summary of all reports: a literal `*`, which no `<id>` can write.
#[cache_store(key = "report:*", ttl = "1m")]
async fn all_reports(ctx: &App) -> Result<String, ()> {
    ctx.fetch("all reports".to_owned())
}

/// Fills one key of each store, invalidates `foo:<id>` and `report:<id>`,
/// and shows the others' values are still cached (read without a fetch).
async fn invalidate_all_leaves_similar_stores_alone(app: &App) {
    let seven = || "7".to_owned();
    FooStore::get(app, seven()).await.unwrap();
    FooPairStore::get(app, seven(), "8".to_owned()).await.unwrap();
    ReportStore::get(app, seven()).await.unwrap();
    AllReportsStore::get(app).await.unwrap();
    // Even a value that looks like another store's segment stays one segment.
    FooStore::get(app, "7:8".to_owned()).await.unwrap();
    assert_eq!(FooStore::key(&"7:8".to_owned()), "foo:7%3A8:v1");
    assert_eq!(app.fetches(), 5);

    assert_eq!(
        FooStore::invalidate_all(app, 1).await.unwrap(),
        2,
        "foo:7 and foo:7%3A8"
    );
    assert_eq!(ReportStore::invalidate_all(app, 1).await.unwrap(), 1, "report:7 only");

    let pair = FooPairStore::get(app, seven(), "8".to_owned()).await.unwrap();
    let all = AllReportsStore::get(app).await.unwrap();
    assert_eq!((pair.as_str(), all.as_str()), ("pair 7 8", "all reports"));
    assert_eq!(app.fetches(), 5, "the other stores' values were not deleted");
    FooStore::get(app, seven()).await.unwrap();
    ReportStore::get(app, seven()).await.unwrap();
    assert_eq!(app.fetches(), 7, "the invalidated stores refetch");
}

#[tokio::test]
async fn on_memory() {
    invalidate_all_leaves_similar_stores_alone(&App::on("memory://", None).await).await;
}

#[tokio::test]
async fn on_redis() {
    let server = RedisServer::start();
    let url = server.url();
    let app = App::on(&url, Some(server)).await;
    invalidate_all_leaves_similar_stores_alone(&app).await;
    // What is left in Redis, read with a plain client.
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cacheme:foo:7:8:v1",
            "cacheme:foo:7:v1",
            "cacheme:report:*:v1",
            "cacheme:report:7:v1"
        ]
    );
}

/// A key parameter's type is taken for what it is, not for how it is
/// spelled: a `String` that is not std's is written with its `Display`.
mod shadowed {
    use std::fmt;

    use cacheme::cache_store;

    use super::App;

    /// Spelled like std's, but an id with its own `Display`.
    #[derive(Clone)]
    pub struct String(pub u32);

    impl fmt::Display for String {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "id:{}", self.0)
        }
    }

    #[allow(non_camel_case_types)]
    #[derive(Clone)]
    pub struct u64(pub &'static str);

    impl fmt::Display for u64 {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    #[cache_store(key = "shadowed:<id>:<n>", ttl = "1m")]
    pub async fn shadowed(ctx: &App, id: String, n: u64) -> Result<std::string::String, ()> {
        ctx.fetch(format!("{id} {n}"))
    }
}

#[tokio::test]
async fn a_key_parameter_named_like_a_std_type_is_written_with_its_display() {
    use shadowed::{ShadowedStore, String, u64};
    assert_eq!(
        ShadowedStore::key(&String(7), &u64("seven")),
        "shadowed:id%3A7:seven:v1"
    );
    let app = App::on("memory://", None).await;
    assert_eq!(ShadowedStore::get(&app, String(7), u64("x")).await.unwrap(), "id:7 x");
    assert_eq!(ShadowedStore::get(&app, String(7), u64("x")).await.unwrap(), "id:7 x");
    assert_eq!(app.fetches(), 1, "the second get was a hit on the same key");
}
