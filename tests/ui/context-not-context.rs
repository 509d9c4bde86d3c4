use cacheme::cache_store;

struct App;

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(_ctx: &App, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

fn main() {}
