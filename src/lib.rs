#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use cacheme_runtime::{
    Backend, BoxError, BoxFuture, Cache, Codec, DEFAULT_CAPACITY, Error, Factory, MemoryBackend, Op, ProviderConfig,
    Result, Ttl, config, counter, providers, register,
};

#[cfg(feature = "memcached")]
pub use cacheme_runtime::MemcachedBackend;
#[cfg(feature = "redis")]
pub use cacheme_runtime::RedisBackend;

/// The names most programs need: `use cacheme::prelude::*;`.
pub mod prelude {
    pub use crate::{Cache, Codec, Error, Result};
}
