use cacheme::{Client, cache_store};

#[cache_store(key = "book:<id>", ttl = "5m", refresh_after = "5m")]
async fn book(ctx: &Client, id: u64) -> Result<String, std::io::Error> {
    Ok(format!("{id}"))
}

fn main() {}
