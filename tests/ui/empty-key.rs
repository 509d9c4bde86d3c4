use cacheme::{cache_store, Client};

#[cache_store(key = "", ttl = "5m")]
async fn book(_ctx: &Client) -> Result<String, ()> {
    Ok(String::new())
}

fn main() {}
