//! Procedural macros of cacheme. Use them through the `cacheme` crate,
//! whose docs describe `#[cache_store]` in full.
//!
//! The macro works in three phases: `cacheme-macros-core` parses the
//! attribute and the fetcher and checks them (collecting every error, each
//! spanned at the offending tokens), the same code `cargo cacheme check`
//! runs; `expand` writes the store. On error the fetcher is still
//! emitted with a stub of the store (`fallback`), so users see the real
//! mistakes rather than a cascade of "cannot find" errors.

#![forbid(unsafe_code)]

mod expand;
mod fallback;

use proc_macro::TokenStream;

/// Turns an `async fn` fetcher into a typed cache store. See the `cacheme`
/// crate for the documentation.
#[proc_macro_attribute]
pub fn cache_store(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::cache_store(args.into(), input.into()).into()
}
