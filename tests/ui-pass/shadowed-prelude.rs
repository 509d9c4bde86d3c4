//! Generated code names what it uses by full path: a program whose scope
//! shadows prelude names (a one-parameter `Result` alias, its own
//! `Option`, `Vec`, `Box`, `String`, `Ok`...) compiles its stores,
//! every option on, warnings denied.
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types, clippy::all)]

use std::collections::HashMap;

use cacheme::{cache_store, Client};

#[derive(Clone, Debug)]
pub struct AppError;

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("app error")
    }
}

impl std::error::Error for AppError {}

type Result<T> = std::result::Result<T, AppError>;
struct Option;
struct Vec;
struct Box;
struct Some;
struct None;
struct Ok;
struct Err;
struct Default;
struct Clone;
struct Send;
struct Sync;
struct Sized;
struct Into;
struct From;
struct Iterator;
struct IntoIterator;
struct Fn;
struct Drop;
struct u8;
struct usize;
struct bool;
struct str;

#[cache_store(key = "plain:<id>", ttl = "1m")]
async fn plain(_ctx: &Client, id: u64) -> Result<u64> {
    std::result::Result::Ok(id)
}

#[cache_store(key = "sf:<id>", ttl = "1m", singleflight, local, stale_for = "1m", refresh_after = "30s")]
async fn hot(_ctx: &Client, id: u64) -> Result<u64> {
    std::result::Result::Ok(id)
}

#[cache_store(key = "many:<id>", ttl = "1m", fetch_many = many_fetch, none_ttl = "5s")]
async fn many(_ctx: &Client, id: u64) -> Result<std::option::Option<u64>> {
    std::result::Result::Ok(std::option::Option::Some(id))
}

async fn many_fetch(_ctx: &Client, ids: std::vec::Vec<u64>) -> Result<HashMap<u64, std::option::Option<u64>>> {
    std::result::Result::Ok(ids.into_iter().map(|id| (id, std::option::Option::Some(id))).collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = Client::memory().unwrap();
    assert_eq!(PlainStore::get(&client, 1).await.unwrap(), 1);
    assert_eq!(HotStore::get(&client, 2).await.unwrap(), 2);
    assert_eq!(ManyStore::get(&client, 3).await.unwrap(), std::option::Option::Some(3));
    let got = ManyStore::get_m(&client).add(4).add(5).run().await;
    assert_eq!(got.len(), 2);
    PlainStore::invalidate(&client, 1).await.unwrap();
    PlainStore::invalidate_all(&client, 1).await.unwrap();
    let _ = PlainStore::update(&client, 1).await;
    let _ = PlainStore::peek(&client, 1).await;
}
