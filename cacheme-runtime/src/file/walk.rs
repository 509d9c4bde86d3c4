//! Finding this cache's files under `CachePath`, for `clear`, the sweeper
//! and `delete_matching`.
//!
//! A file is ours when it sits at the configured depth, inside directories
//! named by two lowercase hex digits that are the start of its hash, and its
//! name is 64 lowercase hex digits followed by `FileSuffix` (an entry) or
//! `.<64 hex digits>.<pid>.<n>.tmp` (a write in progress or left by a
//! crash). Anything else (a README, another program's files, the entries of
//! a cache with another `FileSuffix`, symlinks) is left alone.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use super::store::{Store, at};

/// What one of our files is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A cache entry.
    Entry,
    /// A temp file of an unfinished write. Temp files are only written
    /// under their stripe's lock, so one seen while holding that lock is
    /// left over from a crash.
    Temp,
}

/// One of our files.
#[derive(Clone, Debug)]
pub(super) struct OurFile {
    pub(super) path: PathBuf,
    pub(super) kind: Kind,
}

/// Our files, grouped by lock stripe (the first byte of their hash).
pub(super) fn our_files(store: &Store) -> io::Result<BTreeMap<u8, Vec<OurFile>>> {
    let mut found: BTreeMap<u8, Vec<OurFile>> = BTreeMap::new();
    for_each_file(store, |stripe, file| {
        found.entry(stripe).or_default().push(file);
        Ok(true)
    })?;
    Ok(found)
}

/// Calls `visit` with each of our files and its lock stripe, one directory
/// listing at a time (never holding every path), until it returns
/// `Ok(false)` or an error.
pub(super) fn for_each_file(store: &Store, mut visit: impl FnMut(u8, OurFile) -> io::Result<bool>) -> io::Result<()> {
    // (directory, the hex digits its path stands for)
    let mut dirs = vec![(store.root.clone(), String::new())];
    for _ in 0..store.levels {
        let mut next = Vec::new();
        for (dir, prefix) in dirs {
            for (name, path, file_type) in list(&dir)? {
                if file_type.is_dir() && name.len() == 2 && is_lower_hex(&name) {
                    next.push((path, format!("{prefix}{name}")));
                }
            }
        }
        dirs = next;
    }
    for (dir, prefix) in dirs {
        for (name, path, file_type) in list(&dir)? {
            let Some((kind, hash)) = classify(&name, &store.suffix) else {
                continue;
            };
            if !file_type.is_file() || !hash.starts_with(&prefix) {
                continue;
            }
            let Ok(stripe) = u8::from_str_radix(&hash[..2], 16) else {
                continue;
            };
            if !visit(stripe, OurFile { path, kind })? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The UTF-8-named entries of `dir` (none if it is gone), without
/// following symlinks.
fn list(dir: &PathBuf) -> io::Result<Vec<(String, PathBuf, fs::FileType)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(at(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(dir, e)),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(&entry.path(), e)),
        };
        out.push((name, entry.path(), file_type));
    }
    Ok(out)
}

/// Whether `name` is one of our file names, and its hash.
fn classify<'a>(name: &'a str, suffix: &str) -> Option<(Kind, &'a str)> {
    if let Some(hash) = name.strip_suffix(suffix).filter(|h| is_hash(h)) {
        return Some((Kind::Entry, hash));
    }
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let hash = rest.get(..64).filter(|h| is_hash(h))?;
    rest[64..].starts_with('.').then_some((Kind::Temp, hash))
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_ours() {
        let hash = "ab".repeat(32);
        assert_eq!(
            classify(&format!("{hash}.bin"), ".bin"),
            Some((Kind::Entry, hash.as_str()))
        );
        assert_eq!(classify(&hash, ""), Some((Kind::Entry, hash.as_str())));
        assert_eq!(
            classify(&format!(".{hash}.42.7.tmp"), ".bin"),
            Some((Kind::Temp, hash.as_str()))
        );
        for foreign in [
            format!("{hash}.bak"),
            format!("{}.bin", "AB".repeat(32)),
            format!("{}.bin", "ab".repeat(31)),
            format!(".{hash}.tmp"),
            "README.md".to_owned(),
            ".cacheme-locks".to_owned(),
        ] {
            assert_eq!(classify(&foreign, ".bin"), None, "{foreign}");
        }
    }
}
