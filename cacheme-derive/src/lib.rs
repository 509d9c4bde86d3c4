//! Procedural macros of cacheme. Use them through the `cacheme` crate.
//!
//! `#[cache_store]` lands here with the typed-stores work; until then this
//! crate exports nothing.
