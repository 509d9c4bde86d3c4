//! Two stores with one name (in different modules) are refused when a
//! client is built.

use cacheme::{Client, Error, cache_store};

// Declared only to be detected as duplicates; never called.
#[allow(dead_code)]
mod a {
    #[cacheme::cache_store(key = "a:<id>", ttl = "1m", name = "Thing")]
    pub async fn thing(_ctx: &cacheme::Client, id: u64) -> Result<u64, ()> {
        Ok(id)
    }
}

// Declared only to be detected as duplicates; never called.
#[allow(dead_code)]
mod b {
    use super::*;

    #[cache_store(key = "b:<id>", ttl = "1m", name = "Thing")]
    pub async fn thing(_ctx: &Client, id: u64) -> Result<u64, ()> {
        Ok(id)
    }
}

#[test]
fn a_client_is_not_built_over_two_stores_with_one_name() {
    match Client::builder().build() {
        Err(Error::DuplicateStore { clash, .. }) => assert_eq!(clash, "the same name \"Thing\""),
        other => panic!("{other:?}"),
    }
    let _ = (a::Thing::key(&1), b::Thing::key(&1));
}
