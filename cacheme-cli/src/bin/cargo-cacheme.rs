//! The `cargo-cacheme` binary: run as `cargo cacheme <command>`.

use clap::Parser;

fn main() {
    std::process::exit(cacheme_cli::run(cacheme_cli::opt::Cargo::parse()));
}
