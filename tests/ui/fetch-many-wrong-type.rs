use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", ttl = "1m", fetch_many = books)]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(format!("{id}"))
}

async fn books(_ctx: &Client, ids: Vec<u64>) -> Result<Vec<String>, ()> {
    Ok(ids.into_iter().map(|id| format!("{id}")).collect())
}

fn main() {}
