//! `cargo cacheme invalidate` and `invalidate-all`: what the store's own
//! `invalidate` and `invalidate_all` do, from the command line.

use crate::error::Result;
use crate::ops::{self, Connection, get, key};
use crate::opt::{InvalidateAllOpt, KeyOpt};
use crate::scan;

/// Removes one key.
pub async fn one(opt: &KeyOpt) -> Result<i32> {
    let target = get::target(opt)?;
    let connection = Connection::open(opt.backend.url()?).await?;
    let removed = connection
        .cache
        .backend()
        .delete(&target.key)
        .await
        .map_err(|e| connection.error("cannot remove the key", e))?;
    if removed {
        println!("removed {} from {}", target.key, connection.shown);
    } else {
        println!(
            "no value under {} in {}; nothing to remove",
            target.key, connection.shown
        );
    }
    Ok(0)
}

/// Removes every key of one store and version, with the template's glob
/// and exact match (the runtime's `invalidate_all`).
pub async fn all(opt: &InvalidateAllOpt) -> Result<i32> {
    let sources = scan::crate_sources(opt.source.manifest_path.as_deref())?;
    let store = ops::find(&sources, &opt.store)?;
    let version = key::version(store, opt.version.as_deref())?;
    let connection = Connection::open(opt.backend.url()?).await?;
    let template = store.template;
    let glob = template.glob(&version);
    let filter = |key: &str| template.matches(key, &version);
    let removed = connection
        .cache
        .backend()
        .delete_matching(&glob, &filter)
        .await
        .map_err(|e| connection.error("cannot remove the store's keys", e))?;
    println!(
        "removed {removed} key(s) of {} version {version} ({}) from {}",
        store.name, store.key, connection.shown
    );
    Ok(0)
}
