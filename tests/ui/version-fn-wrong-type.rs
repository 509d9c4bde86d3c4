use cacheme::{cache_store, Client};

fn version() -> u32 {
    2
}

#[cache_store(key = "book:<id>", ttl = "5m", version = version)]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

fn main() {}
