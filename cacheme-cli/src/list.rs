//! `cargo cacheme list`: every store declared in the sources, as a table
//! or JSON.

use std::time::Duration;

use cacheme_runtime::store::spec::TtlJitter;
use serde_json::{Value, json};

use crate::check;
use crate::decl::{Declaration, DeclaredVersion};
use crate::error::Result;
use crate::opt::{Format, ListOpt};
use crate::output::{self, Table};
use crate::scan;

/// Prints the stores; invalid declarations and stores that clash go to
/// stderr and make the exit code 1.
pub fn run(opt: &ListOpt) -> Result<i32> {
    let sources = scan::crate_sources(opt.source.manifest_path.as_deref())?;
    match opt.format {
        Format::Table => print!("{}", table(&sources.stores)),
        Format::Json => println!("{:#}", json(&sources.stores)),
    }
    for problem in &sources.problems {
        eprintln!("{problem}");
    }
    // Stores the client would refuse together: listed, but as `check`
    // does, they make the exit code 1.
    let duplicates = check::duplicates(&sources.stores);
    for problem in &duplicates {
        eprintln!("{problem}");
    }
    if !sources.problems.is_empty() {
        eprintln!(
            "{} invalid declaration(s) not listed; `cargo cacheme check` explains them",
            sources.problems.len()
        );
    }
    if !duplicates.is_empty() {
        eprintln!(
            "{} pair(s) of stores the client refuses together (the same name or key); `cargo cacheme check` reports them too",
            duplicates.len()
        );
    }
    Ok(i32::from(!sources.problems.is_empty() || !duplicates.is_empty()))
}

/// The stores as an aligned table.
pub fn table(stores: &[Declaration]) -> String {
    let mut table = Table::new(&["STORE", "KEY", "TTL", "VERSION", "OPTIONS", "LOCATION"]);
    for store in stores {
        table.row(vec![
            store.name.clone(),
            store.key.clone(),
            output::duration(store.ttl),
            store.version_text(),
            options(store),
            store.location(),
        ]);
    }
    table.render()
}

/// `singleflight, local(capacity=10000, ttl=30s)` (or `local=false`),
/// `codec=json, ttl_jitter=10%, lock_ttl=10s, fetch_many=books`,
/// `no batching` (`batch = false` or a borrowed parameter), or `-`.
fn options(store: &Declaration) -> String {
    let mut options = Vec::new();
    if store.singleflight {
        options.push("singleflight".to_owned());
    }
    if let Some((capacity, ttl)) = local(store) {
        let max_bytes = store
            .local
            .and_then(|tier| tier.max_bytes)
            .map_or_else(String::new, |bytes| format!(", max_bytes={bytes}"));
        options.push(format!(
            "local(capacity={capacity}, ttl={}{max_bytes})",
            output::duration(ttl)
        ));
    }
    if store.local_off {
        options.push("local=false".to_owned());
    }
    if let Some(codec) = store.codec {
        options.push(format!("codec={}", codec.name()));
    }
    if let Some(jitter) = store.ttl_jitter {
        options.push(format!("ttl_jitter={}", jitter_text(jitter)));
    }
    if let Some(lock_ttl) = store.lock_ttl {
        options.push(format!("lock_ttl={}", output::duration(lock_ttl)));
    }
    if let Some(fetch_many) = &store.fetch_many {
        options.push(format!("fetch_many={fetch_many}"));
    }
    if !store.batch {
        options.push("no batching".to_owned());
    }
    if options.is_empty() {
        "-".to_owned()
    } else {
        options.join(", ")
    }
}

/// `10%` or `30s`, as the option is written.
fn jitter_text(jitter: TtlJitter) -> String {
    match jitter {
        TtlJitter::Percent(percent) => format!("{percent}%"),
        TtlJitter::Span(span) => output::duration(span),
    }
}

/// The stores as a JSON array.
pub fn json(stores: &[Declaration]) -> Value {
    Value::Array(
        stores
            .iter()
            .map(|store| {
                let (version, version_fn) = match &store.version {
                    DeclaredVersion::Static(v) => (Value::from(v.as_str()), Value::Null),
                    DeclaredVersion::Function(path) => (Value::Null, Value::from(path.as_str())),
                };
                json!({
                    "name": store.name,
                    "fetcher": store.fetcher,
                    "key": store.key,
                    "variables": store.variables,
                    "ttl": output::duration(store.ttl),
                    "ttl_ms": duration_ms(store.ttl),
                    "version": version,
                    "version_fn": version_fn,
                    "singleflight": store.singleflight,
                    "local": local_json(store),
                    "codec": store.codec.map(|c| c.name()),
                    "ttl_jitter": store.ttl_jitter.map(jitter_text),
                    "lock_ttl_ms": store.lock_ttl.map(duration_ms),
                    "fetch_many": store.fetch_many,
                    "batch": store.batch,
                    "file": store.file,
                    "line": store.line,
                })
            })
            .collect(),
    )
}

/// The local tier's capacity and how long it serves a value (its own
/// `ttl`, else the store's), when the store has one.
fn local(store: &Declaration) -> Option<(u64, Duration)> {
    store.local.map(|tier| (tier.capacity, tier.ttl.unwrap_or(store.ttl)))
}

/// `{"capacity": 10000, "ttl": "30s", "ttl_ms": 30000}`; `false` for
/// `local = false` (never a tier); `null` when the client's default
/// applies.
fn local_json(store: &Declaration) -> Value {
    if store.local_off {
        return Value::Bool(false);
    }
    local(store).map_or(
        Value::Null,
        |(capacity, ttl)| {
            let max_bytes = store.local.and_then(|tier| tier.max_bytes);
            json!({ "capacity": capacity, "ttl": output::duration(ttl), "ttl_ms": duration_ms(ttl), "max_bytes": max_bytes })
        },
    )
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
