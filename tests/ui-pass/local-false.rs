//! `local = false`: the store opts out of every local tier, the client's
//! default included, so (as without `local`) its value type need not be
//! `Clone`; the spec says so. `local = true` is bare `local`.
#![deny(warnings)]

use cacheme::{cache_store, Client};

#[derive(serde::Serialize, serde::Deserialize)]
struct Quote(u64);

#[cache_store(key = "quote:<id>", ttl = "5s", local = false)]
async fn quote(_ctx: &Client, id: u64) -> Result<Quote, ()> {
    Ok(Quote(id))
}

#[cache_store(key = "book:<id>", ttl = "5m", local = true)]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

const _: () = assert!(QuoteStore::SPEC.local_off && QuoteStore::SPEC.local.is_none());
const _: () = assert!(!BookStore::SPEC.local_off && BookStore::SPEC.local.is_some());

fn main() {
    let _ = QuoteStore::get;
    let _ = BookStore::get;
}
