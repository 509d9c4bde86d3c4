//! The module `cargo cacheme init` writes, used as its printed next step
//! says (`App::from_env`, `GreetingStore::get`), compiles in a binary
//! without a warning. (trybuild allows `dead_code`; the end-to-end test in
//! `cacheme-cli/tests/init.rs` checks that one.)
#![deny(warnings)]

#[path = "../../cacheme-cli/src/init/cache.rs.txt"]
mod cache;

fn main() {
    let _ = cache::App::from_env;
    let _ = cache::GreetingStore::get;
}
