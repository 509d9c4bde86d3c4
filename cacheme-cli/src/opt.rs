//! Command-line options. The doc comments here are the `--help` text.

use clap::{Parser, Subcommand};

/// Cargo passes the subcommand name (`cacheme`) as the first argument.
#[derive(Debug, Parser)]
#[command(bin_name = "cargo", version)]
pub enum Cargo {
    /// Manage cacheme cache stores.
    Cacheme(Opt),
}

/// `cargo cacheme`: scaffolding, schema checks and cache operations.
#[derive(Debug, clap::Args)]
#[command(version)]
pub struct Opt {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version of cargo-cacheme.
    Version,
}
