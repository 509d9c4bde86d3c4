use cacheme::{Client, cache_store};

#[derive(Debug)]
struct DbError;

#[cache_store(key = "book:<id>", ttl = "5m", hard_timeout = "2s")]
async fn book(ctx: &Client, id: u64) -> Result<String, DbError> {
    Ok(format!("{id}"))
}

fn main() {}
