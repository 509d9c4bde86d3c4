#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use cacheme_runtime::{
    Backend, BoxError, BoxFuture, Cache, Client, ClientBuilder, Codec, ConnectMode, Context, DEFAULT_CACHE_TIMEOUT,
    DEFAULT_CAPACITY, DEFAULT_FETCH_CONCURRENCY, DEFAULT_IN_PROCESS_HIT_SAMPLING, DEFAULT_MAX_PENDING_FILLS, Error,
    Event, EventKind, Factory, FetchTimeout, KeyFilter, KeyVisitor, LocalTier, Logger, MAX_KEYS_PER_COMMAND,
    MAX_LOCK_TTL, MAX_TTL, MIN_LOCK_TTL, MemoryBackend, MultiResult, Op, Pipeline, Promise, PromiseError,
    ProviderConfig, Result, Stats, StoreSpec, StoreStats, StoredDates, Ttl, TtlJitter, UpdateError, config, connect,
    counter, pipeline, providers, register, stampede, stored_dates, testing,
};

#[doc = include_str!("../docs/cache_store.md")]
pub use cacheme_derive::cache_store;

#[doc(hidden)]
pub use cacheme_runtime::__private;

#[doc = include_str!("../docs/observability.md")]
pub mod observability {}

#[cfg(feature = "file")]
pub use cacheme_runtime::FileBackend;
#[cfg(feature = "memcached")]
pub use cacheme_runtime::MemcachedBackend;
#[cfg(feature = "redis")]
pub use cacheme_runtime::RedisBackend;

/// The names most programs need: `use cacheme::prelude::*;`.
pub mod prelude {
    pub use crate::{Cache, Client, Codec, Context, Error, Pipeline, Result, cache_store};
}
