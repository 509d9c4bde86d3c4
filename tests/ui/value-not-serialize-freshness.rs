use std::time::Duration;

use cacheme::{cache_store, Client, FetchTimeout};

struct Book;

#[derive(Debug, Clone)]
struct DbError;

impl From<FetchTimeout> for DbError {
    fn from(_: FetchTimeout) -> Self {
        DbError
    }
}

fn book_ttl(_: &Book) -> Duration {
    Duration::from_secs(60)
}

// One error, at the value type: the freshness options that name the value
// or error type (hard_timeout, soft_timeout, refresh_after, ttl_from) add none.
#[cache_store(
    key = "book:<id>",
    ttl = "5m",
    stale_for = "1h",
    soft_timeout = "50ms",
    hard_timeout = "1s",
    refresh_after = "30s",
    ttl_from = book_ttl
)]
async fn book(_ctx: &Client, id: u64) -> Result<Book, DbError> {
    let _ = id;
    Ok(Book)
}

async fn calls(client: &Client) {
    let _ = BookStore::get(client, 1).await;
}

fn main() {
    let _ = calls;
}
