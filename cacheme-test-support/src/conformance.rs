//! The backend conformance suite: written once, run unchanged against every
//! provider.
//!
//! A provider's test file implements [`Fixture`] (or uses one of the
//! fixtures here) and expands [`conformance_suite!`](crate::conformance_suite)
//! inside a module; each case becomes its own `#[tokio::test]`.
//!
//! ```text
//! mod memory {
//!     cacheme_test_support::conformance_suite!(cacheme_test_support::conformance::MemoryFixture::default());
//! }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cacheme_runtime::{BoxFuture, Cache, Error, MAX_TTL};

use crate::RedisServer;

/// Gives the suite caches of the provider under test.
pub trait Fixture: Send + Sync {
    /// A cache in `namespace`. Caches of one namespace share their data;
    /// caches of different namespaces must not see (or clear) each other's
    /// keys. For a server provider: the same server, another key prefix.
    fn cache<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Cache>;
}

/// Memory caches: one instance per namespace.
#[derive(Default)]
pub struct MemoryFixture {
    caches: Mutex<HashMap<String, Cache>>,
}

impl Fixture for MemoryFixture {
    fn cache<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Cache> {
        Box::pin(async move {
            if let Some(cache) = self.caches.lock().unwrap().get(namespace) {
                return cache.clone();
            }
            let cache = Cache::new("memory", r#"{"interval":1}"#).await.expect("memory cache");
            self.caches
                .lock()
                .unwrap()
                .entry(namespace.to_owned())
                .or_insert(cache)
                .clone()
        })
    }
}

/// Redis caches on a `redis-server` started for this test; the namespace is
/// the key prefix (Beego's `key`).
pub struct RedisFixture {
    /// The server, for tests that want to look at it directly.
    pub server: RedisServer,
}

impl RedisFixture {
    /// Starts the server.
    pub fn start() -> Self {
        RedisFixture {
            server: RedisServer::start(),
        }
    }
}

impl Fixture for RedisFixture {
    fn cache<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Cache> {
        Box::pin(async move {
            let config = format!(r#"{{"key":"{namespace}","conn":"{}"}}"#, self.server.addr());
            Cache::new("redis", &config).await.expect("redis cache")
        })
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each building its
/// own fixture with the given expression.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_suite!(@cases $fixture;
            missing_key_is_none,
            set_get_overwrite_delete,
            ttl_expiry_including_sub_second,
            sub_second_ttl_is_not_rounded,
            no_ttl_never_expires,
            get_many_keeps_order_and_gaps,
            incr_decr_semantics,
            incr_refuses_non_integers,
            incr_refuses_overflow,
            incr_keeps_the_ttl,
            clear_removes_only_this_cache,
            namespaces_that_start_alike_stay_apart,
            one_mib_value,
            binary_values_with_nul_bytes,
            empty_value_is_not_a_missing_key,
            unusual_keys_are_distinct,
            concurrent_incr_sums_exactly,
            set_if_absent_and_delete_if_equals,
            typed_values_round_trip,
            any_duration_is_a_ttl
        );
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $fixture;
                $crate::conformance::$case(&fixture).await;
            }
        )*
    };
}

/// `get` of a key never written is `None`; so is `exists`.
pub async fn missing_key_is_none(f: &impl Fixture) {
    let cache = f.cache("missing").await;
    assert_eq!(cache.get("never-written").await.unwrap(), None);
    assert!(!cache.exists("never-written").await.unwrap());
    assert!(!cache.delete("never-written").await.unwrap());
}

/// Writes are read back, overwritten, and deleted.
pub async fn set_get_overwrite_delete(f: &impl Fixture) {
    let cache = f.cache("basic").await;
    cache.put("k", b"one", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
    cache.put("k", b"two", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"two"[..]));
    assert!(cache.exists("k").await.unwrap());
    assert!(cache.delete("k").await.unwrap());
    assert!(!cache.delete("k").await.unwrap());
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert!(!cache.exists("k").await.unwrap());
}

