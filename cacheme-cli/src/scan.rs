//! Source walking: finds the crate, parses every `src/**/*.rs` with syn and
//! hands each `#[cache_store]` to `cacheme-macros-core`, the code the macro
//! itself runs, so what is reported here is what the compiler would say.
//!
//! Attributes are found on items at any depth (inline modules, function
//! bodies) when their path ends in `cache_store` (`#[cache_store]`,
//! `#[cacheme::cache_store]`). Every file under `src/` is read, whether or
//! not a `mod` declaration or a `#[cfg]` includes it in a build.

use std::fmt;
use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Attribute, ImplItemFn, Item, Meta, TraitItemFn};

use crate::decl::Declaration;
use crate::error::{Error, Result};

/// A problem found in the sources, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file, relative to the crate's directory (`src/lib.rs`).
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
    /// What is wrong, in the macro's words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// What the crate's sources declare.
#[derive(Debug, Default)]
pub struct Sources {
    /// The crate's directory.
    pub root: PathBuf,
    /// How many `.rs` files were read.
    pub files: usize,
    /// The valid declarations, in file and line order.
    pub stores: Vec<Declaration>,
    /// Invalid declarations and unparsable files.
    pub problems: Vec<Problem>,
}

/// The Cargo.toml to use: `manifest_path`, or the nearest one in the
/// current directory or above.
pub fn manifest(manifest_path: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = manifest_path {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(Error::Usage(format!(
                "--manifest-path {}: no such file",
                path.display()
            )))
        };
    }
    let start = std::env::current_dir().map_err(|source| Error::Read {
        path: PathBuf::from("."),
        source,
    })?;
    start
        .ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|candidate| candidate.is_file())
        .ok_or(Error::NoManifest { dir: start })
}

/// Reads every declaration in the `src/` of the crate whose manifest is
/// `manifest_path` (or the nearest one).
pub fn crate_sources(manifest_path: Option<&Path>) -> Result<Sources> {
    let manifest = manifest(manifest_path)?;
    let root = manifest.parent().map_or_else(|| PathBuf::from("."), Path::to_owned);
    let src = root.join("src");
    if !src.is_dir() {
        return Err(Error::Manifest {
            path: manifest,
            reason: "the crate has no src/ directory to search".to_owned(),
        });
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let mut sources = Sources {
        files: files.len(),
        ..Sources::default()
    };
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        scan_file(&shown, &text, &mut sources);
    }
    sources.root = root;
    Ok(sources)
}

/// The `.rs` files under `dir`, sorted, recursively. Symbolic links are
/// not followed.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let read_error = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(read_error)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let kind = entry.file_type().map_err(read_error)?;
        let path = entry.path();
        if kind.is_dir() {
            rust_files(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Adds the declarations (and problems) of one file, named `file`.
pub fn scan_file(file: &str, text: &str, sources: &mut Sources) {
    match syn::parse_file(text) {
        Ok(parsed) => {
            let mut visitor = Visitor { file, sources };
            visitor.visit_file(&parsed);
        }
        Err(e) => sources
            .problems
            .push(problem(file, e.span(), None, format!("cannot parse this file: {e}"))),
    }
}

struct Visitor<'a> {
    file: &'a str,
    sources: &'a mut Sources,
}

impl Visitor<'_> {
    fn declaration(&mut self, item: &Item, attrs: &[Attribute]) {
        let Some(index) = attrs.iter().position(is_cache_store) else {
            return;
        };
        let attr = &attrs[index];
        let args = match &attr.meta {
            Meta::Path(_) => TokenStream::new(),
            Meta::List(list) => list.tokens.clone(),
            Meta::NameValue(_) => {
                let message = "write `#[cache_store(key = \"...\", ttl = \"...\")]`, not `#[cache_store = ...]`";
                self.sources
                    .problems
                    .push(problem(self.file, attr.span(), None, message.to_owned()));
                return;
            }
        };
        // The macro sees the item without its own attribute.
        let mut item = item.clone();
        if let Some(attrs) = attrs_mut(&mut item) {
            attrs.remove(index);
        }
        let at = attr.span();
        match cacheme_macros_core::store(args, item.to_token_stream()) {
            Ok(store) => {
                let line = at.start().line;
                let declaration = Declaration::new(&store, self.file, line);
                self.sources.stores.push(declaration);
            }
            Err(errors) => {
                for error in errors {
                    // One syn::Error may carry several messages.
                    for one in error {
                        self.sources
                            .problems
                            .push(problem(self.file, one.span(), Some(at), one.to_string()));
                    }
                }
            }
        }
    }

    fn not_free(&mut self, attrs: &[Attribute]) {
        if let Some(attr) = attrs.iter().find(|a| is_cache_store(a)) {
            let message =
                "#[cache_store] goes on a free `async fn`, not on a method: it generates a type beside the fetcher";
            self.sources
                .problems
                .push(problem(self.file, attr.span(), None, message.to_owned()));
        }
    }
}

