use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", ttl = "30s", ttl_jitter = "1m")]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

fn main() {}