/// A value with a TTL is there before it and gone (get and exists) after.
pub async fn ttl_expiry_including_sub_second(f: &impl Fixture) {
    let cache = f.cache("ttl").await;
    cache.put("short", b"v", Duration::from_millis(300)).await.unwrap();
    cache.put("long", b"v", Duration::from_secs(60)).await.unwrap();
    assert!(cache.exists("short").await.unwrap());
    assert_eq!(cache.get("short").await.unwrap().as_deref(), Some(&b"v"[..]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        cache.get("short").await.unwrap(),
        None,
        "a 300 ms TTL must have expired after 800 ms"
    );
    assert!(
        !cache.exists("short").await.unwrap(),
        "exists must be false once expired"
    );
    assert_eq!(cache.get_multi(&["short", "long"]).await.unwrap()[0], None);
    assert!(cache.exists("long").await.unwrap());
}

/// 1.5 s stays 1.5 s: not rounded down to 1 s, not up to 2 s or a default.
pub async fn sub_second_ttl_is_not_rounded(f: &impl Fixture) {
    let cache = f.cache("ttl-round").await;
    cache.put("k", b"v", Duration::from_millis(1500)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1150)).await;
    assert!(
        cache.exists("k").await.unwrap(),
        "a 1.5 s TTL must not be rounded down to 1 s"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !cache.exists("k").await.unwrap(),
        "a 1.5 s TTL must be over after 1.85 s"
    );
}

/// `put_forever` outlives a TTL that a previous write had.
pub async fn no_ttl_never_expires(f: &impl Fixture) {
    let cache = f.cache("forever").await;
    cache.put("k", b"old", Duration::from_millis(200)).await.unwrap();
    cache.put_forever("k", b"new").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
}

/// `get_many` answers in the order asked, `None` for gaps, duplicates repeated.
pub async fn get_many_keeps_order_and_gaps(f: &impl Fixture) {
    let cache = f.cache("many").await;
    for (key, value) in [("a", "1"), ("c", "3"), ("e", "5")] {
        cache.put_forever(key, value).await.unwrap();
    }
    let got = cache.get_multi(&["e", "b", "a", "missing", "c", "a"]).await.unwrap();
    let got: Vec<Option<&[u8]>> = got.iter().map(|v| v.as_deref()).collect();
    assert_eq!(got, [Some(&b"5"[..]), None, Some(b"1"), None, Some(b"3"), Some(b"1")]);
    assert!(cache.get_multi::<&str>(&[]).await.unwrap().is_empty());
    let many: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    for key in many.iter().step_by(2) {
        cache.put_forever(key, key).await.unwrap();
    }
    let got = cache.get_multi(&many).await.unwrap();
    for (i, value) in got.iter().enumerate() {
        let expected = (i % 2 == 0).then(|| many[i].as_bytes());
        assert_eq!(value.as_deref(), expected, "position {i}");
    }
}

/// Absent counters start at 0; values are decimal text, as Redis stores them.
pub async fn incr_decr_semantics(f: &impl Fixture) {
    let cache = f.cache("counters").await;
    assert_eq!(cache.incr("n").await.unwrap(), 1);
    assert_eq!(cache.incr_by("n", 10).await.unwrap(), 11);
    assert_eq!(cache.decr("n").await.unwrap(), 10);
    assert_eq!(cache.decr_by("n", 25).await.unwrap(), -15);
    assert_eq!(cache.get("n").await.unwrap().as_deref(), Some(&b"-15"[..]));
    assert_eq!(cache.get_counter("n").await.unwrap(), Some(-15));
    assert_eq!(cache.decr("fresh").await.unwrap(), -1);
    cache.put_forever("preset", b"41").await.unwrap();
    assert_eq!(cache.incr("preset").await.unwrap(), 42);
    assert_eq!(cache.get_counter("absent").await.unwrap(), None);
}

/// A value that is not a decimal integer is an error and stays unchanged.
pub async fn incr_refuses_non_integers(f: &impl Fixture) {
    let cache = f.cache("not-int").await;
    for bad in [&b"abc"[..], b"1.5", b" 1", b"", b"\x00\x01"] {
        cache.put_forever("k", bad).await.unwrap();
        let err = cache.incr("k").await.unwrap_err();
        assert!(matches!(err, Error::NotAnInteger { .. }), "{bad:?}: {err}");
        assert_eq!(
            cache.get("k").await.unwrap().as_deref(),
            Some(bad),
            "the value must be unchanged"
        );
    }
    cache.put_forever("k", b"abc").await.unwrap();
    assert!(matches!(
        cache.get_counter("k").await.unwrap_err(),
        Error::NotAnInteger { .. }
    ));
}

/// Leaving the i64 range is an error, never a wrap; the value stays.
pub async fn incr_refuses_overflow(f: &impl Fixture) {
    let cache = f.cache("overflow").await;
    let max = i64::MAX.to_string();
    cache.put_forever("max", &max).await.unwrap();
    assert!(matches!(cache.incr("max").await.unwrap_err(), Error::Overflow { .. }));
    assert_eq!(cache.get("max").await.unwrap().as_deref(), Some(max.as_bytes()));
    let min = i64::MIN.to_string();
    cache.put_forever("min", &min).await.unwrap();
    assert!(matches!(cache.decr("min").await.unwrap_err(), Error::Overflow { .. }));
    assert_eq!(cache.get("min").await.unwrap().as_deref(), Some(min.as_bytes()));
    assert!(matches!(
        cache.decr_by("zero", i64::MIN).await.unwrap_err(),
        Error::Overflow { .. }
    ));
    assert_eq!(cache.incr_by("big", i64::MAX).await.unwrap(), i64::MAX);
}

