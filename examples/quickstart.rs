//! cacheme in one minute, on the embedded memory backend (no server needed):
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! A slow "database" call is declared as a typed cache store: the first get
//! pays for the call, the next ones are served from the cache until the
//! TTL, an invalidation, or an update.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Client, Context, Event, Logger, cache_store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Book {
    id: u64,
    title: String,
}

#[derive(Debug)]
struct DbError(String);

/// The application: its cache client and (here, a fake) database.
struct App {
    cache: Client,
    queries: AtomicUsize,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

/// Prints cacheme-go style HIT / MISS / FETCH lines.
struct PrintLogger;

impl Logger for PrintLogger {
    fn log(&self, event: &Event<'_>) {
        println!("    [{}] {} {}", event.kind, event.store, event.key);
    }
}

/// The fetcher: a 200 ms "query", cached for 30 s per (category, book).
#[cache_store(
    key = "category:<category_id>:book:<book_id>",
    ttl = "30s",
    version = 1,
    singleflight
)]
async fn book(app: &App, category_id: u32, book_id: u64) -> Result<Book, DbError> {
    app.queries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    if book_id == 0 {
        return Err(DbError("no book 0".into()));
    }
    Ok(Book {
        id: book_id,
        title: format!("Book #{book_id} in category {category_id}"),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The default backend is in-process memory; `Client::open("redis://127.0.0.1:6379")`
    // gives the same stores on Redis.
    let cache = Client::builder().logger(PrintLogger).build()?;
    let app = App {
        cache,
        queries: AtomicUsize::new(0),
    };

    for round in 1..=3 {
        let started = Instant::now();
        let b = BookStore::get(&app, 7, 42).await.map_err(|e| e.0)?;
        println!("round {round}: {:?} in {:.2?}", b.title, started.elapsed());
    }

    println!("ten concurrent gets of a cold key (singleflight):");
    let gets = (0..10).map(|_| BookStore::get(&app, 7, 43));
    let started = Instant::now();
    let results = futures_util::future::join_all(gets).await;
    println!("  {} answers in {:.2?}", results.len(), started.elapsed());

    println!("get_m of 42, 43 and 44:");
    let found = BookStore::get_m(&app)
        .add(7, 42)
        .add(7, 43)
        .add(7, 44)
        .run()
        .await
        .into_all()
        .map_err(|e| e.0)?;
    for b in found.iter() {
        println!("  {}", b.title);
    }

    BookStore::invalidate(&app, 7, 42).await?;
    println!("after invalidate:");
    BookStore::get(&app, 7, 42).await.map_err(|e| e.0)?;

    println!(
        "a failing fetch is the caller's error: {:?}",
        BookStore::get(&app, 7, 0).await.unwrap_err()
    );
    println!("database queries in all: {}", app.queries.load(Ordering::Relaxed));
    Ok(())
}
