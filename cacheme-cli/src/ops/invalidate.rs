//! `cargo cacheme invalidate` and `invalidate-all`: the store's own
//! `invalidate` and `invalidate_all` (the runtime's
//! [`store::invalidate`] and [`store::invalidate_all`]), from the command
//! line, so they do what the program's calls do: break the fetch lock of
//! the key, and on backends that cannot list keys (memcached) address the
//! current generation or move the store to a new one.

use cacheme_runtime::store;

use crate::error::Result;
use crate::ops::{self, Connection, get, key};
use crate::opt::{InvalidateAllOpt, KeyOpt};
use crate::scan;

/// Removes one key: a store key through the store's `invalidate` (the
/// fetch lock is broken too, so a fill in flight does not land after it),
/// a raw key by deleting exactly that key.
pub async fn one(opt: &KeyOpt) -> Result<i32> {
    let target = get::target(opt, None)?;
    let connection = Connection::open(opt.backend.url()?).await?;
    let backend = connection.cache.backend();
    let key = target.storage_key(&connection).await?;
    let removed = match target.spec {
        Some(spec) => {
            // The runtime's invalidate does not say whether there was a
            // value; asked first, so the report stays as plain as a delete's.
            let existed = backend
                .exists(&key)
                .await
                .map_err(|e| connection.error("cannot read the key", e))?;
            store::invalidate(&connection.client, spec, &target.key)
                .await
                .map_err(|e| connection.error("cannot remove the key", e))?;
            existed
        }
        None => backend
            .delete(&key)
            .await
            .map_err(|e| connection.error("cannot remove the key", e))?,
    };
    if removed {
        println!("removed {key} from {}", connection.shown);
    } else {
        println!("no value under {key} in {}; nothing to remove", connection.shown);
    }
    Ok(0)
}

/// Removes every key of one store and version (the store's
/// `invalidate_all`): with the template's glob and exact match where the
/// backend lists keys, else by moving the store to a new generation.
pub async fn all(opt: &InvalidateAllOpt) -> Result<i32> {
    let sources = scan::crate_sources(opt.source.manifest_path.as_deref())?;
    let store = ops::find(&sources, &opt.store)?;
    let version = key::version(store, opt.version.as_deref())?;
    let connection = Connection::open(opt.backend.url()?).await?;
    let removed = store::invalidate_all(&connection.client, store.spec(), &version)
        .await
        .map_err(|e| connection.error("cannot remove the store's keys", e))?;
    if connection.cache.backend().supports_delete_matching() {
        println!(
            "removed {removed} key(s) of {} version {version} ({}) from {}",
            store.name, store.key, connection.shown
        );
    } else {
        println!(
            "moved {} version {version} ({}) to a new generation in {}: its values are no longer read and expire by their TTL",
            store.name, store.key, connection.shown
        );
    }
    Ok(0)
}
