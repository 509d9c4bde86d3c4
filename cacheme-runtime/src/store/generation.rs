//! `invalidate_all` on backends that cannot list their keys (memcached,
//! and any provider without [`Backend::delete_matching`]): a generation
//! counter per store and version, part of every key.
//!
//! On such a backend a store key `book:7:v1` is stored as `book:7:v1:g3`,
//! where 3 is the current value of the counter
//! `cacheme generation:BookStore:v1` (the space keeps it apart from every
//! store key, which cannot contain whitespace). `invalidate_all` increments
//! the counter: every old value becomes unreachable at once and expires by
//! its TTL (memcached evicts it earlier under memory pressure). Nothing is
//! listed or deleted, so it is O(1) whatever the number of keys, but the
//! number of removed keys is not known (it reports 0).
//!
//! Each client caches the counters it has read for a short time (the
//! client's `generation_refresh`, 1 s by default): an `invalidate_all` is
//! seen at once by the process that ran it and within that time by the
//! others. A key written meanwhile by another process lands in the old
//! generation and is never read again.

use std::borrow::Cow;

use crate::client::Client;
use crate::error::Result;
use crate::key::push_param;
use crate::spec::StoreSpec;

/// The counter of `spec`'s keys written with `escaped_version`.
fn counter_key(spec: &StoreSpec, escaped_version: &str) -> String {
    format!("cacheme generation:{}:v{escaped_version}", spec.name)
}

/// The key the value of store key `key` (as built by the store's `key`,
/// without the backend's prefix) is stored under: `key` itself, or
/// `key:g{generation}` where the client's backend cannot list keys and
/// stores invalidate by generation (memcached).
///
/// For tools that read a store's values directly, such as
/// `cargo cacheme get`; stores call it on every operation. The generation
/// is read from the backend unless `client` read it less than its
/// `generation_refresh` ago (a zero refresh always reads it), so an error
/// is a backend error.
pub async fn storage_key<'k>(client: &Client, spec: &StoreSpec, key: &'k str) -> Result<Cow<'k, str>> {
    let Some(generations) = client.generations() else {
        return Ok(Cow::Borrowed(key));
    };
    // Store keys end in `:v{escaped version}` and escaped values hold no `:`.
    let version = key.rsplit_once(":v").map_or("", |(_, version)| version);
    let counter = counter_key(spec, version);
    let generation = generations.current(&**client.cache().backend(), &counter).await?;
    Ok(Cow::Owned(format!("{key}:g{generation}")))
}

/// `invalidate_all` by generation: bumps the counter of `spec` and
/// `version`. Returns `None` when the client invalidates by listing keys
/// instead.
pub(crate) async fn invalidate_all(client: &Client, spec: &StoreSpec, version: &str) -> Option<Result<()>> {
    let generations = client.generations()?;
    let mut escaped = String::new();
    push_param(&mut escaped, &version);
    let counter = counter_key(spec, &escaped);
    Some(generations.bump(&**client.cache().backend(), &counter).await.map(drop))
}
