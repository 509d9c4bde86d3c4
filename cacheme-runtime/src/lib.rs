//! The runtime of [cacheme](https://docs.rs/cacheme): backends, codecs, the
//! untyped [`Cache`] facade and the provider registry.
//!
//! Use it through the `cacheme` crate: only the facade is semver-stable;
//! this crate's version is pinned exactly by it.
//!
//! Layers, bottom up:
//! - [`Backend`]: one dyn-compatible async trait over bytes, implemented by
//!   [`MemoryBackend`], `RedisBackend` (feature `redis`; on a Redis Cluster
//!   too with feature `redis-cluster`) and any provider a user
//!   [`register`]s.
//! - [`Cache`]: Beego's cache API (get / get_multi / put / delete / incr /
//!   decr / exists / clear) over any backend, with serde-typed helpers.
//! - [`ProviderConfig`] and the registry: providers by name, configured by
//!   Beego-style JSON or by URL.

#![warn(missing_docs)]

mod backend;
mod cache;
mod codec;
pub mod config;
pub mod counter;
mod error;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod registry;

#[cfg(feature = "redis")]
pub use crate::redis::RedisBackend;
pub use backend::{Backend, BoxFuture, Ttl};
pub use cache::Cache;
pub use codec::Codec;
pub use config::ProviderConfig;
pub use error::{BoxError, Error, Op, Result};
pub use memory::{DEFAULT_CAPACITY, MemoryBackend};
pub use registry::{Factory, providers, register};
