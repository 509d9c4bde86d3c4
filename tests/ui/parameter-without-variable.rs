use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(_ctx: &Client, id: u64, category: u32) -> Result<String, ()> {
    Ok(format!("{id} {category}"))
}

fn main() {}
