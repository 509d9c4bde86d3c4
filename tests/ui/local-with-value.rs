use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", ttl = "5m", local = 10_000)]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

fn main() {}
