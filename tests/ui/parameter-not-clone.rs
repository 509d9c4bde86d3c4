use std::fmt;

use cacheme::{cache_store, Client};

struct BookId(u64);

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(_ctx: &Client, id: BookId) -> Result<String, ()> {
    Ok(id.0.to_string())
}

fn main() {}
