use cacheme::{Client, cache_store};

#[cache_store(key = "book:<id>", ttl = "1m", fetch_many = "books")]
async fn book(_ctx: &Client, id: u64) -> Result<String, std::io::Error> {
    Ok(format!("{id}"))
}

fn main() {}
