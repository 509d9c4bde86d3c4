use cacheme::{cache_store, Client};

struct Book;

// One error, at the value type: the batch fetcher adds none.
#[cache_store(key = "book:<id>", ttl = "5m", fetch_many = books)]
async fn book(_ctx: &Client, id: u64) -> Result<Book, ()> {
    let _ = id;
    Ok(Book)
}

async fn books(_ctx: &Client, ids: Vec<u64>) -> Result<Vec<(u64, Book)>, ()> {
    Ok(ids.into_iter().map(|id| (id, Book)).collect())
}

async fn calls(client: &Client) {
    let _ = BookStore::get_m(client).add(1).run().await;
}

fn main() {
    let _ = calls;
}
