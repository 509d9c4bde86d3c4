use cacheme::{cache_store, Client};

#[cache_store(key = "user:<name>", ttl = "5m", fetch_many = users)]
async fn user(_ctx: &Client, name: &str) -> Result<String, ()> {
    Ok(name.to_owned())
}

async fn users<'a>(_ctx: &Client, names: Vec<&'a str>) -> Result<Vec<(&'a str, String)>, ()> {
    Ok(names.into_iter().map(|n| (n, n.to_owned())).collect())
}

fn main() {}
