//! The examples of cacheme, in a package of their own so that
//! `cargo run --example quickstart` builds only what they need (not the
//! facade's test dependencies):
//!
//! - `quickstart.rs`: a typed store on the memory backend;
//!   `cargo run --example quickstart`.
//! - `pipeline.rs`: one pipeline over three stores;
//!   `cargo run --example pipeline [-- redis://127.0.0.1:6379]`.
//! - `bookshop/`: an HTTP service over SQLite with several stores;
//!   `cargo run -p bookshop` (see `bookshop/README.md`).

#![forbid(unsafe_code)]
