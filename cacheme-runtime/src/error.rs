//! The one error type of cacheme: which backend, which operation, and why.
//!
//! A missing key is never an error (`get` returns `Ok(None)`), and a server
//! error is never reported as a missing key. Nothing in this module ever
//! formats a password: configuration and connection errors carry addresses
//! that were redacted before the error was built.

use std::fmt;

/// Any error a source of this crate can give back as the `source` of an
/// [`Error`]: a server's reply, an I/O error, a codec failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An operation of the backend layer, named in errors so a log line says
/// what was being done when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Building a backend from its configuration and reaching its server.
    Connect,
    /// Reading one key.
    Get,
    /// Reading many keys at once.
    GetMany,
    /// Writing one key.
    Set,
    /// Writing one key only if it is absent.
    SetIfAbsent,
    /// Removing one key.
    Delete,
    /// Removing one key only if it holds an expected value.
    DeleteIfEquals,
    /// Asking whether a key exists.
    Exists,
    /// Adding to (or subtracting from) a counter.
    Incr,
    /// Removing every key of this cache.
    Clear,
    /// Removing every key that matches a store's pattern.
    DeleteMatching,
    /// Taking or renewing a stampede lock.
    Lock,
    /// Storing a fetched value under a stampede lock and releasing it.
    Fill,
    /// Releasing a stampede lock after a failed fetch.
    Unlock,
    /// Subscribing to a key's stampede notifications.
    Watch,
    /// Telling other processes' local tiers that keys changed.
    Announce,
    /// Turning a value into bytes.
    Encode,
    /// Turning bytes back into a value.
    Decode,
    /// Asking how long a key has left to live.
    Ttl,
    /// Walking the keys that match a pattern.
    ScanKeys,
    /// Asking the server how much memory it uses.
    MemoryUsed,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Connect => "connect",
            Op::Get => "get",
            Op::GetMany => "get_many",
            Op::Set => "set",
            Op::SetIfAbsent => "set_if_absent",
            Op::Delete => "delete",
            Op::DeleteIfEquals => "delete_if_equals",
            Op::Exists => "exists",
            Op::Incr => "incr",
            Op::Clear => "clear",
            Op::DeleteMatching => "delete_matching",
            Op::Lock => "lock",
            Op::Fill => "fill",
            Op::Unlock => "unlock",
            Op::Watch => "watch",
            Op::Announce => "announce",
            Op::Encode => "encode",
            Op::Decode => "decode",
            Op::Ttl => "ttl",
            Op::ScanKeys => "scan_keys",
            Op::MemoryUsed => "memory_used",
        })
    }
}

