//! File caches for the conformance suite: one temp dir per fixture, one
//! sub-directory (`CachePath`) per namespace, removed on drop.

use std::path::{Path, PathBuf};

use cacheme_runtime::{BoxFuture, Cache};
use tempfile::TempDir;

use crate::conformance::Fixture;

/// File caches in a temp dir owned by the fixture. Every call builds a new
/// cache (as a new process would) on the namespace's directory, with a
/// background sweep every second.
pub struct FileFixture {
    dir: TempDir,
}

impl FileFixture {
    /// Creates the temp dir.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cacheme-file-")
            .tempdir()
            .expect("create a temp dir for the file cache");
        FileFixture { dir }
    }

    /// The temp dir holding every namespace's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `CachePath` of `namespace`.
    pub fn cache_path(&self, namespace: &str) -> PathBuf {
        self.dir.path().join(namespace)
    }

    /// Beego-style JSON configuration for `namespace`.
    pub fn config(&self, namespace: &str) -> String {
        serde_json::json!({
            "CachePath": self.cache_path(namespace),
            "FileSuffix": ".cache",
            "DirectoryLevel": 2,
            "EmbedExpiry": 0,
            "interval": 1,
        })
        .to_string()
    }
}

impl Fixture for FileFixture {
    fn cache<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Cache> {
        Box::pin(async move { Cache::new("file", &self.config(namespace)).await.expect("file cache") })
    }
}
