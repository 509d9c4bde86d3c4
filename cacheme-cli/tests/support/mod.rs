//! Shared by the CLI's tests: the built binary and throwaway crates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// `cargo-cacheme cacheme`, as cargo runs it, with no `CACHEME_URL` from
/// the environment.
pub fn cacheme() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-cacheme"));
    cmd.arg("cacheme").env_remove("CACHEME_URL");
    cmd
}

/// A crate in a temp dir: a Cargo.toml and the given files.
pub struct Project {
    dir: TempDir,
}

impl Project {
    /// A crate named `shop` with `files` (`("src/lib.rs", "...")`).
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifest = "[package]\nname = \"shop\"\nversion = \"0.1.0\"\nedition = \"2024\"\n";
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Project { dir }
    }

    /// The crate's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `cargo cacheme` run in the crate's directory.
    pub fn cacheme(&self) -> Command {
        let mut cmd = cacheme();
        cmd.current_dir(self.path());
        cmd
    }
}

/// The workspace root (the `cacheme` crate).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// stdout of a finished command, as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
