//! The `cargo-cacheme` binary: run as `cargo cacheme <command>`.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    std::process::exit(cacheme_cli::run(cacheme_cli::opt::Cargo::parse()));
}
