use cacheme::{Client, cache_store};

fn ttl_of(value: &u64) -> u64 {
    *value
}

#[cache_store(key = "book:<id>", ttl = "5m", ttl_from = ttl_of)]
async fn book(ctx: &Client, id: u64) -> Result<String, std::io::Error> {
    Ok(format!("{id}"))
}

fn main() {}
