//! `cargo cacheme init`: writes a cache module with one example store and
//! adds its dependencies to Cargo.toml.
//!
//! It does not edit `main.rs` or `lib.rs`: where a module belongs and how
//! the program starts its async runtime are the program's business, so it
//! prints the lines to add instead: for a fresh `cargo new` binary, the
//! whole `src/main.rs` to write and the command that runs it.
//!
//! The `cacheme` dependency is `--path DIR` (relative when `DIR` is
//! given relative), else the checkout this binary was built from, else
//! the crates.io version (see [`source`]).

pub mod manifest;
pub mod source;

use std::path::Path;

use crate::error::{Error, Result};
use crate::opt::InitOpt;
use crate::scan;

/// The module `init` writes.
pub const TEMPLATE: &str = include_str!("cache.rs.txt");

pub use source::VERSION_REQ;

/// `src/main.rs` of a project `cargo new` has just made.
const CARGO_NEW_MAIN: &str = "fn main() {\n    println!(\"Hello, world!\");\n}\n";

/// Writes the module and edits Cargo.toml, then says what it did and what
/// to do next.
pub fn run(opt: &InitOpt) -> Result<i32> {
    if syn::parse_str::<syn::Ident>(&opt.module).is_err() {
        return Err(Error::Usage(format!(
            "--module {:?}: a module name is a Rust identifier such as `cache`",
            opt.module
        )));
    }
    let manifest_path = scan::manifest(opt.source.manifest_path.as_deref())?;
    let root = match manifest_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => Path::new(".").to_owned(),
    };
    let (source, from) = source::choose(opt.path.as_deref(), &root)?;
    let src = root.join("src");
    if !src.is_dir() {
        return Err(Error::Manifest {
            path: manifest_path,
            reason: "the package has no src/ directory".to_owned(),
        });
    }
    let module_file = src.join(format!("{}.rs", opt.module));
    for existing in [module_file.clone(), src.join(&opt.module).join("mod.rs")] {
        if existing.exists() && !opt.force {
            return Err(Error::Exists { path: existing });
        }
    }
    // Everything is checked before anything is written.
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| Error::Read {
        path: manifest_path.clone(),
        source,
    })?;
    let (edited, changes) =
        manifest::add_dependencies(&text, &source, opt.force).map_err(|reason| Error::Manifest {
            path: manifest_path.clone(),
            reason,
        })?;

    write(&module_file, TEMPLATE)?;
    if edited != text {
        write(&manifest_path, &edited)?;
    }

    let module = &opt.module;
    let shown = |path: &Path| path.strip_prefix(&root).unwrap_or(path).display().to_string();
    println!(
        "created {}: an `App` context whose client opens $CACHEME_URL (an in-process memory cache when unset)",
        shown(&module_file)
    );
    println!("        and the example store `GreetingStore` (key greeting:<name>, ttl 5m) with its fetcher `greeting`");
    for change in &changes {
        match change {
            manifest::Change::Added(what) | manifest::Change::Replaced(what) if what.starts_with("cacheme ") => {
                println!("Cargo.toml: {change} (from {from})")
            }
            manifest::Change::Kept(name) if name == "cacheme" && !opt.force => {
                println!("Cargo.toml: {change}; `--force` would replace it (source: {from})")
            }
            _ => println!("Cargo.toml: {change}"),
        }
    }
    println!();
    next_steps(&src, module);
    Ok(0)
}

/// Prints what to do next. For a binary whose `main.rs` is still `cargo
/// new`'s, the whole file: written as shown, `cargo run` greets.
fn next_steps(src: &Path, module: &str) {
    let main = src.join("main.rs");
    let fresh = std::fs::read_to_string(&main).map_or(!src.join("lib.rs").is_file(), |text| text == CARGO_NEW_MAIN);
    let body = [
        "#[tokio::main]".to_owned(),
        "async fn main() -> Result<(), Box<dyn std::error::Error>> {".to_owned(),
        format!("    let app = {module}::App::from_env().await?;"),
        format!("    let greeting = {module}::GreetingStore::get(&app, \"world\".to_owned()).await?;"),
        "    println!(\"{}\", greeting.text);".to_owned(),
        "    Ok(())".to_owned(),
        "}".to_owned(),
    ];
    if fresh {
        println!("Next: replace src/main.rs with");
        println!();
        println!("    mod {module};");
        println!();
    } else {
        let entry = if main.is_file() { "src/main.rs" } else { "src/lib.rs" };
        println!("Next: add `mod {module};` to {entry}, then use the store from async code, e.g.");
        println!();
    }
    for line in body {
        println!("    {line}");
    }
    println!();
    if fresh {
        println!("Then run it: `cargo run` prints \"Hello, world!\";");
        println!("`CACHEME_URL=redis://127.0.0.1:6379 cargo run` keeps the cache in Redis.");
    }
    println!("See the stores with `cargo cacheme list`.");
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
