//! The parsing and checking half of cacheme's `#[cache_store]`, shared by
//! the macro (`cacheme-derive`) and `cargo cacheme check` / `list`, so
//! both apply exactly the same rules (as `sqlx-macros-core` is shared by
//! sqlx's macros and its CLI).
//!
//! Use cacheme through the `cacheme` crate: only the facade is
//! semver-stable; this crate's version is pinned exactly by it.
//!
//! Phases, each in its own module: [`ast`] parses the attribute and the
//! fetcher, [`valid`] checks them (collecting every error, each spanned at
//! the offending tokens) into a [`Store`]; [`template`] and [`duration`]
//! are the pure helpers it uses. Code generation stays in the macro crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ast;
pub mod duration;
pub mod template;
pub mod valid;

use proc_macro2::TokenStream;

pub use valid::{Freshness, Jitter, Store, Version};

/// Parses and checks one `#[cache_store(args)]` on `item` (the tokens of
/// the item the attribute is on, without the attribute itself): the
/// store, or every error found, in the order the macro reports them.
pub fn store(args: TokenStream, item: TokenStream) -> Result<Store, Vec<syn::Error>> {
    let mut errors = Vec::new();
    let args = ast::parse_args(args, &mut errors);
    let store = match ast::parse_fetcher(item) {
        Ok(fetcher) => valid::validate(args, fetcher, &mut errors),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match store {
        Some(store) if errors.is_empty() => Ok(store),
        _ => Err(errors),
    }
}
