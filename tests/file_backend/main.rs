//! File-backend behaviour beyond the conformance suite: configuration
//! forms, the on-disk layout (hashed names, keys that look like paths),
//! expiry (lazy removal and the background sweep), clear scoping, and one
//! directory shared by several processes and threads.

mod config;
mod expiry;
mod layout;
mod processes;

use std::path::{Path, PathBuf};

use cacheme::{Cache, FileBackend, ProviderConfig};
use tempfile::TempDir;

/// A fresh temp dir for one test.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("cacheme-file-test-").tempdir().unwrap()
}

/// A backend on `path` built from Beego JSON: `CachePath` plus `extra`
/// fields; and a cache on it.
pub async fn open(path: &Path, extra: serde_json::Value) -> (FileBackend, Cache) {
    let mut config = serde_json::json!({ "CachePath": path });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let config = ProviderConfig::from_json("file", &config.to_string()).unwrap();
    let backend = FileBackend::from_config(config).await.unwrap();
    (backend.clone(), Cache::from_backend(backend))
}

/// Every regular file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let file_type = entry.file_type().unwrap();
            if file_type.is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// The entry files under `dir` (the lock files left out).
pub fn entry_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| !path.components().any(|c| c.as_os_str() == ".cacheme-locks"))
        .collect()
}
