//! The Beego-style facade: configuration by provider name + JSON or by URL,
//! the provider registry, argument checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cacheme::{Backend, BoxFuture, Cache, Error, MemoryBackend, Op, ProviderConfig, Ttl, register};

#[tokio::test]
async fn beego_and_url_forms_build_a_memory_cache() {
    for cache in [
        Cache::new("memory", r#"{"interval":60}"#).await.unwrap(),
        Cache::new("memory", "").await.unwrap(),
        Cache::open("memory://").await.unwrap(),
        Cache::open("memory://?capacity=10000").await.unwrap(),
    ] {
        assert_eq!(cache.provider(), "memory");
        cache.put("k", b"v", Duration::from_secs(1)).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
}

// Time is paused: the sleep below moves it past two sweeps at once, and
// each sweep has run (the runtime is idle only once it has) before the
// test reads on.
#[tokio::test(start_paused = true)]
async fn memory_capacity_bounds_the_entries() {
    let cache = Cache::new("memory", r#"{"capacity":10,"interval":1}"#).await.unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.put_forever(key, b"v").await.unwrap();
    }
    // The sweep (interval = 1 s) runs moka's housekeeping, which evicts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = cache
        .get_multi(&keys)
        .await
        .unwrap()
        .iter()
        .filter(|v| v.is_some())
        .count();
    assert!(kept <= 10, "capacity 10 kept {kept} entries");
}

#[tokio::test]
async fn bad_configs_are_errors_that_say_what_is_wrong() {
    let err = Cache::new("memcachd", "{}").await.unwrap_err();
    match &err {
        Error::UnknownProvider { name, known } => {
            assert_eq!(name, "memcachd");
            assert!(
                known.contains(&"memory".to_owned()) && known.contains(&"redis".to_owned()),
                "{known:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("memory"),
        "the message lists the known providers: {err}"
    );
    assert!(matches!(
        Cache::open("nosuch://x").await,
        Err(Error::UnknownProvider { .. })
    ));

    let err = Cache::new("memory", r#"{"interval":60"#).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: None, .. }) && err.to_string().contains("JSON"),
        "{err}"
    );
    let err = Cache::new("memory", "[1,2]").await.unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");

    let field_errors = [
        (r#"{"interval":"soon"}"#, "interval"),
        (r#"{"interval":-1}"#, "interval"),
        (r#"{"capacity":1.5}"#, "capacity"),
        (r#"{"capacity":0}"#, "capacity"),
        (r#"{"capasity":10}"#, "capasity"),
    ];
    for (config, field) in field_errors {
        match Cache::new("memory", config).await {
            Err(Error::Config {
                field: Some(f),
                provider,
                ..
            }) => {
                assert_eq!((f.as_str(), provider.as_str()), (field, "memory"), "{config}")
            }
            other => panic!("{config}: expected an error about {field:?}, got {other:?}"),
        }
    }
    match Cache::open("memory://?capacity=many").await {
        Err(Error::Config { field: Some(f), .. }) => assert_eq!(f, "capacity"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Cache::open("not a url").await, Err(Error::Config { .. })));
}

#[tokio::test]
async fn a_zero_ttl_is_refused_not_turned_into_something_else() {
    let cache = Cache::open("memory://").await.unwrap();
    let err = cache.put("k", b"v", Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: Op::Set, .. }), "{err}");
    assert!(cache.put_as("k", &1u8, Duration::ZERO).await.is_err());
    assert!(!cache.exists("k").await.unwrap());
    cache.put("k", b"v", Duration::from_micros(1500)).await.unwrap();
}

/// A user-defined provider: a memory backend that records what it is asked
/// and takes a `label` from its configuration.
#[derive(Debug)]
struct Recording {
    label: String,
    inner: MemoryBackend,
    log: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn note(&self, what: &str, key: &str) {
        self.log.lock().unwrap().push(format!("{}:{what}:{key}", self.label));
    }
}

impl Backend for Recording {
    fn provider(&self) -> &'static str {
        "recording"
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, cacheme::Result<Option<Vec<u8>>>> {
        self.note("get", key);
        self.inner.get(key)
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, cacheme::Result<()>> {
        self.note("set", key);
        self.inner.set(key, value, ttl)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, cacheme::Result<bool>> {
        self.note("delete", key);
        self.inner.delete(key)
    }
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, cacheme::Result<bool>> {
        self.note("exists", key);
        self.inner.exists(key)
    }
    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, cacheme::Result<i64>> {
        self.note("incr", key);
        self.inner.incr_by(key, delta)
    }
    fn clear(&self) -> BoxFuture<'_, cacheme::Result<()>> {
        self.note("clear", "");
        self.inner.clear()
    }
}

static LOG: Mutex<Option<Arc<Mutex<Vec<String>>>>> = Mutex::new(None);

fn log() -> Arc<Mutex<Vec<String>>> {
    LOG.lock().unwrap().get_or_insert_with(Default::default).clone()
}

async fn build_recording(config: ProviderConfig) -> cacheme::Result<Recording> {
    config.reject_unknown(&["label"])?;
    let label = config
        .string("label")?
        .ok_or_else(|| config.error("label", "missing"))?;
    Ok(Recording {
        label,
        inner: MemoryBackend::with_capacity(100),
        log: log(),
    })
}

#[tokio::test]
async fn a_registered_provider_is_used_through_the_facade() {
    register("recording", build_recording).unwrap();
    assert!(cacheme::providers().contains(&"recording".to_owned()));

    let cache = Cache::new("recording", r#"{"label":"json"}"#).await.unwrap();
    cache.put_as("k", &"value", Duration::from_secs(5)).await.unwrap();
    assert_eq!(cache.get_as::<String>("k").await.unwrap().as_deref(), Some("value"));
    assert_eq!(
        cache.get_multi(&["k", "x"]).await.unwrap().len(),
        2,
        "the default get_many works"
    );
    assert!(cache.exists("k").await.unwrap());
    assert_eq!(cache.decr("n").await.unwrap(), -1);
    cache.clear().await.unwrap();

    let by_url = Cache::open("recording://?label=url").await.unwrap();
    by_url.delete("gone").await.unwrap();
    let err = by_url.backend().set_if_absent("lock", b"t", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                provider: "recording",
                op: Op::SetIfAbsent
            }
        ),
        "{err}"
    );

    let entries = log().lock().unwrap().clone();
    assert_eq!(
        entries,
        [
            "json:set:k",
            "json:get:k",
            "json:get:k",
            "json:get:x",
            "json:exists:k",
            "json:incr:n",
            "json:clear:",
            "url:delete:gone"
        ]
    );

    match Cache::new("recording", "{}").await {
        Err(Error::Config {
            field: Some(f),
            provider,
            ..
        }) => assert_eq!((f.as_str(), provider.as_str()), ("label", "recording")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        register("recording", build_recording),
        Err(Error::DuplicateProvider { .. })
    ));
    assert!(matches!(
        register("memory", build_recording),
        Err(Error::DuplicateProvider { .. })
    ));
    assert!(matches!(
        register("Bad Name", build_recording),
        Err(Error::Config { .. })
    ));
}

#[cfg(not(feature = "redis-tls"))]
#[tokio::test]
async fn rediss_without_tls_support_is_a_clear_config_error() {
    let err = cacheme::Cache::open("rediss://127.0.0.1:1/0").await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: Some(f), .. } if f == "url"),
        "{err:?}"
    );
    assert!(err.to_string().contains("TLS"), "{err}");
}
