//! Operations against a spawned redis-server (password protected) and a
//! spawned memcached: what `get`, `invalidate`, `invalidate-all` and
//! `stats` do is seen by the typed stores, and the password never appears
//! in any output.

mod support;

#[path = "fixtures/shop.rs"]
mod shop;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cacheme::stampede::Coordination;
use cacheme::{Cache, Client};
use cacheme_test_support::{MemcachedServer, RedisServer};
use serde_json::Value;
use shop::{AuthorStore, BookStore, PriceStore, Shop};
use support::Project;

const PASSWORD: &str = "s3cr3t-Pw";

/// The server a world's cache lives on (kept running while the world is).
enum Server {
    Redis(RedisServer),
    Memcached { _running: MemcachedServer },
}

struct World {
    server: Server,
    project: Project,
    shop: Shop,
    url: String,
    /// Everything the CLI printed, to search for the password.
    printed: Mutex<String>,
}

impl World {
    /// A password-protected Redis.
    async fn new() -> Self {
        let server = RedisServer::builder().password(PASSWORD).start();
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0?prefix=shop-app", server.port());
        World::on(Server::Redis(server), url).await
    }

    /// A memcached: typed stores there keep their values under a
    /// generation (`…:v1:g0`).
    async fn memcached() -> Self {
        let server = MemcachedServer::start();
        let url = format!("{}?prefix=shop-app", server.url());
        World::on(Server::Memcached { _running: server }, url).await
    }

    async fn on(server: Server, url: String) -> Self {
        // Generations read afresh on every call, so the stores see the
        // CLI's `invalidate-all` at once rather than within a second.
        let cache = Client::builder()
            .cache(Cache::open(&url).await.unwrap())
            .generation_refresh(Duration::ZERO)
            .build()
            .unwrap();
        let shop = Shop {
            cache,
            fetches: AtomicU32::new(0),
            edition: Mutex::new(1),
        };
        let project = Project::new(&[("src/lib.rs", include_str!("fixtures/shop.rs"))]);
        World {
            server,
            project,
            shop,
            url,
            printed: Mutex::new(String::new()),
        }
    }

    fn redis(&self) -> &RedisServer {
        match &self.server {
            Server::Redis(server) => server,
            Server::Memcached { .. } => panic!("not a Redis world"),
        }
    }