/// Incrementing a counter that has a TTL keeps the TTL (Redis semantics).
pub async fn incr_keeps_the_ttl(f: &impl Fixture) {
    let cache = f.cache("incr-ttl").await;
    cache.put("n", b"5", Duration::from_millis(400)).await.unwrap();
    assert_eq!(cache.incr("n").await.unwrap(), 6);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(cache.get("n").await.unwrap(), None, "the counter must still expire");
}

/// `clear` empties this cache; another namespace on the same backend keeps
/// its keys.
pub async fn clear_removes_only_this_cache(f: &impl Fixture) {
    let mine = f.cache("clear-mine").await;
    let other = f.cache("clear-other").await;
    for i in 0..2500 {
        mine.put_forever(&format!("k{i}"), b"v").await.unwrap();
    }
    mine.incr("counter").await.unwrap();
    other.put_forever("k1", b"keep").await.unwrap();
    mine.clear().await.unwrap();
    assert_eq!(mine.get("k1").await.unwrap(), None);
    assert_eq!(mine.get("k2499").await.unwrap(), None);
    assert!(!mine.exists("counter").await.unwrap());
    assert_eq!(other.get("k1").await.unwrap().as_deref(), Some(&b"keep"[..]));
    mine.put_forever("after", b"v").await.unwrap();
    assert!(mine.exists("after").await.unwrap(), "the cache is usable after clear");
}

/// Two namespaces whose names start alike (`ns` and `ns-sessions`) never
/// see or clear each other's keys, whatever the keys look like.
pub async fn namespaces_that_start_alike_stay_apart(f: &impl Fixture) {
    let short = f.cache("ns").await;
    let long = f.cache("ns-sessions").await;
    long.put_forever("k", b"long").await.unwrap();
    short.put_forever("k", b"short").await.unwrap();
    for lookalike in ["-sessions:k", "sessions:k", "-sessions", ":k"] {
        assert_eq!(short.get(lookalike).await.unwrap(), None, "{lookalike:?}");
    }
    assert_eq!(long.get("k").await.unwrap().as_deref(), Some(&b"long"[..]));
    short.clear().await.unwrap();
    assert_eq!(short.get("k").await.unwrap(), None);
    assert_eq!(
        long.get("k").await.unwrap().as_deref(),
        Some(&b"long"[..]),
        "clear of ns"
    );
    short.put_forever("k", b"short").await.unwrap();
    long.clear().await.unwrap();
    assert_eq!(long.get("k").await.unwrap(), None);
    assert_eq!(
        short.get("k").await.unwrap().as_deref(),
        Some(&b"short"[..]),
        "clear of ns-sessions"
    );
}

/// A 1 MiB value round-trips byte for byte.
pub async fn one_mib_value(f: &impl Fixture) {
    let cache = f.cache("big").await;
    let value: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    cache.put("big", &value, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("big").await.unwrap().as_deref(), Some(&value[..]));
}

/// Every byte value, NUL included, survives.
pub async fn binary_values_with_nul_bytes(f: &impl Fixture) {
    let cache = f.cache("binary").await;
    let value: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10, 0]).collect();
    cache.put_forever("bin", &value).await.unwrap();
    assert_eq!(cache.get("bin").await.unwrap().as_deref(), Some(&value[..]));
    assert_eq!(cache.get_multi(&["bin"]).await.unwrap()[0].as_deref(), Some(&value[..]));
}

/// An empty value is `Some(empty)`, not `None`.
pub async fn empty_value_is_not_a_missing_key(f: &impl Fixture) {
    let cache = f.cache("empty").await;
    cache.put_forever("empty", b"").await.unwrap();
    assert_eq!(cache.get("empty").await.unwrap(), Some(Vec::new()));
    assert!(cache.exists("empty").await.unwrap());
    assert_eq!(
        cache.get_multi(&["empty", "missing"]).await.unwrap(),
        [Some(Vec::new()), None]
    );
}

