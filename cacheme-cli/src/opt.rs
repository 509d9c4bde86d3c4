//! Command-line options. The doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The environment variable that names the cache backend, here and in the
/// module `cargo cacheme init` writes.
pub const URL_VAR: &str = "CACHEME_URL";

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
    /// Add a cache module with an example store to this Cargo project.
    ///
    /// Writes `src/cache.rs`: a context type whose client reads the backend
    /// URL from `CACHEME_URL` (an in-process memory cache when unset), and
    /// one example `#[cache_store]` with its fetcher. Adds `cacheme`,
    /// `serde` (derive) and `tokio` to Cargo.toml, keeping its comments
    /// and formatting. Does not edit main.rs or lib.rs: it prints the
    /// line to add. Refuses to overwrite the module unless `--force`.
    Init(InitOpt),

    /// Check every `#[cache_store]` in the crate's sources.
    ///
    /// Parses `src/**/*.rs` and applies the macro's own rules (bad keys,
    /// TTLs, options, the fetcher's shape), plus stores that share a name
    /// or a key pattern across files, which the client refuses when it is
    /// built. Reports each problem as `file:line:column`; exits with 1 when
    /// there is any.
    ///
    /// It reads the sources, it does not compile them: types are not
    /// checked (a value that is not `Serialize`, a context without
    /// `Context`, a parameter without `Display`, a `fetch_many` of the
    /// wrong type, a call with the wrong arguments). `cargo check` reports
    /// those, each at the offending type.
    Check(SourceOpt),

    /// List every store declared in the crate's sources.
    ///
    /// One row per store: name, key template (store prefix included), TTL,
    /// version, options, and where it is declared. Invalid declarations are
    /// reported on stderr (see `check`) and make the exit code 1.
    List(ListOpt),

    /// Show the value under a store key, decoded if its codec allows, and
    /// its remaining TTL.
    ///
    /// Values are given in the order the variables appear in the key
    /// template (as `list` shows it), or by name with `--param`. The key is
    /// built exactly as the store builds it (values escaped, `:v{version}`
    /// appended) and read where the store keeps its value: on backends that
    /// cannot list keys (memcached) under the store's current generation
    /// (`:g` and its number appended). The key printed is the one read; the
    /// backend adds its own prefix. Exits with 1 when there is no value.
    Get(GetOpt),

    /// Remove the value under a store key (what `Store::invalidate` does).
    ///
    /// Also breaks the key's fetch lock, so a fetch in flight in the
    /// application does not store its value after this.
    Invalidate(KeyOpt),

    /// Remove every value of one store and version (what
    /// `Store::invalidate_all` does).
    ///
    /// Walks the backend's keys in batches (Redis: SCAN + UNLINK), so it is
    /// O(keys in the cache): maintenance, not a request-path operation. On
    /// backends that cannot list keys (memcached) it moves the store and
    /// version to a new generation instead: the old values are no longer
    /// read and expire by their TTL; running programs see the change
    /// within their client's `generation_refresh` (1 s by default).
    InvalidateAll(InvalidateAllOpt),

    /// Count the cache's keys per store and version, and show the memory
    /// the server uses where the backend tells.
    ///
    /// Keys are matched against the stores declared in the crate's
    /// sources; keys of no known store are counted apart.
    Stats(StatsOpt),

    /// Print the version of cargo-cacheme.
    Version,
}

/// Where the crate is.
#[derive(Debug, Args)]
pub struct SourceOpt {
    /// The crate's Cargo.toml; its `src/` is searched. Default: the nearest
    /// Cargo.toml in the current directory or above.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
}

/// Options of `init`.
#[derive(Debug, Args)]
pub struct InitOpt {
    /// Use the cacheme crate at this directory (a path dependency, written
    /// relative to the project when DIR is relative). Without it: the
    /// checkout cargo-cacheme was built from, else "0.1" from crates.io.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,

    /// The module to create, as `src/<NAME>.rs`.
    #[arg(long, value_name = "NAME", default_value = "cache")]
    pub module: String,

    /// Overwrite the module file if it exists, and point an existing
    /// `cacheme` dependency at the new source.
    #[arg(long)]
    pub force: bool,