    /// Runs `cargo cacheme args...` with `CACHEME_URL` set; (exit code,
    /// stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = self
            .project
            .cacheme()
            .args(args)
            .env("CACHEME_URL", &self.url)
            .output()
            .unwrap();
        let (out, err) = (support::stdout(&output), support::stderr(&output));
        self.printed.lock().unwrap().push_str(&format!("{out}{err}"));
        (output.status.code().unwrap(), out, err)
    }

    fn fetches(&self) -> u32 {
        self.shop.fetches.load(Ordering::SeqCst)
    }

    fn assert_password_never_printed(&self) {
        let printed = self.printed.lock().unwrap();
        assert!(!printed.is_empty());
        assert!(!printed.contains(PASSWORD), "the password was printed:\n{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_invalidate_change_what_the_store_returns() {
    let w = World::new().await;
    let first = BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!(first.title, "sci:fi #42, edition 1");
    BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!(w.fetches(), 1, "the second get is a hit");

    // Positional values in template order; the key is escaped like the store's.
    let (code, out, err) = w.run(&["get", "--store", "BookStore", "sci:fi", "42"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("store: BookStore (src/lib.rs:29)"), "{out}");
    assert!(out.contains("key:   category:sci%3Afi:book:42:v1\n"), "{out}");
    assert_eq!(
        BookStore::key(&"sci:fi".to_owned(), &42),
        "category:sci%3Afi:book:42:v1"
    );
    let ttl = out.lines().find_map(|l| l.strip_prefix("ttl:   ")).unwrap();
    assert!(
        ttl.ends_with(" left") && (ttl.starts_with("4m") || ttl.starts_with("5m")),
        "{ttl}"
    );
    let json = out.split_once("bytes):\n").unwrap().1;
    let value: Value = serde_json::from_str(json).unwrap();
    assert_eq!(value, serde_json::json!({"id": 42, "title": "sci:fi #42, edition 1"}));

    // By name, and with --key: the same entry.
    let (code, by_name, _) = w.run(&[
        "get",
        "--store",
        "book",
        "--param",
        "book_id=42",
        "--param",
        "category_id=sci:fi",
    ]);
    assert_eq!((code, by_name.contains("edition 1")), (0, true), "{by_name}");
    let (code, raw, _) = w.run(&["get", "--key", "category:sci%3Afi:book:42:v1", "--codec", "json"]);
    assert_eq!((code, raw.contains("edition 1")), (0, true), "{raw}");
    // A raw key with no --codec: a JSON value is shown as JSON, not hex.
    let (code, raw, _) = w.run(&["get", "--key", "category:sci%3Afi:book:42:v1"]);
    assert_eq!(
        (code, raw.contains("value (json,") && raw.contains("edition 1")),
        (0, true),
        "{raw}"
    );

    // invalidate: the store refetches and now returns the new edition.
    *w.shop.edition.lock().unwrap() = 2;
    assert_eq!(
        BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap(),
        first,
        "still cached"
    );
    let (code, out, err) = w.run(&["invalidate", "--store", "BookStore", "sci:fi", "42"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("removed category:sci%3Afi:book:42:v1 from redis://:<redacted>@127.0.0.1:"),
        "{out}"
    );
    let fresh = BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!((fresh.title.as_str(), w.fetches()), ("sci:fi #42, edition 2", 2));

    // A missing key: exit 1, said plainly. Invalidating it again is no error.
    let (code, out, _) = w.run(&["get", "--store", "BookStore", "sci:fi", "43"]);
    assert_eq!(code, 1);
    assert!(out.contains("no value under this key in redis://:<redacted>@"), "{out}");
    let (code, out, _) = w.run(&["invalidate", "--store", "BookStore", "sci:fi", "43"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to remove"), "{out}");

    // A store on the client's codec (bincode here) with a prefix: not
    // JSON, so shown as hex, under prefix:key.
    AuthorStore::get(&w.shop, 7).await.unwrap();
    let (code, out, _) = w.run(&["get", "--store", "AuthorStore", "7"]);
    assert_eq!(code, 0);
    assert!(out.contains("key:   people:author:7:v1\n"), "{out}");
    let hex: String = cacheme::Codec::Bincode
        .encode("author 7")
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        out.contains(&format!(
            "hex; not JSON, and no codec known: pass --codec msgpack to decode MessagePack):\n{hex}\n"
        )),
        "{out}"
    );

    w.assert_password_never_printed();
}

/// `invalidate` and `invalidate-all` reach the local tiers of running
/// processes (announced over pub/sub, as a store's own invalidations are):
/// a process reading through a tier sees the new state, not the value its
/// tier held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_reach_the_local_tiers_of_running_processes() {
    let w = World::new().await;
    let reader = Shop {
        cache: Client::builder()
            .cache(Cache::open(&w.url).await.unwrap())
            .local(cacheme::LocalTier::new(100))
            .build()
            .unwrap(),
        fetches: AtomicU32::new(0),
        edition: Mutex::new(1),
    };
    let title = |edition: u32| format!("sci:fi #42, edition {edition}");
    // The tier serves once the reader hears announcements (from its
    // first get on); then the value it reads is held.
    BookStore::get(&reader, "sci:fi".into(), 42).await.unwrap();
    until(|| async { reader.cache.local_tiers_serving() }).await;
    BookStore::get(&reader, "sci:fi".into(), 42).await.unwrap();
    let held = reader.cache.stats().store("BookStore").unwrap().local_hits;
    assert_eq!(
        BookStore::get(&reader, "sci:fi".into(), 42).await.unwrap().title,
        title(1)
    );
    assert_eq!(
        reader.cache.stats().store("BookStore").unwrap().local_hits,
        held + 1,
        "served from the tier"
    );

    for (edition, args) in [
        (2, &["invalidate", "--store", "BookStore", "sci:fi", "42"][..]),
        (3, &["invalidate-all", "--store", "BookStore"][..]),
    ] {
        *reader.edition.lock().unwrap() = edition;
        let (code, _, err) = w.run(args);
        assert_eq!(code, 0, "{err}");
        until(|| async { BookStore::get(&reader, "sci:fi".into(), 42).await.unwrap().title == title(edition) }).await;
        // Held again: the next get is served from the tier.
        until(|| async { reader.cache.local_entries() == 1 }).await;
    }
}

/// Polls `condition` until it holds; fails after 30 s.
async fn until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !condition().await {
        assert!(start.elapsed() < Duration::from_secs(30), "the condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A value of a store with `stale_for` is stored with its dates: `get`
/// shows them, and decodes the value behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_the_dates_of_a_fail_safe_value_and_decodes_it() {
    let w = World::new().await;
    assert_eq!(PriceStore::get(&w.shop, 3).await.unwrap(), 300);
    let (code, out, err) = w.run(&["get", "--store", "PriceStore", "3"]);
    assert_eq!(code, 0, "{err}");
    let dates = out.lines().find_map(|l| l.strip_prefix("dates: ")).expect(&out);
    assert!(dates.starts_with("written "), "{dates}");
    assert!(
        dates.contains(", fresh for 4m") || dates.contains(", fresh for 5m"),
        "{dates}"
    );
    assert!(dates.contains("kept for the fail-safe 1h"), "{dates}");
    let json = out.split_once("bytes):\n").unwrap().1;
    assert_eq!(serde_json::from_str::<Value>(json).unwrap(), serde_json::json!(300));
    // The server keeps it until its stale end: about 1h5m.
    let ttl = out.lines().find_map(|l| l.strip_prefix("ttl:   ")).unwrap();
    assert!(ttl.starts_with("1h4m") || ttl.starts_with("1h5m"), "{ttl}");
    w.assert_password_never_printed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_counts_per_store_and_invalidate_all_removes_one_store_and_version() {
    let w = World::new().await;
    for id in 0..5 {
        BookStore::get(&w.shop, "c".into(), id).await.unwrap();
    }
    AuthorStore::get(&w.shop, 1).await.unwrap();
    // A value of version 2 (as a newer release would write) and a key of
    // no store, in the same namespace.
    let cache = w.shop.cache.cache();
    let v2 = BookStore::key(&"c".to_owned(), &0).replace(":v1", ":v2");
    cache.put(&v2, b"{}", std::time::Duration::from_secs(60)).await.unwrap();
    cache
        .put("misc", b"x", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(w.fetches(), 6);

    let (code, out, err) = w.run(&["stats", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        stats["stores"],
        serde_json::json!([
            {"store": "BookStore", "version": "1", "keys": 5},
            {"store": "BookStore", "version": "2", "keys": 1},
            {"store": "AuthorStore", "version": "1", "keys": 1},
            {"store": "PriceStore", "version": "1", "keys": 0},
        ])
    );
    assert_eq!(
        (stats["other_keys"].as_u64(), stats["total_keys"].as_u64()),
        (Some(1), Some(8))
    );
    assert!(stats["memory_used_bytes"].as_u64().unwrap() > 0);
    assert!(
        stats["cache"]
            .as_str()
            .unwrap()
            .starts_with("redis://:<redacted>@127.0.0.1:")
    );

    let (code, table, _) = w.run(&["stats"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("BookStore            1        5     category:<category_id>:book:<book_id>"),
        "{table}"
    );
    assert!(table.contains("(no declared store)  -        1"), "{table}");
    assert!(table.contains("total keys: 8\nserver memory used: "), "{table}");

    // Version 1 of BookStore goes; version 2, the other store and the
    // foreign key stay; the store refetches.
    let (code, out, err) = w.run(&["invalidate-all", "--store", "BookStore", "--version", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "removed 5 key(s) of BookStore version 1 (category:<category_id>:book:<book_id>) from redis://:<redacted>@"
        ),
        "{out}"
    );
    assert!(cache.exists(&v2).await.unwrap() && cache.exists("misc").await.unwrap());
    assert!(cache.exists(&AuthorStore::key(&1)).await.unwrap());
    BookStore::get(&w.shop, "c".into(), 3).await.unwrap();
    assert_eq!(w.fetches(), 7, "the store refetches what invalidate-all removed");
    // The declared version is the default.
    let (code, out, _) = w.run(&["invalidate-all", "--store", "BookStore"]);
    assert_eq!(
        (code, out.starts_with("removed 1 key(s) of BookStore version 1")),
        (0, true),
        "{out}"
    );

    w.assert_password_never_printed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_breaks_the_fetch_lock_so_a_fill_in_flight_does_not_land() {
    let w = World::new().await;
    let cache = w.shop.cache.cache();
    let key = BookStore::key(&"sci:fi".to_owned(), &42);
    let Coordination::Custom(coordinator) = cache.backend().coordination() else {
        panic!("Redis coordinates fetches with a coordinator of its own");
    };
    // Another process is fetching the key: it holds the fetch lock
    // (`prefix:{prefix:key}:lock`; the cache adds the first prefix).
    let ttl = Duration::from_secs(60);
    assert!(coordinator.try_lock(&key, "fetcher-1", ttl).await.unwrap());
    let lock = format!("{{shop-app:{key}}}:lock");
    assert!(cache.exists(&lock).await.unwrap(), "the lock is where the test looks");

    let (code, out, err) = w.run(&["invalidate", "--store", "BookStore", "sci:fi", "42"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing to remove"), "{out}");
    assert!(!cache.exists(&lock).await.unwrap(), "invalidate broke the lock");

    // The fetch that started before the invalidation cannot store its
    // (now stale) value, and the store fetches afresh.
    let stale = br#"{"id":42,"title":"stale"}"#;
    assert!(!coordinator.fill(&key, "fetcher-1", stale, ttl).await.unwrap());
    assert!(!cache.exists(&key).await.unwrap());
    let book = BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!((book.title.as_str(), w.fetches()), ("sci:fi #42, edition 1", 1));

    w.assert_password_never_printed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memcached_store_keys_are_found_under_the_store_generation() {
    let w = World::memcached().await;
    let cache = w.shop.cache.cache();
    let first = BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    AuthorStore::get(&w.shop, 7).await.unwrap();
    assert_eq!(w.fetches(), 2);
    // Where the typed store keeps the value: its key plus generation 0.
    let key = BookStore::key(&"sci:fi".to_owned(), &42);
    let stored = format!("{key}:g0");
    assert!(!cache.exists(&key).await.unwrap() && cache.exists(&stored).await.unwrap());

    // get finds it, and prints the key it read.
    let (code, out, err) = w.run(&["get", "--store", "BookStore", "sci:fi", "42"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("key:   category:sci%3Afi:book:42:v1:g0\n"), "{out}");
    assert!(
        out.contains("ttl:   unknown (the memcache backend does not report TTLs)"),
        "{out}"
    );
    let json = out.split_once("bytes):\n").unwrap().1;
    let value: Value = serde_json::from_str(json).unwrap();
    assert_eq!(value, serde_json::json!({"id": 42, "title": first.title}));
    // --key with --store is a key of the store; alone, the exact cache key.
    let (code, out, _) = w.run(&["get", "--store", "BookStore", "--key", &key]);
    assert_eq!((code, out.contains(&format!("key:   {stored}\n"))), (0, true), "{out}");
    let (code, _, _) = w.run(&["get", "--key", &key, "--codec", "json"]);
    assert_eq!(code, 1, "nothing is stored under the bare store key");
    let (code, out, _) = w.run(&["get", "--key", &stored, "--codec", "json"]);
    assert_eq!((code, out.contains("edition 1")), (0, true), "{out}");

    // invalidate removes the value and its fetch lock (`{key} lock` of
    // the polling coordinator); the store refetches.
    let lock = format!("{stored} lock");
    cache.put(&lock, b"fetcher-1", Duration::from_secs(60)).await.unwrap();
    *w.shop.edition.lock().unwrap() = 2;
    let (code, out, err) = w.run(&["invalidate", "--store", "BookStore", "sci:fi", "42"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("removed category:sci%3Afi:book:42:v1:g0 from memcache://127.0.0.1:"),
        "{out}"
    );
    assert!(!cache.exists(&stored).await.unwrap());
    assert!(!cache.exists(&lock).await.unwrap(), "invalidate broke the lock");
    let fresh = BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!((fresh.title.as_str(), w.fetches()), ("sci:fi #42, edition 2", 3));

    // invalidate-all moves the store's version 1 to generation 1: the
    // store misses, other versions and stores keep theirs.
    *w.shop.edition.lock().unwrap() = 3;
    let (code, out, err) = w.run(&["invalidate-all", "--store", "BookStore"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "moved BookStore version 1 (category:<category_id>:book:<book_id>) to a new generation in memcache://127.0.0.1:"
        ),
        "{out}"
    );
    let counter = cache.get("cacheme generation:BookStore:v1").await.unwrap();
    assert_eq!(counter.as_deref(), Some(&b"1"[..]));
    let after = BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!((after.title.as_str(), w.fetches()), ("sci:fi #42, edition 3", 4));
    AuthorStore::get(&w.shop, 7).await.unwrap();
    let (code, _, err) = w.run(&["invalidate-all", "--store", "BookStore", "--version", "2"]);
    assert_eq!(code, 0, "{err}");
    BookStore::get(&w.shop, "sci:fi".into(), 42).await.unwrap();
    assert_eq!(w.fetches(), 4, "AuthorStore and BookStore version 1 still hit");
    let (code, out, _) = w.run(&["get", "--store", "BookStore", "sci:fi", "42"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("key:   category:sci%3Afi:book:42:v1:g1\n") && out.contains("edition 3"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_errors_too() {
    let w = World::new().await;
    let port = w.redis().port();
    for url in [
        format!("redis://:wrong-{PASSWORD}@127.0.0.1:{port}/0"),
        format!("redis://user:{PASSWORD}@127.0.0.1:{port}/0"),
        format!("redis://:{PASSWORD}@127.0.0.1:1/0"),
        format!("redis-cluster://:{PASSWORD}@127.0.0.1:1,127.0.0.1:2"),
        format!("redis://:{PASSWORD}@127.0.0.1:{port}/0?prefix=a&bogus=1"),
    ] {
        for args in [&["stats"][..], &["get", "--key", "k"], &["invalidate", "--key", "k"]] {
            let output = w.project.cacheme().args(args).args(["--url", &url]).output().unwrap();
            let (out, err) = (support::stdout(&output), support::stderr(&output));
            assert_eq!(output.status.code(), Some(1), "{url} {args:?}: {out}{err}");
            assert!(err.starts_with("error: cannot open the cache at redis"), "{err}");
            assert!(!format!("{out}{err}").contains(PASSWORD), "{url}: {out}{err}");
        }
    }
}

/// A secret under any name in a URL's query (or fragment) never reaches
/// stdout or stderr, whether the cache opens or not, by `--url` or by
/// `CACHEME_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_under_any_name_stay_out_of_all_output() {
    const SECRET: &str = "zq9-Hidden-Value";
    let w = World::new().await;
    let port = w.redis().port();
    let spellings = [
        "password",
        "pasword",
        "passwd",
        "pwd",
        "requirepass",
        "auth",
        "apiKey",
        "token",
        "secret",
    ];
    let mut urls = Vec::new();
    for spelling in spellings {
        urls.extend([
            format!("redis://127.0.0.1:{port}/0?prefix=a&{spelling}={SECRET}"),
            format!("redis://:{PASSWORD}@127.0.0.1:{port}/0?{spelling}={SECRET}"),
            format!("redis-cluster://127.0.0.1:1,127.0.0.1:2?{spelling}={SECRET}"),
            format!("memcache://127.0.0.1:1?{spelling}={SECRET}"),
            format!("memory://?{spelling}={SECRET}"),
            format!("file:///tmp/cacheme-cli-secrets?{spelling}={SECRET}"),
        ]);
    }
    // Opens: the URL is echoed (stats), its fragment hidden.
    let opens = format!("redis://:{PASSWORD}@127.0.0.1:{port}/0?prefix=shop-app#{SECRET}");
    let output = w.project.cacheme().args(["stats", "--url", &opens]).output().unwrap();
    let out = support::stdout(&output);
    assert!(output.status.success(), "{out}{}", support::stderr(&output));
    assert!(out.contains("cache: redis://:<redacted>@127.0.0.1:"), "{out}");
    urls.push(opens);
    urls.push(format!("redis:{SECRET}@127.0.0.1:{port}"));
    urls.push(SECRET.to_owned());

    for url in &urls {
        for args in [&["stats"][..], &["get", "--key", "k"], &["invalidate", "--key", "k"]] {
            let by_flag = w.project.cacheme().args(args).args(["--url", url]).output().unwrap();
            let by_env = w.project.cacheme().args(args).env("CACHEME_URL", url).output().unwrap();
            for output in [by_flag, by_env] {
                let printed = format!("{}{}", support::stdout(&output), support::stderr(&output));
                assert!(!printed.is_empty(), "{url} {args:?}");
                assert!(
                    !printed.contains(SECRET) && !printed.contains(PASSWORD),
                    "{url} {args:?}: {printed}"
                );
            }
        }
    }
}

#[tokio::test]
async fn backends_that_cannot_walk_keys_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let project = Project::new(&[("src/lib.rs", include_str!("fixtures/shop.rs"))]);
    let cache = cacheme::Cache::open(&url).await.unwrap();
    cache
        .put(
            "people:author:1:v1",
            b"\x08author 1",
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();

    let output = project.cacheme().args(["stats", "--url", &url]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        support::stderr(&output).contains("cannot walk the cache's keys: file cache does not support scan_keys"),
        "{}",
        support::stderr(&output)
    );
    let output = project
        .cacheme()
        .args(["get", "--store", "AuthorStore", "1", "--url", &url])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        support::stdout(&output).contains("ttl:   unknown (the file backend does not report TTLs)"),
        "{}",
        support::stdout(&output)
    );
}
