//! cacheme in one minute, on the embedded memory backend (no server needed):
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! A slow "database" call is cached for 30 seconds: the first lookup pays
//! for it, the next ones are served from the cache.

use std::time::{Duration, Instant};

use cacheme::Cache;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Book {
    id: u64,
    title: String,
}

/// Stands in for a database query that takes 200 ms.
async fn load_book_from_db(id: u64) -> Book {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Book {
        id,
        title: format!("Book #{id}"),
    }
}

/// Reads through the cache: on a miss, load and remember for 30 s.
async fn book(cache: &Cache, id: u64) -> cacheme::Result<(Book, &'static str)> {
    let key = format!("book:{id}");
    if let Some(book) = cache.get_as::<Book>(&key).await? {
        return Ok((book, "cache"));
    }
    let book = load_book_from_db(id).await;
    cache.put_as(&key, &book, Duration::from_secs(30)).await?;
    Ok((book, "database"))
}

#[tokio::main]
async fn main() -> cacheme::Result<()> {
    // Beego's form works too: Cache::new("memory", r#"{"interval":60}"#)
    let cache = Cache::open("memory://?capacity=10000").await?;

    for round in 1..=3 {
        let started = Instant::now();
        let (book, from) = book(&cache, 42).await?;
        println!(
            "round {round}: {:?} from {from:<8} in {:>7.2?}",
            book.title,
            started.elapsed()
        );
    }

    cache.incr("views:42").await?;
    let views = cache.incr_by("views:42", 9).await?;
    println!("views counter: {views}");
    println!("exists(book:42) = {}", cache.exists("book:42").await?);
    cache.delete("book:42").await?;
    println!("after delete: exists(book:42) = {}", cache.exists("book:42").await?);
    Ok(())
}
