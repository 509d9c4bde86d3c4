use cacheme::{cache_store, Client};

#[derive(serde::Serialize, serde::Deserialize)]
struct Book(u64);

#[cache_store(key = "book:<id>", ttl = "5m", local)]
async fn book(_ctx: &Client, id: u64) -> Result<Book, ()> {
    Ok(Book(id))
}

fn main() {}
