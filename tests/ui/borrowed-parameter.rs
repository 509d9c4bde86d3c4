//! A borrowed parameter works on get, invalidate and update; a store with
//! one has no batching, which says so rather than failing on lifetimes.
use cacheme::{cache_store, Client};

#[cache_store(key = "user:<name>", ttl = "5m")]
async fn user(_ctx: &Client, name: &str) -> Result<String, ()> {
    Ok(name.to_owned())
}

async fn use_it(client: &Client, name: &str) -> Result<(), ()> {
    let _: String = UserStore::get(client, name).await?;
    let _ = UserStore::invalidate(client, "ann").await;
    let _ = UserStore::update(client, name).await;
    let _ = UserStore::key(&"ann");
    UserStore::get_m(client);
    Ok(())
}

fn main() {
    let _ = use_it;
}
