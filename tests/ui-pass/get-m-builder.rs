//! `get_m`'s multi-getter is a builder: chained, kept in a binding,
//! reassigned in a loop (`batch = batch.add(id)`), filled in place
//! (`push`, `extend`); its results are looked up by borrowed parameters
//! (`&str` for a `String`). Runs on the memory backend.
#![deny(warnings)]

use cacheme::{cache_store, Client};

#[cache_store(key = "user:<name>", ttl = "1m")]
async fn user(_ctx: &Client, name: String) -> Result<usize, String> {
    Ok(name.len())
}

#[cache_store(key = "book:<category>:<id>", ttl = "1m")]
async fn book(_ctx: &Client, category: u32, id: u64) -> Result<u64, String> {
    Ok(u64::from(category) * 1000 + id)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = Client::memory().unwrap();

    // Chained and run in one expression.
    let chained = BookStore::get_m(&client).add(7, 1).add(7, 2).run().await;
    assert_eq!(chained.get(&(7, 2)), Some(&Ok(7002)));

    // Kept in a binding, then run.
    let mut kept = BookStore::get_m(&client).add(1, 1).add(2, 2);
    assert_eq!(kept.run().await.len(), 2);

    // Reassigned in a loop.
    let mut batch = UserStore::get_m(&client);
    for name in ["ann", "bob"] {
        batch = batch.add(name.to_owned());
    }
    let users = batch.run().await;
    assert_eq!(users.get("ann"), Some(&Ok(3)));
    assert_eq!(users.value("bob"), Some(&3));
    assert_eq!(users.get(&"bob".to_owned()), Some(&Ok(3)));
    assert_eq!(users.get("eve"), None);

    // Filled in place: push in a loop, extend with many.
    let mut multi = BookStore::get_m(&client);
    for id in 10..13 {
        multi.push(3, id);
    }
    multi.extend([(4, 1), (4, 2)]);
    let books = multi.run().await.into_all().unwrap();
    assert_eq!(books.len(), 5);
    assert_eq!(books.get(&(4, 2)), Some(&4002));

    // `run` empties it: it can be filled and run again.
    multi.push(5, 5);
    assert_eq!(multi.run().await.len(), 1);
}
