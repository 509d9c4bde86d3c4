//! [`Cache`]: the untyped, Beego-style facade over any backend, with typed
//! helpers that serialize with serde.
//!
//! | Beego            | cacheme                                          |
//! |------------------|--------------------------------------------------|
//! | `NewCache` / `StartAndGC` | [`Cache::new`] (provider + JSON), [`Cache::open`] (URL) |
//! | `Get`            | [`Cache::get`], typed: [`Cache::get_as`]         |
//! | `GetMulti`       | [`Cache::get_multi`], typed: [`Cache::get_multi_as`] |
//! | `Put`            | [`Cache::put`] / [`Cache::put_forever`], typed: [`Cache::put_as`] |
//! | `Delete`         | [`Cache::delete`]                                |
//! | `Incr` / `Decr`  | [`Cache::incr`] / [`Cache::decr`], [`Cache::incr_by`] / [`Cache::decr_by`] |
//! | `IsExist`        | [`Cache::exists`]                                |
//! | `ClearAll`       | [`Cache::clear`]                                 |
//! | `Register`       | [`register`](crate::register)                    |
//!
//! Unlike Beego, a missing key is `Ok(None)` and a failure is `Err`, never
//! the other way round; `get_multi` never puts errors inside its list.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::codec::Codec;
use crate::config::{ProviderConfig, parse_url, redact_url};
use crate::counter;
use crate::error::{Error, Op, Result};
use crate::registry;

/// A cache on one backend. Cheap to clone (clones share the backend).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use cacheme::Cache;
///
/// let cache = Cache::open("memory://").await?;
/// cache.put("greeting", "hello", Duration::from_secs(60)).await?;
/// assert_eq!(cache.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// assert_eq!(cache.get("absent").await?, None);
///
/// assert_eq!(cache.incr("visits").await?, 1);
/// assert_eq!(cache.incr_by("visits", 10).await?, 11);
///
/// cache.put_as("point", &(3, 4), Duration::from_secs(60)).await?;
/// assert_eq!(cache.get_as::<(i32, i32)>("point").await?, Some((3, 4)));
/// # Ok::<(), cacheme::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Cache {
    backend: Arc<dyn Backend>,
    codec: Codec,
}

impl Cache {
    /// Builds the provider registered as `provider` from Beego-style JSON
    /// configuration, connecting to its server if it has one.
    ///
    /// `memory`: `{"interval":60,"capacity":10000}`;
    /// `redis`: `{"key":"app","conn":"127.0.0.1:6379","dbNum":"0","password":""}`;
    /// `memcache`: `{"key":"app","conn":"127.0.0.1:11211"}`.
    /// `redis-cluster`: `{"key":"app","conn":["h1:7000","h2:7001"],"password":""}`.
    /// An empty string is an empty configuration.
    pub async fn new(provider: &str, config: &str) -> Result<Self> {
        let factory = registry::factory(provider)?;
        let config = ProviderConfig::from_json(provider, config)?;
        Ok(Cache::from_arc(factory(config).await?))
    }

    /// Builds a cache from a URL whose scheme names the provider:
    /// `memory://?capacity=10000`, `redis://:pass@127.0.0.1:6379/0?prefix=app`,
    /// `redis-cluster://h1:7000,h2:7001?prefix=app`,
    /// `memcache://h1:11211,h2:11211?prefix=app` (several servers: see
    /// [`parse_url`](crate::config::parse_url)), or `name://...` for a
    /// provider registered as `name`. `rediss://` is Redis over TLS with the
    /// `redis-tls` feature, and a config error saying TLS is not compiled in
    /// without it.
    ///
    /// A server that cannot be reached is an [`Error::Connect`], unless the
    /// URL says `connect=lazy` (redis, redis-cluster, memcache): then the
    /// cache is returned at once and connects in the background (see
    /// [`ConnectMode`](crate::ConnectMode)).
    pub async fn open(url: &str) -> Result<Self> {
        let parsed = parse_url(url).map_err(|e| Error::Config {
            // Only a scheme-like start is named: text that does not parse
            // may hold a password anywhere.
            provider: url
                .split_once("://")
                .map(|(scheme, _)| scheme)
                .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
                .unwrap_or("unknown")
                .to_owned(),
            field: Some("url".to_owned()),
            reason: format!("not a URL: {e}"),
        })?;
        let provider = match parsed.scheme() {
            "rediss" => "redis".to_owned(),
            scheme => scheme.to_owned(),
        };
        let factory = registry::factory(&provider)?;
        tracing::debug!(provider, url = %redact_url(&parsed), "opening cache");
        let config = ProviderConfig::from_url(&provider, parsed);
        Ok(Cache::from_arc(factory(config).await?))
    }

    /// Wraps a backend built by hand.
    pub fn from_backend(backend: impl Backend) -> Self {
        Cache::from_arc(Arc::new(backend))
    }

