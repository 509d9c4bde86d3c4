//! The one error type of the CLI, and its exit codes.

use std::path::PathBuf;

/// `Result` with the CLI's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that stops a command. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No Cargo.toml in the directory or above it.
    #[error(
        "could not find Cargo.toml in {} or any parent directory; run this inside a Cargo project or pass --manifest-path",
        dir.display()
    )]
    NoManifest {
        /// Where the search started.
        dir: PathBuf,
    },

    /// The manifest is not a package (a virtual workspace manifest) or
    /// not valid TOML.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The Cargo.toml.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was being read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// What was being written.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// `init` would overwrite a file.
    #[error("{} already exists; pass --force to overwrite it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },

    /// The arguments do not make sense together or name something that is
    /// not there (an unknown store, the wrong number of key values).
    #[error("{0}")]
    Usage(String),

    /// The cache could not be opened or an operation on it failed. The
    /// message never contains a password.
    #[error("{0}")]
    Cache(String),
}

impl Error {
    /// The process exit code: 2 for usage errors (as clap's own), 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}
