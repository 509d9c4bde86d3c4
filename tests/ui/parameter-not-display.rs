use cacheme::{cache_store, Client};

#[derive(Clone)]
struct BookId(u64);

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(_ctx: &Client, id: BookId) -> Result<String, ()> {
    Ok(id.0.to_string())
}

fn main() {}
