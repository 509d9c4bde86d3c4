//! `cargo cacheme stats`: keys per store and version, found by walking
//! the cache's keys once and matching each against the declared
//! templates (the runtime's [`KeyTemplate::matches`](cacheme_runtime::store::key::KeyTemplate::matches)),
//! and the server's memory where the backend reports it.

use std::collections::BTreeMap;

use serde_json::json;

use crate::decl::{Declaration, DeclaredVersion};
use crate::error::Result;
use crate::ops::Connection;
use crate::opt::{Format, StatsOpt};
use crate::output::{self, Table};
use crate::scan;

/// Key counts: per (store index, version), and of no declared store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys per store (by index in the declarations) and version; every
    /// declared store is there, with its declared version and 0 keys when
    /// none of its keys were seen (see [`Counts::new`]).
    pub per_store: BTreeMap<(usize, String), u64>,
    /// Keys that match no declared store.
    pub other: u64,
    /// Every key seen.
    pub total: u64,
}

impl Counts {
    /// No keys counted yet: each store at 0 under its declared version
    /// (`-` for a function version), so stores without keys are shown.
    pub fn new(stores: &[Declaration]) -> Self {
        let per_store = stores
            .iter()
            .enumerate()
            .map(|(index, store)| {
                let version = match &store.version {
                    DeclaredVersion::Static(v) => v.clone(),
                    DeclaredVersion::Function(_) => "-".to_owned(),
                };
                ((index, version), 0)
            })
            .collect();
        Counts {
            per_store,
            ..Counts::default()
        }
    }

    /// Counts `key` (without the backend's prefix) for the first store
    /// whose template and version match it.
    pub fn add(&mut self, stores: &[Declaration], key: &str) {
        self.total += 1;
        let found = version_of(key).and_then(|version| {
            let index = stores.iter().position(|s| s.template.matches(key, &version))?;
            Some((index, version))
        });
        match found {
            Some((index, version)) => {
                // A function version's placeholder gives way to real ones.
                self.per_store.remove(&(index, "-".to_owned()));
                *self.per_store.entry((index, version)).or_default() += 1;
            }
            None => self.other += 1,
        }
    }
}

/// The version a store key ends with (`:v{escaped version}`): escaped
/// values contain no `:`, so it is the text after the last one.
fn version_of(key: &str) -> Option<String> {
    let (_, last) = key.rsplit_once(':')?;
    let escaped = last.strip_prefix('v')?;
    Some(
        percent_encoding::percent_decode_str(escaped)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Prints the counts and the memory used.
pub async fn run(opt: &StatsOpt) -> Result<i32> {
    let sources = scan::crate_sources(opt.source.manifest_path.as_deref())?;
    let stores = &sources.stores;
    let connection = Connection::open(opt.backend.url()?).await?;
    let backend = connection.cache.backend();
    let mut counts = Counts::new(stores);
    backend
        .scan_keys("*", &mut |key| counts.add(stores, key))
        .await
        .map_err(|e| connection.error("cannot walk the cache's keys", e))?;
    let memory = match backend.memory_used().await {
        Ok(bytes) => Some(bytes),
        Err(cacheme_runtime::Error::Unsupported { .. }) => None,
        Err(e) => return Err(connection.error("cannot read the memory used", e)),
    };
    match opt.format {
        Format::Table => {
            println!("cache: {} ({})", connection.shown, backend.provider());
            let mut table = Table::new(&["STORE", "VERSION", "KEYS", "KEY"]);
            for ((index, version), n) in &counts.per_store {
                let store = &stores[*index];
                table.row(vec![
                    store.name.clone(),
                    version.clone(),
                    n.to_string(),
                    store.key.clone(),
                ]);
            }
            table.row(vec![
                "(no declared store)".into(),
                "-".into(),
                counts.other.to_string(),
                "-".into(),
            ]);
            print!("{}", table.render());
            println!("total keys: {}", counts.total);
            match memory {
                Some(bytes) => println!("server memory used: {} ({bytes} bytes)", output::bytes(bytes)),
                None => println!("server memory used: not reported by the {} backend", backend.provider()),
            }
        }
        Format::Json => {
            let per_store: Vec<_> = counts
                .per_store
                .iter()
                .map(|((index, version), n)| json!({"store": stores[*index].name, "version": version, "keys": n}))
                .collect();
            let report = json!({
                "cache": connection.shown,
                "provider": backend.provider(),
                "stores": per_store,
                "other_keys": counts.other,
                "total_keys": counts.total,
                "memory_used_bytes": memory,
            });
            println!("{report:#}");
        }
    }
    for problem in &sources.problems {
        eprintln!("warning: {problem} (its keys count as no declared store)");
    }
    if backend.provider() == "memory" {
        eprintln!(
            "note: memory:// is an in-process cache of this command, empty on every run, not your application's: pass the URL your application opens (--url or {})",
            crate::opt::URL_VAR
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Sources, scan_file};

    #[test]
    fn keys_count_for_their_store_and_version() {
        let mut sources = Sources::default();
        scan_file(
            "src/lib.rs",
            r#"
#[cache_store(key = "book:<id>", ttl = "5m")] async fn book(c: &C, id: u64) -> Result<B, E> { loop {} }
#[cache_store(key = "book:<id>:reviews", ttl = "5m", version = "x y")] async fn reviews(c: &C, id: u64) -> Result<B, E> { loop {} }
#[cache_store(key = "author:<id>", ttl = "5m", version = 3)] async fn author(c: &C, id: u64) -> Result<B, E> { loop {} }
"#,
            &mut sources,
        );
        let mut counts = Counts::new(&sources.stores);
        for key in [
            "book:1:v1",
            "book:a%3Ab:v1",
            "book:1:v2",
            "book:1:reviews:vx%20y",
            "book:1:reviews:v1",
            "other",
        ] {
            counts.add(&sources.stores, key);
        }
        let expected: BTreeMap<_, _> = [
            ((0, "1".to_owned()), 2),
            ((0, "2".to_owned()), 1),
            ((1, "1".to_owned()), 1),
            ((1, "x y".to_owned()), 1),
            ((2, "3".to_owned()), 0),
        ]
        .into();
        assert_eq!(
            counts.per_store, expected,
            "old versions are counted apart; a store without keys is shown at 0"
        );
        assert_eq!((counts.other, counts.total), (1, 6));
    }
}
