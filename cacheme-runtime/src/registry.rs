//! The provider registry: backends by name, as Beego's `cache.Register`.
//!
//! The built-in providers (`memory`, and `redis`, `redis-cluster`, `file`
//! and `memcache` with their features) are always present; [`register`]
//! adds more. A name is used both by [`Cache::new`](crate::Cache::new) and as the URL scheme of
//! [`Cache::open`](crate::Cache::open).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, RwLock};

use crate::backend::{Backend, BoxFuture};
use crate::config::ProviderConfig;
use crate::error::{Error, Result};

/// Builds a backend from its configuration. Stored type-erased in the
/// registry; [`register`] takes any async closure of the right shape.
pub type Factory = Arc<dyn Fn(ProviderConfig) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;

static REGISTRY: LazyLock<RwLock<BTreeMap<String, Factory>>> = LazyLock::new(|| {
    let mut map = BTreeMap::new();
    map.insert("memory".to_owned(), erase(crate::memory::MemoryBackend::from_config));
    #[cfg(feature = "redis")]
    map.insert("redis".to_owned(), erase(crate::redis::RedisBackend::from_config));
    #[cfg(feature = "file")]
    map.insert("file".to_owned(), erase(crate::file::FileBackend::from_config));
    #[cfg(feature = "memcached")]
    map.insert(
        "memcache".to_owned(),
        erase(crate::memcached::MemcachedBackend::from_config),
    );
    #[cfg(feature = "redis-cluster")]
    map.insert(
        "redis-cluster".to_owned(),
        erase(crate::redis::RedisBackend::from_cluster_config),
    );
    RwLock::new(map)
});

fn erase<F, Fut, B>(factory: F) -> Factory
where
    F: Fn(ProviderConfig) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<B>> + Send + 'static,
    B: Backend,
{
    Arc::new(move |config| {
        let built = factory(config);
        Box::pin(async move { Ok(Arc::new(built.await?) as Arc<dyn Backend>) })
    })
}

/// Registers a provider under `name`, so `Cache::new(name, json)` and
/// `Cache::open("name://...")` build it with `factory`.
///
/// Fails with [`Error::DuplicateProvider`] if the name is taken (built-in
/// names included) and with [`Error::Config`] if it is not usable as a URL
/// scheme (ASCII letter first, then letters, digits, `+`, `-`, `.`,
/// lowercase).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use cacheme::{register, Cache, MemoryBackend};
///
/// // A "provider" that is a memory cache with a fixed capacity.
/// register("tiny", |_config| async { Ok(MemoryBackend::with_capacity(16)) }).unwrap();
/// let cache = Cache::new("tiny", "").await.unwrap();
/// cache.put_forever("k", b"v").await.unwrap();
/// assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
/// # });
/// ```
pub fn register<F, Fut, B>(name: &str, factory: F) -> Result<()>
where
    F: Fn(ProviderConfig) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<B>> + Send + 'static,
    B: Backend,
{
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return Err(Error::Config {
            provider: name.to_owned(),
            field: None,
            reason: "a provider name must be a lowercase URL scheme: a letter, then letters, digits, '+', '-' or '.'"
                .to_owned(),
        });
    }
    let mut map = REGISTRY.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    if map.contains_key(name) {
        return Err(Error::DuplicateProvider { name: name.to_owned() });
    }
    map.insert(name.to_owned(), erase(factory));
    Ok(())
}

/// The names of all registered providers, sorted.
pub fn providers() -> Vec<String> {
    read().keys().cloned().collect()
}

pub(crate) fn factory(name: &str) -> Result<Factory> {
    let map = read();
    map.get(name).cloned().ok_or_else(|| Error::UnknownProvider {
        name: name.to_owned(),
        known: map.keys().cloned().collect(),
    })
}

fn read() -> std::sync::RwLockReadGuard<'static, BTreeMap<String, Factory>> {
    // A panic while holding the lock cannot leave the map half-written
    // (inserts are single calls), so a poisoned lock is still usable.
    REGISTRY.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}
