//! The bookshop's database: SQLite through rusqlite, every query counted
//! and printed, so the effect of the cache is visible (`/stats`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// An error of the database, `Clone` because a batch fetcher's error is
/// handed to every key of its batch.
#[derive(Clone, Debug)]
pub enum DbError {
    /// No such row.
    NotFound(String),
    /// SQLite failed (the message of its error).
    Sql(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::NotFound(what) => write!(f, "not found: {what}"),
            DbError::Sql(message) => write!(f, "database error: {message}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        DbError::Sql(error.to_string())
    }
}

/// One SQLite connection shared by the handlers, and a count of the
/// queries sent through it.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    queries: Arc<AtomicU64>,
}

impl Db {
    /// Opens `path` (`:memory:` for a private in-memory database), creates
    /// the tables and seeds them if they are empty. Several processes may
    /// share one file: the seed runs in one immediate transaction.
    pub fn open(path: &str) -> Result<Db, DbError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        let authors: i64 = tx.query_row("SELECT COUNT(*) FROM authors", [], |row| row.get(0))?;
        if authors == 0 {
            tx.execute_batch(SEED)?;
        }
        tx.commit()?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            queries: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many queries this process has sent (the seed excluded).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Runs one query on a blocking thread (SQLite is synchronous),
    /// printing `sql` and counting it.
    pub async fn run<T, F>(&self, sql: String, query: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.queries.fetch_add(1, Ordering::Relaxed);
        println!("    db: {sql}");
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A query that panicked leaves a usable connection: take it back.
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&conn)
        })
        .await
        .map_err(|join| DbError::Sql(format!("query task failed: {join}")))?
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS authors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    born INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS books (
    id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL REFERENCES authors(id),
    title TEXT NOT NULL,
    genre TEXT NOT NULL,
    year INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS books_by_author ON books(author_id, genre, year);
";

const SEED: &str = "
INSERT INTO authors (id, name, born) VALUES
    (1, 'Ursula K. Le Guin', 1929),
    (2, 'Jorge Luis Borges', 1899),
    (3, 'Italo Calvino', 1923);
INSERT INTO books (id, author_id, title, genre, year) VALUES
    (1, 1, 'A Wizard of Earthsea', 'fantasy', 1968),
    (2, 1, 'The Left Hand of Darkness', 'scifi', 1969),
    (3, 1, 'The Lathe of Heaven', 'scifi', 1971),
    (4, 1, 'The Tombs of Atuan', 'fantasy', 1971),
    (5, 1, 'The Farthest Shore', 'fantasy', 1972),
    (6, 1, 'The Dispossessed', 'scifi', 1974),
    (7, 1, 'The Word for World Is Forest', 'scifi', 1976),
    (8, 1, 'Always Coming Home', 'scifi', 1985),
    (9, 1, 'Tehanu', 'fantasy', 1990),
    (10, 1, 'Tales from Earthsea', 'fantasy', 2001),
    (11, 1, 'The Other Wind', 'fantasy', 2001),
    (12, 1, 'Lavinia', 'fantasy', 2008),
    (13, 1, 'The Language of the Night', 'essays', 1979),
    (14, 2, 'Ficciones', 'fiction', 1944),
    (15, 2, 'The Aleph', 'fiction', 1949),
    (16, 2, 'Other Inquisitions', 'essays', 1952),
    (17, 2, 'Dreamtigers', 'fiction', 1960),
    (18, 2, 'Labyrinths', 'fiction', 1962),
    (19, 2, 'The Book of Imaginary Beings', 'fiction', 1967),
    (20, 2, 'Brodie''s Report', 'fiction', 1970),
    (21, 2, 'The Book of Sand', 'fiction', 1975),
    (22, 2, 'Seven Nights', 'essays', 1980),
    (23, 3, 'The Path to the Spiders'' Nests', 'fiction', 1947),
    (24, 3, 'The Cloven Viscount', 'fiction', 1952),
    (25, 3, 'Italian Folktales', 'folktales', 1956),
    (26, 3, 'The Baron in the Trees', 'fiction', 1957),
    (27, 3, 'The Nonexistent Knight', 'fiction', 1959),
    (28, 3, 'Cosmicomics', 'fiction', 1965),
    (29, 3, 'Invisible Cities', 'fiction', 1972),
    (30, 3, 'The Castle of Crossed Destinies', 'fiction', 1973),
    (31, 3, 'If on a winter''s night a traveler', 'fiction', 1979),
    (32, 3, 'Mr. Palomar', 'fiction', 1983),
    (33, 3, 'Six Memos for the Next Millennium', 'essays', 1988);
";
