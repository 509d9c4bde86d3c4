use cacheme::{Client, cache_store};

#[derive(Debug)]
struct NotClone;

#[cache_store(key = "book:<id>", ttl = "1m", fetch_many = books)]
async fn book(_ctx: &Client, id: u64) -> Result<String, NotClone> {
    Ok(format!("{id}"))
}

async fn books(_ctx: &Client, ids: Vec<u64>) -> Result<Vec<(u64, String)>, NotClone> {
    Ok(ids.into_iter().map(|id| (id, format!("{id}"))).collect())
}

fn main() {}
