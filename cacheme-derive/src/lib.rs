//! Procedural macros of cacheme. Use them through the `cacheme` crate,
//! whose docs describe `#[cache_store]` in full.
//!
//! The macro works in three phases, each in its own module: [`ast`] parses
//! the attribute and the fetcher, [`valid`] checks them (collecting every
//! error, each spanned at the offending tokens), [`expand`] writes the
//! store. On error the fetcher is still emitted, so users see the real
//! mistakes rather than a cascade of "cannot find" errors.

mod ast;
mod duration;
mod expand;
mod template;
mod valid;

use proc_macro::TokenStream;

/// Turns an `async fn` fetcher into a typed cache store. See the `cacheme`
/// crate for the documentation.
#[proc_macro_attribute]
pub fn cache_store(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::cache_store(args.into(), input.into()).into()
}
