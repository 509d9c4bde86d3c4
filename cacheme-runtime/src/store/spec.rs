//! What the `#[cache_store]` macro knows about a store, as a `'static`
//! value, and the link-time list of every store in the program (used to
//! refuse duplicate names and key patterns when a client is built).

use std::time::Duration;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::store::key::{KeyTemplate, push_param};

/// A store's version: part of every key, so bumping it hides old values.
#[derive(Clone, Copy, Debug)]
pub enum Version {
    /// A constant (`version = 1`, `version = "2024-06"`).
    Static(&'static str),
    /// A function evaluated on every call (`version = path::to::fn`).
    Dynamic(fn() -> String),
}

impl Version {
    /// Appends `:v{version}` (escaped) to `key`.
    #[inline]
    pub fn push_suffix(&self, key: &mut String) {
        key.push_str(":v");
        match self {
            Version::Static(v) => push_param(key, v),
            Version::Dynamic(f) => push_param(key, &f()),
        }
    }

    /// The version's current value.
    pub fn current(&self) -> String {
        match self {
            Version::Static(v) => (*v).to_owned(),
            Version::Dynamic(f) => f(),
        }
    }
}

/// Everything about one store, emitted by the macro as a `static`.
#[derive(Debug)]
pub struct StoreSpec {
    /// The generated type's name (`BookStore`).
    pub name: &'static str,
    /// The key template.
    pub template: KeyTemplate,
    /// How long values live.
    pub ttl: Duration,
    /// The version in every key.
    pub version: Version,
    /// Whether concurrent gets of one key in this process share one fetch.
    pub singleflight: bool,
    /// The store's codec; `None` uses the client's.
    pub codec: Option<Codec>,
    /// How long a cross-process fetch lock lives (the stampede protocol);
    /// `None` uses the default.
    pub lock_ttl: Option<Duration>,
    /// The Rust path of the fetcher (`module::book`).
    pub fetcher: &'static str,
    /// Where the store is declared.
    pub file: &'static str,
    /// The line of the declaration.
    pub line: u32,
}

/// Every store declared in the program, collected at link time.
#[linkme::distributed_slice]
pub static STORES: [&'static StoreSpec];

/// Refuses two stores with the same name or the same key shape, naming
/// both declarations.
pub fn check_unique(stores: &[&'static StoreSpec]) -> Result<()> {
    for (i, a) in stores.iter().enumerate() {
        for b in &stores[i + 1..] {
            let what = if a.name == b.name {
                format!("the same name {:?}", a.name)
            } else if a.template.shape() == b.template.shape() {
                format!(
                    "the same key pattern ({:?} and {:?})",
                    a.template.source, b.template.source
                )
            } else {
                continue;
            };
            let (first, second) = if (a.file, a.line) <= (b.file, b.line) {
                (a, b)
            } else {
                (b, a)
            };
            return Err(Error::DuplicateStore {
                first: format!("{} ({}:{})", first.name, first.file, first.line),
                second: format!("{} ({}:{})", second.name, second.file, second.line),
                clash: what,
            });
        }
    }
    Ok(())
}
