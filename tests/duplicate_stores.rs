//! Two stores that would share keys are refused when a client is built,
//! with a message naming both declarations. (Its own test binary: every
//! store in a binary is checked, so the duplicates would fail the others.)

use cacheme::{Client, Error, cache_store};

#[allow(dead_code)]
struct Ctx(Client);

impl cacheme::Context for Ctx {
    fn cacheme(&self) -> &Client {
        &self.0
    }
}

// Declared only to be detected as duplicates; never called.
#[allow(dead_code)]
mod users {
    use super::*;

    #[cache_store(key = "user:<id>", ttl = "1m")]
    pub async fn user(_ctx: &Ctx, id: u64) -> Result<String, ()> {
        Ok(id.to_string())
    }
}

// Declared only to be detected as duplicates; never called.
#[allow(dead_code)]
mod accounts {
    use super::*;

    // Another variable name, the same shape: `user:<>` twice.
    #[cache_store(key = "user:<account_id>", ttl = "1m")]
    pub async fn account(_ctx: &Ctx, account_id: u64) -> Result<String, ()> {
        Ok(account_id.to_string())
    }
}

#[test]
fn a_client_is_not_built_over_two_stores_with_one_key_pattern() {
    let err = Client::memory().unwrap_err();
    let Error::DuplicateStore { first, second, clash } = &err else {
        panic!("{err:?}")
    };
    assert!(first.starts_with("UserStore (tests/duplicate_stores.rs:"), "{first}");
    assert!(
        second.starts_with("AccountStore (tests/duplicate_stores.rs:"),
        "{second}"
    );
    assert!(
        clash.contains("\"user:<id>\"") && clash.contains("\"user:<account_id>\""),
        "{clash}"
    );
    let shown = err.to_string();
    assert!(shown.contains("UserStore") && shown.contains("AccountStore"), "{shown}");
    // The stores exist and are typed; only building a client is refused.
    let _ = (users::UserStore::key(&1), accounts::AccountStore::key(&1));
}