    /// Wraps a shared backend.
    ///
    /// With feature `metrics`, the cache times every command of its
    /// backend (`cacheme.backend.operation.duration`, see
    /// `docs/observability.md`); [`backend`](Cache::backend) is then that
    /// timed wrapper, which behaves as the backend in every other way.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        #[cfg(feature = "metrics")]
        let backend = crate::observe::metered(backend);
        Cache {
            backend,
            codec: Codec::default(),
        }
    }

    /// The same cache, its backend's commands not timed: with feature
    /// `metrics` a cache records the duration of every backend command
    /// (`cacheme.backend.operation.duration`); this one (and its clones)
    /// does not (a client built with `ClientBuilder::metrics(false)` does
    /// this to its cache). Without the feature, the cache as it is.
    pub fn without_metrics(self) -> Self {
        #[cfg(feature = "metrics")]
        if let Some(inner) = self.backend.unmetered() {
            return Cache {
                backend: Arc::clone(inner),
                codec: self.codec,
            };
        }
        self
    }

    /// The same cache, encoding typed values with `codec` (default bincode).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The codec of the typed helpers.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The provider's name (`"memory"`, `"redis"`, ...).
    pub fn provider(&self) -> &'static str {
        self.backend.provider()
    }

    /// The bytes stored under `key`, `None` if it is missing or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.backend.get(key).await
    }

    /// The bytes of many keys, in order; a missing key is `None` in its
    /// place. A backend error fails the whole call.
    pub async fn get_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        self.backend.get_many(&keys).await
    }

    /// Stores `value` under `key` for `ttl`. Sub-second TTLs are honoured;
    /// a zero TTL is an [`Error::InvalidArgument`] (use
    /// [`put_forever`](Cache::put_forever) for no expiry). A TTL longer than
    /// [`MAX_TTL`](crate::MAX_TTL) (100 years), up to `Duration::MAX`, is
    /// clamped to it by the built-in backends.
    pub async fn put(&self, key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<()> {
        check_ttl(ttl)?;
        self.backend.set(key, value.as_ref(), Some(ttl)).await
    }

    /// Stores `value` under `key` with no expiry.
    pub async fn put_forever(&self, key: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.backend.set(key, value.as_ref(), None).await
    }

    /// Removes `key`; `true` when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.backend.delete(key).await
    }

    /// Whether `key` holds a value that has not expired (Beego's `IsExist`).
    pub async fn exists(&self, key: &str) -> Result<bool> {
        self.backend.exists(key).await
    }

    /// Adds 1 to the counter at `key` (absent = 0) and returns the new value.
    pub async fn incr(&self, key: &str) -> Result<i64> {
        self.backend.incr_by(key, 1).await
    }

    /// Subtracts 1 from the counter at `key` (absent = 0).
    pub async fn decr(&self, key: &str) -> Result<i64> {
        self.backend.incr_by(key, -1).await
    }

    /// Adds `n` to the counter at `key`. Counters are decimal 64-bit
    /// integers on every backend; a non-integer value is
    /// [`Error::NotAnInteger`] and leaving the `i64` range is
    /// [`Error::Overflow`], with the stored value unchanged.
    pub async fn incr_by(&self, key: &str, n: i64) -> Result<i64> {
        self.backend.incr_by(key, n).await
    }

    /// Subtracts `n` from the counter at `key` (see [`incr_by`](Cache::incr_by)).
    pub async fn decr_by(&self, key: &str, n: i64) -> Result<i64> {
        let delta = n.checked_neg().ok_or_else(|| Error::Overflow {
            provider: self.provider(),
            key: key.to_owned(),
            delta: -i128::from(n),
        })?;
        self.backend.incr_by(key, delta).await
    }

    /// The counter at `key`, `None` if absent; [`Error::NotAnInteger`] if
    /// the key holds something else.
    pub async fn get_counter(&self, key: &str) -> Result<Option<i64>> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(bytes) => counter::parse(&bytes).map(Some).ok_or_else(|| Error::NotAnInteger {
                provider: self.provider(),
                key: key.to_owned(),
            }),
        }
    }

    /// Removes every key of this cache and nothing else (for Redis: the keys
    /// under its prefix, never `FLUSHDB`).
    pub async fn clear(&self) -> Result<()> {
        self.backend.clear().await
    }

    /// The value under `key` decoded as `T`. Bytes that do not decode as `T`
    /// are an [`Error::Codec`] naming the key, never a garbage value; so are
    /// bytes whose length prefixes claim more than they hold (decoding is
    /// bounded by the input: hostile bytes cannot panic or exhaust memory).
    pub async fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(bytes) => self.decode(key, &bytes).map(Some),
        }
    }

    /// Many values decoded as `T`, in order, `None` for missing keys.
    pub async fn get_multi_as<T: DeserializeOwned, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        let found = self.get_multi(keys).await?;
        keys.iter()
            .zip(found)
            .map(|(key, bytes)| bytes.map(|b| self.decode(key.as_ref(), &b)).transpose())
            .collect()
    }

    /// Encodes `value` with the cache's codec and stores it for `ttl`.
    pub async fn put_as<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Duration) -> Result<()> {
        check_ttl(ttl)?;
        let bytes = self.codec.encode(value)?;
        self.backend.set(key, &bytes, Some(ttl)).await
    }

    /// Encodes `value` and stores it with no expiry.
    pub async fn put_forever_as<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = self.codec.encode(value)?;
        self.backend.set(key, &bytes, None).await
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        self.codec.decode(bytes).map_err(|e| match e {
            Error::Codec {
                op,
                codec,
                type_name,
                source,
                ..
            } => Error::Codec {
                op,
                codec,
                type_name,
                key: Some(key.to_owned()),
                source,
            },
            other => other,
        })
    }
}

fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(Error::InvalidArgument {
            op: Op::Set,
            reason: "a TTL of zero would expire at once; use put_forever for no expiry".to_owned(),
        });
    }
    Ok(())
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend)
            .field("codec", &self.codec)
            .finish()
    }
}
