use cacheme::{cache_store, Client, Pipeline};

struct Book;

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(_ctx: &Client, id: u64) -> Result<Book, ()> {
    let _ = id;
    Ok(Book)
}

// One error, at the value type: the store's methods and their callers add none.
async fn calls(client: &Client) {
    let _ = BookStore::get(client, 1).await;
    let _ = BookStore::update(client, 1).await;
    let _ = BookStore::set(client, 1, &Book).await;
    let _ = BookStore::peek(client, 1).await;
    let _ = BookStore::get_m(client).add(1).run().await;
    let mut pipeline = Pipeline::new();
    let _ = BookStore::get_p(client, &mut pipeline, 1);
}

fn main() {
    let _ = calls;
}