/// Everything that can go wrong in cacheme.
///
/// Every variant names the backend (`provider`) and, where there is one, the
/// operation and the key, so that an error read in a log is enough to find
/// the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No provider is registered under this name (or URL scheme).
    #[error("unknown cache provider {name:?}; registered providers: {}", known.join(", "))]
    UnknownProvider {
        /// The name that was asked for.
        name: String,
        /// The names that are registered, sorted.
        known: Vec<String>,
    },

    /// A provider of this name is already registered.
    #[error("a cache provider named {name:?} is already registered")]
    DuplicateProvider {
        /// The name that was registered twice.
        name: String,
    },

    /// The configuration given to a provider is invalid. `field` names the
    /// offending configuration key (or URL part) when there is one.
    #[error("invalid {provider} cache config{}: {reason}", field.as_ref().map(|f| format!(" (field {f:?})")).unwrap_or_default())]
    Config {
        /// The provider whose configuration was rejected.
        provider: String,
        /// The field that was wrong, if the problem is one field.
        field: Option<String>,
        /// What was wrong, in words.
        reason: String,
    },

    /// The backend's server could not be reached or refused the handshake.
    /// `address` never contains a password.
    #[error("{provider} cache: cannot connect to {address}: {source}")]
    Connect {
        /// The provider that tried to connect.
        provider: &'static str,
        /// Where it tried to connect, with any password removed.
        address: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },

    /// The backend failed to carry out an operation (server error, lost
    /// connection, I/O error). This is never used for a missing key.
    #[error("{provider} cache: {op} failed{}: {source}", key_suffix(key))]
    Backend {
        /// The provider that failed.
        provider: &'static str,
        /// What it was doing.
        op: Op,
        /// The key it was working on, when there is one.
        key: Option<String>,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// A value is larger than the backend accepts (Redis's bulk limit,
    /// memcached's item size, or the configured `maxValueSize`). It was
    /// refused before anything was sent, so the connection stays usable.
    #[error(
        "{provider} cache: {op}{}: the value ({size} bytes) is too large: the limit is {limit} bytes \
         (set maxValueSize to what the server accepts)",
        key_suffix(key)
    )]
    TooLarge {
        /// The provider that refused it.
        provider: &'static str,
        /// What was being done.
        op: Op,
        /// The key, when there is one.
        key: Option<String>,
        /// Bytes in the refused value.
        size: usize,
        /// The largest value accepted, in bytes.
        limit: u64,
    },

    /// `incr`/`decr` found a value that is not a decimal 64-bit integer.
    #[error("{provider} cache: incr/decr of key {key:?}: the stored value is not a decimal 64-bit integer")]
    NotAnInteger {
        /// The provider holding the value.
        provider: &'static str,
        /// The key holding the value.
        key: String,
    },

    /// `incr`/`decr` would take a counter outside the range of `i64`. The
    /// stored value is left unchanged: counters never wrap.
    #[error("{provider} cache: incr/decr of key {key:?} by {delta} would overflow a 64-bit integer")]
    Overflow {
        /// The provider holding the counter.
        provider: &'static str,
        /// The counter's key.
        key: String,
        /// The amount that was to be added.
        delta: i128,
    },

    /// A value could not be encoded, or stored bytes could not be decoded
    /// into the requested type.
    #[error("{op} of {type_name} with the {codec} codec failed{}: {source}", key_suffix(key))]
    Codec {
        /// [`Op::Encode`] or [`Op::Decode`].
        op: Op,
        /// The codec's name.
        codec: &'static str,
        /// The Rust type being encoded or decoded.
        type_name: &'static str,
        /// The key, when known.
        key: Option<String>,
        /// The codec's own error.
        #[source]
        source: BoxError,
    },

    /// An argument was outside what the operation accepts (for example a
    /// zero TTL).
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument {
        /// The operation that rejected it.
        op: Op,
        /// What was wrong.
        reason: String,
    },

    /// Two `#[cache_store]` declarations would share keys: the same store
    /// name, the same key pattern, or key templates that can produce the
    /// same key (`clash` then names a key both would write). Reported when
    /// a client is built.
    #[error("stores {first} and {second} have {clash}: they would read and overwrite each other's values")]
    DuplicateStore {
        /// The first declaration: `Name (file:line)`.
        first: String,
        /// The second declaration.
        second: String,
        /// What they share.
        clash: String,
    },

    /// A pipeline (or batch) failed as a whole. No longer returned by
    /// [`Pipeline::execute`](crate::Pipeline::execute), which serves every
    /// promise from the source when the cache cannot be read (as a store's
    /// `get` does); kept so code matching on it still compiles.
    #[error("pipeline failed: {0}")]
    Pipeline(#[source] std::sync::Arc<Error>),

    /// A cache step of a typed store's call did not finish within the
    /// client's [`cache_timeout`](crate::ClientBuilder::cache_timeout): the
    /// call was served from the source. Reported through the logger, never
    /// returned by a store's `get`.
    #[error("cache {op} did not answer within the {budget:?} budget")]
    Timeout {
        /// The step that ran out of time.
        op: Op,
        /// The budget it had.
        budget: std::time::Duration,
    },

    /// The backend does not offer this operation (for example a custom
    /// provider without `set_if_absent`).
    #[error("{provider} cache does not support {op}")]
    Unsupported {
        /// The provider.
        provider: &'static str,
        /// The operation it lacks.
        op: Op,
    },
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" for key {k:?}")).unwrap_or_default()
}

impl Error {
    /// A [`Error::Config`] naming `field`.
    pub fn config(provider: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            provider: provider.into(),
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    /// A [`Error::Backend`] for `op` on `key`.
    pub fn backend(provider: &'static str, op: Op, key: Option<&str>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            provider,
            op,
            key: key.map(str::to_owned),
            source: source.into(),
        }
    }
}
