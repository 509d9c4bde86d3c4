//! `cargo cacheme`: the command-line half of cacheme, as a library so it can
//! be tested and embedded; `src/bin/cargo-cacheme.rs` is a thin wrapper.
//!
//! - `init` writes a cache module with an example store and adds the
//!   dependencies to Cargo.toml ([`init`]).
//! - `check` and `list` read the crate's `#[cache_store]` declarations with
//!   the macro's own parser and checks (`cacheme-macros-core`) and the
//!   runtime's duplicate rule ([`scan`], [`check`], [`list`]).
//! - `get`, `invalidate`, `invalidate-all` and `stats` work on a live cache
//!   opened by URL, building keys with the runtime's key code and reading
//!   and invalidating store keys through its store functions ([`ops`]).
//!
//! Exit codes: 0 when all is well, 1 when problems were found or an
//! operation failed, 2 for usage errors.
//!
//! Only the `cacheme` crate is semver-stable; this crate's library API may
//! change in any release.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod decl;
pub mod error;
pub mod init;
pub mod list;
pub mod ops;
pub mod opt;
pub mod output;
pub mod scan;

use opt::{Cargo, Command};

pub use error::{Error, Result};

/// Runs the parsed command line; the process exit code is the return value.
/// Errors are printed to stderr.
pub fn run(Cargo::Cacheme(opt): Cargo) -> i32 {
    match execute(opt.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn execute(command: Command) -> Result<i32> {
    match command {
        Command::Init(opt) => init::run(&opt),
        Command::Check(opt) => check::run(&opt),
        Command::List(opt) => list::run(&opt),
        Command::Get(opt) => ops::block_on(ops::get::run(&opt)),
        Command::Invalidate(opt) => ops::block_on(ops::invalidate::one(&opt)),
        Command::InvalidateAll(opt) => ops::block_on(ops::invalidate::all(&opt)),
        Command::Stats(opt) => ops::block_on(ops::stats::run(&opt)),
        Command::Version => {
            println!("cargo-cacheme {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}
