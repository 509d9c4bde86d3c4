//! Two stores whose key templates can produce the same key are refused
//! when a client is built, with a message naming both declarations and a
//! key both would write. (Its own test binary: every store in a binary is
//! checked, so the overlap would fail the others.)

use cacheme::{Client, Error, cache_store};

// Declared only to be detected as overlapping; never called.
#[allow(dead_code)]
mod info {
    use super::*;

    // `foo:<id>:info` with id `list` ...
    #[cache_store(key = "foo:<id>:info", ttl = "1m")]
    pub async fn foo_info(_ctx: &Client, id: String) -> Result<String, ()> {
        Ok(id)
    }
}

// Declared only to be detected as overlapping; never called.
#[allow(dead_code)]
mod list {
    use super::*;

    // ... and `foo:list:<id>` with id `info` both store `foo:list:info:v1`.
    #[cache_store(key = "foo:list:<id>", ttl = "1m")]
    pub async fn foo_list(_ctx: &Client, id: String) -> Result<String, ()> {
        Ok(id)
    }
}

#[test]
fn a_client_is_not_built_over_two_stores_that_can_write_one_key() {
    // The collision itself, through the stores' own key functions.
    assert_eq!(info::FooInfoStore::key(&"list".to_owned()), "foo:list:info:v1");
    assert_eq!(list::FooListStore::key(&"info".to_owned()), "foo:list:info:v1");

    let err = Client::memory().unwrap_err();
    let Error::DuplicateStore { first, second, clash } = &err else {
        panic!("{err:?}")
    };
    assert!(
        first.starts_with("FooInfoStore (tests/overlapping_stores.rs:"),
        "{first}"
    );
    assert!(
        second.starts_with("FooListStore (tests/overlapping_stores.rs:"),
        "{second}"
    );
    assert_eq!(
        clash,
        "overlapping key templates (\"foo:<id>:info\" and \"foo:list:<id>\"), both writing the key \"foo:list:info:v1\""
    );
    let shown = err.to_string();
    assert!(
        shown.contains("FooInfoStore") && shown.contains("FooListStore") && shown.contains("foo:list:info:v1"),
        "{shown}"
    );
}
