//! `cargo cacheme init`: writes a cache module with one example store and
//! adds its dependencies to Cargo.toml.
//!
//! It does not edit `main.rs` or `lib.rs`: where a module belongs and how
//! the program starts its async runtime are the program's business, so it
//! prints the lines to add instead.

pub mod manifest;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::opt::InitOpt;
use crate::scan;
use manifest::CachemeSource;

/// The module `init` writes.
pub const TEMPLATE: &str = include_str!("cache.rs.txt");

/// The version requirement of `cacheme` when no `--path` is given.
pub const VERSION_REQ: &str = "0.1";

/// Writes the module and edits Cargo.toml, then says what it did and what
/// to do next.
pub fn run(opt: &InitOpt) -> Result<i32> {
    if syn::parse_str::<syn::Ident>(&opt.module).is_err() {
        return Err(Error::Usage(format!(
            "--module {:?}: a module name is a Rust identifier such as `cache`",
            opt.module
        )));
    }
    let source = match &opt.path {
        Some(dir) => CachemeSource::Path(cacheme_path(dir)?),
        None => CachemeSource::Version(VERSION_REQ.to_owned()),
    };
    let manifest_path = scan::manifest(opt.source.manifest_path.as_deref())?;
    let root = manifest_path.parent().unwrap_or(Path::new(".")).to_owned();
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
    let (edited, changes) = manifest::add_dependencies(&text, &source).map_err(|reason| Error::Manifest {
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
        println!("Cargo.toml: {change}");
    }
    let entry = if src.join("main.rs").is_file() || !src.join("lib.rs").is_file() {
        "src/main.rs"
    } else {
        "src/lib.rs"
    };
    println!();
    println!("Next: add `mod {module};` to {entry}, then use the store from async code, e.g.");
    println!();
    println!("    #[tokio::main]");
    println!("    async fn main() -> Result<(), Box<dyn std::error::Error>> {{");
    println!("        let app = {module}::App::from_env().await?;");
    println!("        let greeting = {module}::GreetingStore::get(&app, \"world\".to_owned()).await?;");
    println!("        println!(\"{{}}\", greeting.text);");
    println!("        Ok(())");
    println!("    }}");
    println!();
    println!("and see it with `cargo cacheme list`.");
    Ok(0)
}

/// The directory of the cacheme crate, absolute, as Cargo.toml spells it.
fn cacheme_path(dir: &Path) -> Result<String> {
    let manifest = dir.join("Cargo.toml");
    let is_cacheme = std::fs::read_to_string(&manifest).is_ok_and(|text| {
        text.parse::<toml_edit::DocumentMut>()
            .is_ok_and(|doc| doc.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()) == Some("cacheme"))
    });
    if !is_cacheme {
        return Err(Error::Usage(format!(
            "--path {}: no Cargo.toml of the `cacheme` package there",
            dir.display()
        )));
    }
    let absolute: PathBuf = dir.canonicalize().map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    Ok(absolute.to_string_lossy().replace('\\', "/"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
