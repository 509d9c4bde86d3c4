use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", tll = "5m")]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

fn main() {}
