use cacheme::{cache_store, Client};

struct Book;

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(_ctx: &Client, id: u64) -> Result<Book, ()> {
    let _ = id;
    Ok(Book)
}

fn main() {}
