//! Where the `cacheme` dependency `init` writes comes from: `--path` (kept
//! relative when given relative), else the checkout this binary was built
//! from, else the crates.io version requirement.

use std::path::{Component, Path, PathBuf};

use super::manifest::CachemeSource;
use crate::error::{Error, Result};

/// The version requirement of `cacheme` when neither `--path` nor a
/// checkout gives a path.
pub const VERSION_REQ: &str = "0.1";

/// The dependency for a project whose manifest is in `root`, and why it
/// was chosen (for the report).
pub fn choose(path: Option<&Path>, root: &Path) -> Result<(CachemeSource, &'static str)> {
    if let Some(dir) = path {
        if !is_cacheme(dir) {
            return Err(Error::Usage(format!(
                "--path {}: no Cargo.toml of the `cacheme` package there",
                dir.display()
            )));
        }
        let target = canonical(dir)?;
        let spelled = if dir.is_relative() {
            relative(&canonical(root)?, &target).unwrap_or(target)
        } else {
            target
        };
        return Ok((CachemeSource::Path(spelled_path(&spelled)), "--path"));
    }
    match built_from_checkout() {
        Some(checkout) => Ok((
            CachemeSource::Path(spelled_path(&checkout)),
            "the checkout cargo-cacheme was built from",
        )),
        None => Ok((CachemeSource::Version(VERSION_REQ.to_owned()), "crates.io")),
    }
}

/// The cacheme checkout this binary was built from (`cacheme-cli`'s parent
/// directory, when it is still there and holds the `cacheme` package). A
/// binary built from a crates.io download has none: its parent is the
/// registry's source directory.
fn built_from_checkout() -> Option<PathBuf> {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    is_cacheme(checkout).then(|| checkout.canonicalize().ok()).flatten()
}

/// Whether `dir` holds the Cargo.toml of the `cacheme` package.
fn is_cacheme(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| {
        text.parse::<toml_edit::DocumentMut>()
            .is_ok_and(|doc| doc.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()) == Some("cacheme"))
    })
}

fn canonical(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize().map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })
}

/// `to` relative to `from` (both absolute and canonical), or `None` when
/// they share no root (another drive on Windows).
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    if from.first() != to.first() {
        return None;
    }
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = std::iter::repeat_n(Component::ParentDir, from.len() - common).collect();
    path.extend(&to[common..]);
    if path.as_os_str().is_empty() {
        path.push(".");
    }
    Some(path)
}

/// A path as Cargo.toml spells it (forward slashes on every platform).
fn spelled_path(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let rel = |from: &str, to: &str| relative(Path::new(from), Path::new(to)).map(|p| spelled_path(&p));
        assert_eq!(rel("/home/me/demo", "/home/me/cacheme").as_deref(), Some("../cacheme"));
        assert_eq!(
            rel("/home/me/demo", "/home/me/demo/vendor/cacheme").as_deref(),
            Some("vendor/cacheme")
        );
        assert_eq!(rel("/a/b/c", "/x").as_deref(), Some("../../../x"));
        assert_eq!(rel("/a", "/a").as_deref(), Some("."));
    }

    #[test]
    fn this_binary_is_built_from_a_checkout() {
        let checkout = built_from_checkout().expect("the tests run in a checkout");
        assert!(is_cacheme(&checkout));
    }
}
