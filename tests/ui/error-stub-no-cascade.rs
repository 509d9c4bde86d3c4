//! A declaration with a mistake still declares `BookStore`: its call
//! sites add no errors of their own.
use cacheme::{cache_store, Client};

#[cache_store(key = "book:<id>", tll = "5m")]
async fn book(_ctx: &Client, id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

async fn use_it(client: &Client) -> Result<(), ()> {
    let title: String = BookStore::get(client, 1).await?;
    let found = BookStore::get_m(client).add(1).add(2).run().await.into_all()?;
    let _ = (title, found.get(&1), BookStore::key(&1));
    BookStore::invalidate(client, 1).await.ok();
    BookStore::update(client, 1).await.ok();
    BookStore::invalidate_all(client, 1).await.ok();
    Ok(())
}

fn main() {
    let _ = use_it;
}