    /// Where the crate is.
    #[command(flatten)]
    pub source: SourceOpt,
}

/// How `list` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON: `list` prints an array with one object per store, `stats`
    /// one object.
    Json,
}

/// Options of `list`.
#[derive(Debug, Args)]
pub struct ListOpt {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Where the crate is.
    #[command(flatten)]
    pub source: SourceOpt,
}

/// The live cache to work on.
#[derive(Debug, Args)]
pub struct BackendOpt {
    /// The cache's URL, as the application opens it: `redis://:pass@host:6379/0?prefix=app`,
    /// `redis-cluster://h1:7000,h2:7001`, `memcache://host:11211`, `file:///var/cache/app`.
    /// Passwords are never printed.
    #[arg(long, env = URL_VAR, hide_env_values = true, value_name = "URL")]
    pub url: Option<String>,
}

impl BackendOpt {
    /// The URL given by `--url` or `CACHEME_URL`.
    pub fn url(&self) -> crate::Result<&str> {
        self.url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| crate::Error::Usage(format!("no cache URL: pass --url URL or set {URL_VAR}")))
    }
}

/// A codec name, for values of stores that use the client's codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CodecArg {
    /// bincode (the default codec; not self-describing: shown as hex).
    Bincode,
    /// JSON.
    Json,
    /// MessagePack.
    Msgpack,
}

/// One key of a store, for `get` and `invalidate`.
#[derive(Debug, Args)]
pub struct KeyOpt {
    /// The store, by its type name as `list` shows it (`BookStore`) or
    /// its fetcher's name (`book`).
    #[arg(long, short, value_name = "NAME", required_unless_present = "key")]
    pub store: Option<String>,

    /// The key's values, in the order the variables appear in the key
    /// template: `--store BookStore 7 42` for `book:<category_id>:<book_id>`.
    #[arg(value_name = "VALUE", conflicts_with = "key")]
    pub values: Vec<String>,

    /// A value by variable name (`--param book_id=42`); repeatable, instead
    /// of positional values.
    #[arg(long = "param", short, value_name = "NAME=VALUE", conflicts_with_all = ["key", "values"])]
    pub params: Vec<String>,

    /// The version in the key. Default: the store's declared version.
    #[arg(long, value_name = "V", conflicts_with = "key")]
    pub version: Option<String>,

    /// A raw key instead of values, without the backend's prefix
    /// (`book:7:42:v1`). With --store it is a key of that store, as
    /// `Store::key` builds it (its generation is added, its fetch lock
    /// broken, as for values); alone it is the exact key in the cache, read
    /// or deleted as is.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// The live cache.
    #[command(flatten)]
    pub backend: BackendOpt,

    /// Where the crate is.
    #[command(flatten)]
    pub source: SourceOpt,
}

/// Options of `get`: a key, and how to show its value.
#[derive(Debug, Args)]
pub struct GetOpt {
    /// The key.
    #[command(flatten)]
    pub key: KeyOpt,

    /// How to decode values of stores that use the client's codec (and of
    /// raw keys). Default: the store's codec; else JSON when the value is
    /// JSON, hex otherwise.
    #[arg(long, value_enum)]
    pub codec: Option<CodecArg>,
}

/// Options of `invalidate-all`.
#[derive(Debug, Args)]
pub struct InvalidateAllOpt {
    /// The store, by its type name as `list` shows it (`BookStore`) or
    /// its fetcher's name (`book`).
    #[arg(long, short, value_name = "NAME")]
    pub store: String,

    /// The version whose values are removed. Default: the store's declared
    /// version (required when the version is a function).
    #[arg(long, value_name = "V")]
    pub version: Option<String>,

    /// The live cache.
    #[command(flatten)]
    pub backend: BackendOpt,

    /// Where the crate is.
    #[command(flatten)]
    pub source: SourceOpt,
}

/// Options of `stats`.
#[derive(Debug, Args)]
pub struct StatsOpt {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// The live cache.
    #[command(flatten)]
    pub backend: BackendOpt,

    /// Where the crate is.
    #[command(flatten)]
    pub source: SourceOpt,
}