/// Keys with separators, spaces, glob and control characters, and unicode
/// are stored and told apart.
pub async fn unusual_keys_are_distinct(f: &impl Fixture) {
    let cache = f.cache("keys").await;
    let keys = [
        "a:b",
        "a b",
        "a*",
        "a?",
        "[a]",
        "a\nb",
        "a\tb",
        "ключ",
        "🦀",
        "../../etc/passwd",
        "a\\b",
    ];
    for key in keys {
        cache.put_forever(key, key).await.unwrap();
    }
    for key in keys {
        assert_eq!(
            cache.get(key).await.unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key:?}"
        );
    }
    let long = "x".repeat(1000);
    cache.put_forever(&long, b"long").await.unwrap();
    assert_eq!(cache.get(&long).await.unwrap().as_deref(), Some(&b"long"[..]));
}

/// 50 tasks incrementing concurrently lose no update.
pub async fn concurrent_incr_sums_exactly(f: &impl Fixture) {
    let cache = f.cache("concurrent").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    cache.incr("n").await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(cache.get_counter("n").await.unwrap(), Some(1000));
}

/// The lock primitives stampede protection builds on.
pub async fn set_if_absent_and_delete_if_equals(f: &impl Fixture) {
    let cache = f.cache("lock").await;
    let backend = cache.backend();
    assert!(
        backend
            .set_if_absent("lock", b"token-1", Some(Duration::from_millis(300)))
            .await
            .unwrap()
    );
    assert!(!backend.set_if_absent("lock", b"token-2", None).await.unwrap());
    assert!(
        !backend.delete_if_equals("lock", b"token-2").await.unwrap(),
        "only the owner may release"
    );
    assert_eq!(cache.get("lock").await.unwrap().as_deref(), Some(&b"token-1"[..]));
    assert!(backend.delete_if_equals("lock", b"token-1").await.unwrap());
    assert!(!cache.exists("lock").await.unwrap());
    assert!(
        backend
            .set_if_absent("lock", b"token-3", Some(Duration::from_millis(200)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        backend.set_if_absent("lock", b"token-4", None).await.unwrap(),
        "an expired lock is free"
    );
}

/// The serde helpers round-trip structured values and refuse wrong types.
pub async fn typed_values_round_trip(f: &impl Fixture) {
    let cache = f.cache("typed").await;
    let value: (String, Vec<u32>, Option<bool>) = ("x".into(), vec![1, 2, 3], Some(true));
    cache.put_as("t", &value, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        cache.get_as::<(String, Vec<u32>, Option<bool>)>("t").await.unwrap(),
        Some(value.clone())
    );
    assert_eq!(
        cache
            .get_multi_as::<(String, Vec<u32>, Option<bool>), _>(&["t", "none"])
            .await
            .unwrap(),
        [Some(value), None]
    );
    cache.put_forever("n", b"not bincode of a u64 \xff\xff").await.unwrap();
    assert!(matches!(
        cache.get_as::<u64>("n").await.unwrap_err(),
        Error::Codec { .. }
    ));
}

/// Every `Duration` is a TTL, up to `Duration::MAX`: one too long for the
/// backend is clamped to [`MAX_TTL`] (memcached: its own latest time),
/// never a panic or an error, on every write path.
pub async fn any_duration_is_a_ttl(f: &impl Fixture) {
    let cache = f.cache("long-ttl").await;
    let backend = cache.backend();
    let huge = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_millis(u64::MAX),
        MAX_TTL + Duration::from_nanos(1),
        MAX_TTL,
    ];
    for (i, ttl) in huge.into_iter().enumerate() {
        let key = format!("k{i}");
        cache.put(&key, b"v", ttl).await.unwrap();
        assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"v"[..]), "{ttl:?}");
        assert!(cache.exists(&key).await.unwrap(), "{ttl:?}");
        cache.put_as(&key, &(1u8, 2u8), ttl).await.unwrap();
        assert_eq!(cache.get_as::<(u8, u8)>(&key).await.unwrap(), Some((1, 2)), "{ttl:?}");
        let lock = format!("lock{i}");
        assert!(backend.set_if_absent(&lock, b"t", Some(ttl)).await.unwrap(), "{ttl:?}");
        assert!(!backend.set_if_absent(&lock, b"u", Some(ttl)).await.unwrap(), "{ttl:?}");
        match backend.ttl(&key).await {
            Ok(Some(Some(left))) => assert!(
                left <= MAX_TTL && left > Duration::from_secs(365 * 24 * 60 * 60),
                "{ttl:?} left {left:?}"
            ),
            Ok(other) => panic!("{ttl:?}: a live key with a TTL reports {other:?}"),
            Err(Error::Unsupported { .. }) => {}
            Err(e) => panic!("{ttl:?}: {e}"),
        }
    }
}
