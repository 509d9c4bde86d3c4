//! The cache stores: each is the query that computes a value, declared
//! with `#[cache_store]` next to it. The handlers call the stores, never
//! the database directly, so a warm cache sends no query at all.

use std::collections::HashMap;

use cacheme::{Client, Context, cache_store};
use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};

/// Books per page of an author's shelf.
pub const PAGE_SIZE: u32 = 5;

/// The application: its cache client and its database.
pub struct App {
    /// The cache client (memory or `CACHEME_URL`).
    pub cache: Client,
    /// The database, which counts its queries.
    pub db: Db,
    /// What `GET /metrics` renders: the Prometheus recorder's page.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

/// A book row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Book {
    /// The book's id.
    pub id: u64,
    /// Its author's id.
    pub author_id: u64,
    /// The title.
    pub title: String,
    /// The genre (`scifi`, `fiction`, ...).
    pub genre: String,
    /// The year of first publication.
    pub year: u16,
}

/// An author row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Author {
    /// The author's id.
    pub id: u64,
    /// The name.
    pub name: String,
    /// The year of birth.
    pub born: u16,
}

/// One page of an author's books in one genre: the ids (the books
/// themselves come from [`BookStore`], so a title change is one update).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shelf {
    /// The ids of the page's books, in order.
    pub ids: Vec<u64>,
    /// Whether a next page exists.
    pub more: bool,
}

const BOOK_COLUMNS: &str = "id, author_id, title, genre, year";

fn book_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Book> {
    Ok(Book {
        id: row.get(0)?,
        author_id: row.get(1)?,
        title: row.get(2)?,
        genre: row.get(3)?,
        year: row.get(4)?,
    })
}

/// A book by id. `get_m` and pipelines fetch their misses with `books`:
/// one `IN (...)` query for all of them.
#[cache_store(key = "book:<id>", ttl = "10m", version = 1, fetch_many = books)]
pub async fn book(app: &App, id: u64) -> Result<Book, DbError> {
    let sql = format!("SELECT {BOOK_COLUMNS} FROM books WHERE id = ?1");
    app.db
        .run(format!("{sql}  [{id}]"), move |conn| {
            match conn.query_row(&sql, [id], book_row) {
                Err(rusqlite::Error::QueryReturnedNoRows) => Err(DbError::NotFound(format!("book {id}"))),
                other => Ok(other?),
            }
        })
        .await
}

/// The batch fetcher of [`BookStore`]. Ids it does not find are left out:
/// cacheme then asks `book` for them, whose answer is `NotFound`.
async fn books(app: &App, ids: Vec<u64>) -> Result<HashMap<u64, Book>, DbError> {
    let marks = vec!["?"; ids.len()].join(", ");
    let sql = format!("SELECT {BOOK_COLUMNS} FROM books WHERE id IN ({marks})");
    app.db
        .run(format!("{sql}  {ids:?}"), move |conn| {
            let mut statement = conn.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(ids), book_row)?;
            let mut found = HashMap::new();
            for book in rows {
                let book = book?;
                found.insert(book.id, book);
            }
            Ok(found)
        })
        .await
}

/// An author by id.
#[cache_store(key = "author:<id>", ttl = "1h", version = 1)]
pub async fn author(app: &App, id: u64) -> Result<Author, DbError> {
    let sql = "SELECT id, name, born FROM authors WHERE id = ?1";
    app.db
        .run(format!("{sql}  [{id}]"), move |conn| {
            let row = conn.query_row(sql, [id], |row| {
                Ok(Author {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    born: row.get(2)?,
                })
            });
            match row {
                Err(rusqlite::Error::QueryReturnedNoRows) => Err(DbError::NotFound(format!("author {id}"))),
                other => Ok(other?),
            }
        })
        .await
}

/// How many books an author has per genre (the author page's menu).
#[cache_store(key = "genres:<author_id>", ttl = "5m", version = 1)]
pub async fn genres(app: &App, author_id: u64) -> Result<Vec<(String, u32)>, DbError> {
    let sql = "SELECT genre, COUNT(*) FROM books WHERE author_id = ?1 GROUP BY genre ORDER BY genre";
    app.db
        .run(format!("{sql}  [{author_id}]"), move |conn| {
            let mut statement = conn.prepare(sql)?;
            let rows = statement.query_map([author_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
}

/// One page (from 1) of an author's books in a genre: a key of three
/// parameters (`shelf:author:1:genre:scifi:page:1`).
#[cache_store(key = "shelf:author:<author_id>:genre:<genre>:page:<page>", ttl = "5m", version = 1)]
pub async fn shelf(app: &App, author_id: u64, genre: String, page: u32) -> Result<Shelf, DbError> {
    let sql = "SELECT id FROM books WHERE author_id = ?1 AND genre = ?2 ORDER BY year, id LIMIT ?3 OFFSET ?4";
    let offset = page.saturating_sub(1) * PAGE_SIZE;
    let log = format!("{sql}  [{author_id}, {genre:?}, {}, {offset}]", PAGE_SIZE + 1);
    app.db
        .run(log, move |conn| {
            let mut statement = conn.prepare(sql)?;
            let rows = statement.query_map(rusqlite::params![author_id, genre, PAGE_SIZE + 1, offset], |row| {
                row.get::<_, u64>(0)
            })?;
            let mut ids = rows.collect::<Result<Vec<_>, _>>()?;
            // One row more than a page tells whether a next page exists.
            let more = ids.len() > PAGE_SIZE as usize;
            ids.truncate(PAGE_SIZE as usize);
            Ok(Shelf { ids, more })
        })
        .await
}
