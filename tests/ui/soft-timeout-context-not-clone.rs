use cacheme::{Client, Context, cache_store};

struct App {
    cache: Client,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

#[cache_store(key = "book:<id>", ttl = "5m", stale_for = "1h", soft_timeout = "100ms")]
async fn book(ctx: &App, id: u64) -> Result<String, std::io::Error> {
    Ok(format!("{id}"))
}

fn main() {}