impl<'ast> Visit<'ast> for Visitor<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if let Some(attrs) = attrs(item) {
            self.declaration(item, attrs);
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast ImplItemFn) {
        self.not_free(&item.attrs);
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast TraitItemFn) {
        self.not_free(&item.attrs);
        syn::visit::visit_trait_item_fn(self, item);
    }
}

fn is_cache_store(attr: &Attribute) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == "cache_store")
}

/// A problem at `span`; the macro's "call site" (used for a missing
/// option), which outside a macro is an empty span at no place in the
/// file, is placed at the attribute.
fn problem(file: &str, span: Span, fallback: Option<Span>, message: String) -> Problem {
    let mut start = span.start();
    if span.byte_range().is_empty()
        && let Some(fallback) = fallback
    {
        start = fallback.start();
    }
    Problem {
        file: file.to_owned(),
        line: start.line.max(1),
        column: start.column + 1,
        message,
    }
}

fn attrs(item: &Item) -> Option<&Vec<Attribute>> {
    Some(match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => return None,
    })
}

fn attrs_mut(item: &mut Item) -> Option<&mut Vec<Attribute>> {
    Some(match item {
        Item::Const(i) => &mut i.attrs,
        Item::Enum(i) => &mut i.attrs,
        Item::ExternCrate(i) => &mut i.attrs,
        Item::Fn(i) => &mut i.attrs,
        Item::ForeignMod(i) => &mut i.attrs,
        Item::Impl(i) => &mut i.attrs,
        Item::Macro(i) => &mut i.attrs,
        Item::Mod(i) => &mut i.attrs,
        Item::Static(i) => &mut i.attrs,
        Item::Struct(i) => &mut i.attrs,
        Item::Trait(i) => &mut i.attrs,
        Item::TraitAlias(i) => &mut i.attrs,
        Item::Type(i) => &mut i.attrs,
        Item::Union(i) => &mut i.attrs,
        Item::Use(i) => &mut i.attrs,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Sources {
        let mut sources = Sources::default();
        scan_file("src/lib.rs", text, &mut sources);
        sources
    }

    #[test]
    fn finds_stores_at_any_depth_with_any_path_to_the_attribute() {
        let sources = scan(
            r#"
use cacheme::cache_store;

#[cache_store(key = "book:<id>", ttl = "5m")]
async fn book(ctx: &App, id: u64) -> Result<Book, E> { loop {} }

mod inner {
    #[cacheme::cache_store(key = "user:<id>", ttl = "1h", version = 3, name = "Users")]
    pub async fn user(ctx: &App, id: u64) -> Result<User, E> { loop {} }
}

fn main() {
    #[cache_store(key = "local", ttl = "1s")]
    async fn local(ctx: &App) -> Result<u8, E> { loop {} }
}
"#,
        );
        assert_eq!(sources.problems, []);
        let found: Vec<_> = sources.stores.iter().map(|s| (s.name.as_str(), s.line)).collect();
        assert_eq!(found, [("BookStore", 4), ("Users", 8), ("LocalStore", 13)]);
    }

    #[test]
    fn reports_the_macros_errors_where_they_are() {
        let sources = scan(
            "\n#[cache_store(ttl = \"5m\")]\nasync fn book(ctx: &App) -> Result<Book, E> { loop {} }\n\n#[cache_store(key = \"b:<id\", ttl = \"5x\")]\nasync fn b(ctx: &App, id: u64) -> Result<Book, E> { loop {} }\n",
        );
        let shown: Vec<_> = sources.problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("src/lib.rs:2:1: error: missing `key"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("src/lib.rs:5:21: error: unclosed `<`"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("src/lib.rs:5:36: error: invalid `ttl`"),
            "{shown:#?}"
        );
    }

    #[test]
    fn methods_and_unparsable_files_are_problems() {
        let sources = scan("impl App {\n    #[cache_store(key = \"k\", ttl = \"1s\")]\n    async fn m(&self) {}\n}\n");
        assert_eq!(sources.problems.len(), 1);
        assert!(sources.problems[0].message.contains("free `async fn`"));
        let sources = scan("fn broken( {");
        assert!(sources.problems[0].message.starts_with("cannot parse this file"));
    }
}
