//! Operations on a live cache: the URL opens it as the application would
//! ([`Cache::open`], so every backend works), the store declarations in the
//! sources say how its keys are built, and store keys are read and
//! invalidated through the runtime's store functions (generations on
//! memcached, the fetch lock on invalidation), as the stores themselves do.
//!
//! Secrets never reach the output: the URL is echoed through the runtime's
//! [`redact_url`] (its password and every query parameter not known to be
//! harmless hidden), and any error text from the cache is scrubbed of what
//! that redaction hides before it is shown.

pub mod get;
pub mod invalidate;
pub mod key;
pub mod stats;

use std::time::Duration;

use cacheme_runtime::config::{REDACTED, hidden_in_url, parse_url, redact_url};
use cacheme_runtime::{Cache, Client};

use crate::decl::Declaration;
use crate::error::{Error, Result};
use crate::scan::Sources;

/// An open cache and how to talk about it without its password.
pub struct Connection {
    /// The cache.
    pub cache: Cache,
    /// A client on the cache, for the runtime's store functions. It reads
    /// store generations afresh on every call: a one-shot command has
    /// nothing to cache them for.
    pub client: Client,
    /// The URL as [`redact_url`] shows it.
    pub shown: String,
    secrets: Vec<String>,
}

impl Connection {
    /// Opens the cache at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        // `host:6379` would parse with `host` as the scheme and be reported
        // as an unknown provider; the text itself is not echoed (it may
        // hold a password).
        if !url.contains("://") {
            return Err(Error::Usage(
                "the cache URL has no scheme: write it as the application opens it, e.g. `redis://host:6379`, `redis-cluster://h1:7000,h2:7001`, `memcache://host:11211`, `file:///var/cache/app` or `memory://`".to_owned(),
            ));
        }
        let parsed = parse_url(url).ok();
        // What the runtime's redaction hides (the password, secret-looking
        // query parameters): scrubbed from error texts too, in case a
        // message quotes one.
        let secrets = parsed.as_ref().map(hidden_in_url).unwrap_or_default();
        let shown = parsed.as_ref().map_or_else(|| "the given URL".to_owned(), redact_url);
        // The client's duplicate-store check reads this program's own
        // link-time store registry, which is empty: the CLI declares none.
        // It keeps no local tier, but the running processes may: its
        // invalidations are announced to theirs.
        let opened = Cache::open(url).await.and_then(|cache| {
            let client = Client::builder()
                .cache(cache.clone())
                .generation_refresh(Duration::ZERO)
                .announce_all_writes(true)
                .build()?;
            Ok((cache, client))
        });
        match opened {
            Ok((cache, client)) => Ok(Connection {
                cache,
                client,
                shown,
                secrets,
            }),
            Err(e) => Err(Error::Cache(format!(
                "cannot open the cache at {shown}: {}",
                scrub(&secrets, e.to_string())
            ))),
        }
    }

    /// A cache error with `context`, scrubbed of the URL's secrets.
    pub fn error(&self, context: &str, e: cacheme_runtime::Error) -> Error {
        Error::Cache(format!("{context}: {}", scrub(&self.secrets, e.to_string())))
    }
}

/// `text` with every occurrence of a secret replaced.
fn scrub(secrets: &[String], mut text: String) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), REDACTED);
    }
    text
}

/// The declaration named `name` (its type name, or its fetcher's name).
pub fn find<'a>(sources: &'a Sources, name: &str) -> Result<&'a Declaration> {
    if let Some(store) = sources.stores.iter().find(|s| s.name == name) {
        return Ok(store);
    }
    if let Some(store) = sources.stores.iter().find(|s| s.fetcher == name) {
        return Ok(store);
    }
    let known: Vec<&str> = sources.stores.iter().map(|s| s.name.as_str()).collect();
    let mut message = if known.is_empty() {
        format!(
            "unknown store {name:?}: no store is declared in {}/src",
            sources.root.display()
        )
    } else {
        format!("unknown store {name:?}; declared stores: {}", known.join(", "))
    };
    if !sources.problems.is_empty() {
        message.push_str(&format!(
            " ({} invalid declaration(s) skipped; see `cargo cacheme check`)",
            sources.problems.len()
        ));
    }
    Err(Error::Usage(message))
}

/// Runs an async operation on a one-thread runtime.
pub fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Cache(format!("cannot start the async runtime: {e}")))?
        .block_on(future)
}
