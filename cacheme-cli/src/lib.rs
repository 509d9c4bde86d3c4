//! `cargo cacheme`: the command-line half of cacheme, as a library so it can
//! be tested and embedded; `src/bin/cargo-cacheme.rs` is a thin wrapper.
//!
//! The commands (`init`, `check`, `list`, and operations on a live cache)
//! arrive with their issue; today the CLI parses its arguments and reports
//! its version.

pub mod opt;

use opt::{Cargo, Command};

/// Runs the parsed command line; the process exit code is the return value.
pub fn run(Cargo::Cacheme(opt): Cargo) -> i32 {
    match opt.command {
        Command::Version => {
            println!("cargo-cacheme {}", env!("CARGO_PKG_VERSION"));
            0
        }
    }
}
