use cacheme::{Client, cache_store};

#[cache_store(key = "book:<name>", ttl = "5m", refresh_after = "1m")]
async fn book(ctx: &Client, name: &str) -> Result<String, std::io::Error> {
    Ok(name.to_owned())
}

fn main() {}
