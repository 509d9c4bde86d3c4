use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", ttl = "5m", batch = false, fetch_many = books)]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

async fn books(_ctx: &Client, ids: Vec<u64>) -> Result<Vec<(u64, String)>, ()> {
    Ok(ids.into_iter().map(|id| (id, id.to_string())).collect())
}

fn main() {}
