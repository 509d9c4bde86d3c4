//! One pipeline, three stores: a product page needs a book, its author and
//! the stock of two shops. Each store adds its keys with `get_p`; one
//! `execute` reads them all at once (one round trip on Redis), fetches the
//! misses together (a store's `fetch_many` once for all its misses) and
//! writes them back in one more round trip.
//!
//! ```sh
//! cargo run --example pipeline                         # memory backend
//! cargo run --example pipeline -- redis://127.0.0.1:6379
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, Pipeline, PromiseError, cache_store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Book {
    id: u64,
    title: String,
    author: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Author {
    name: String,
    born: u16,
}

/// The source's error. `Clone`, because a batch fetcher's error is handed
/// to every key of its batch.
#[derive(Debug, Clone)]
enum DbError {
    NotFound(String),
}

/// The application: its cache client and a fake database that logs its
/// queries.
struct App {
    cache: Client,
    queries: Mutex<Vec<String>>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

impl App {
    async fn query(&self, sql: String) {
        println!("    db: {sql}");
        self.queries.lock().unwrap().push(sql);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Books, with a batch fetcher: the misses of a pipeline cost one query.
#[cache_store(key = "book:<id>", ttl = "5m", fetch_many = books)]
async fn book(app: &App, id: u64) -> Result<Book, DbError> {
    app.query(format!("SELECT * FROM books WHERE id = {id}")).await;
    book_row(id).ok_or_else(|| DbError::NotFound(format!("book {id}")))
}

async fn books(app: &App, ids: Vec<u64>) -> Result<HashMap<u64, Book>, DbError> {
    app.query(format!("SELECT * FROM books WHERE id IN {ids:?}")).await;
    // Ids the database does not know are left out: their promises get the
    // single fetcher's own NotFound.
    Ok(ids.into_iter().filter_map(|id| Some((id, book_row(id)?))).collect())
}

fn book_row(id: u64) -> Option<Book> {
    (id < 100).then(|| Book {
        id,
        title: format!("Book #{id}"),
        author: ["le guin", "borges", "calvino"][id as usize % 3].to_owned(),
    })
}

/// Authors, without a batch fetcher: misses are fetched concurrently.
#[cache_store(key = "author:<name>", ttl = "1h")]
async fn author(app: &App, name: String) -> Result<Author, DbError> {
    app.query(format!("SELECT * FROM authors WHERE name = '{name}'")).await;
    Ok(Author {
        born: 1900 + name.len() as u16,
        name,
    })
}

/// Stock per shop and book: two key parameters, a short TTL, and a batch
/// fetcher taking `(shop, book)` pairs.
#[cache_store(key = "stock:<shop>:<book_id>", ttl = "30s", singleflight, fetch_many = stocks)]
async fn stock(app: &App, shop: String, book_id: u64) -> Result<u32, DbError> {
    app.query(format!(
        "SELECT qty FROM stock WHERE shop = '{shop}' AND book = {book_id}"
    ))
    .await;
    Ok(book_id as u32 % 7)
}

async fn stocks(app: &App, keys: Vec<(String, u64)>) -> Result<Vec<((String, u64), u32)>, DbError> {
    app.query(format!(
        "SELECT shop, book, qty FROM stock WHERE (shop, book) IN {keys:?}"
    ))
    .await;
    Ok(keys.into_iter().map(|(shop, id)| ((shop, id), id as u32 % 7)).collect())
}

/// Everything one product page shows, from one pipeline.
async fn product_page(app: &App, book_id: u64) -> Result<(), cacheme::Error> {
    let mut pipeline = Pipeline::new();
    let book = BookStore::get_p(app, &mut pipeline, book_id);
    let related = BookStore::get_p(app, &mut pipeline, book_id + 1);
    let missing = BookStore::get_p(app, &mut pipeline, 404);
    let author = AuthorStore::get_p(app, &mut pipeline, "le guin".to_owned());
    let paris = StockStore::get_p(app, &mut pipeline, "paris".to_owned(), book_id);
    let turin = StockStore::get_p(app, &mut pipeline, "turin".to_owned(), book_id);
    pipeline.execute().await?; // only a cache failure fails the whole pipeline

    // Each promise has its own outcome.
    let book = book.into_result().expect("book");
    println!("    {} by {}", book.title, book.author);
    println!("    related: {}", related.into_result().expect("related").title);
    match missing.into_result() {
        Err(PromiseError::Fetch(DbError::NotFound(what))) => println!("    not found: {what}"),
        other => println!("    unexpected: {other:?}"),
    }
    let author = author.into_result().expect("author");
    println!("    {} (born {})", author.name, author.born);
    println!(
        "    stock: paris {}, turin {}",
        paris.into_result().expect("stock"),
        turin.into_result().expect("stock")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), cacheme::Error> {
    let cache = match std::env::args().nth(1) {
        Some(url) => Cache::open(&url).await?,
        None => Cache::open("memory://").await?,
    };
    println!("backend: {}", cache.backend().provider());
    let app = App {
        cache: Client::builder().cache(cache).build()?,
        queries: Mutex::default(),
    };
    // A fresh namespace for the example's keys on a shared server.
    app.cache.cache().clear().await?;

    for round in ["cold", "warm"] {
        println!("{round} page:");
        let started = Instant::now();
        product_page(&app, 7).await?;
        let queries = std::mem::take(&mut *app.queries.lock().unwrap());
        println!(
            "  -> {} queries in {:.1} ms\n",
            queries.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
