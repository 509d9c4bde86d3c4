//! Adds the dependencies of the generated module to a Cargo.toml with
//! `toml_edit`, so its comments, order and formatting stay as they were.

use toml_edit::{Array, DocumentMut, InlineTable, Item, TableLike, Value};

/// Where the `cacheme` dependency comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachemeSource {
    /// A version requirement from crates.io.
    Version(String),
    /// A path dependency (a checkout of cacheme).
    Path(String),
}

/// What happened to one dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It was added, as shown.
    Added(String),
    /// It was there; features were added.
    Extended(String),
    /// It was there with what the module needs.
    Kept(String),
    /// It was there; its source was replaced (`--force`), as shown.
    Replaced(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(what) => write!(f, "added {what}"),
            Change::Extended(what) => write!(f, "extended {what}"),
            Change::Kept(what) => write!(f, "kept {what} (already there)"),
            Change::Replaced(what) => write!(f, "replaced: {what}"),
        }
    }
}

/// `text` with `cacheme`, `serde` (feature `derive`) and `tokio` (features
/// `macros`, `rt-multi-thread`) in `[dependencies]`, and what changed. An
/// existing `cacheme` is kept, or with `replace` (`--force`) given the new
/// source (its other keys, such as `features`, stay). An error says why
/// the manifest cannot be edited.
pub fn add_dependencies(text: &str, cacheme: &CachemeSource, replace: bool) -> Result<(String, Vec<Change>), String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    if !doc.contains_key("package") {
        return Err("has no [package]: run `cargo cacheme init` in a package, not a virtual workspace".to_owned());
    }
    let deps = doc
        .entry("dependencies")
        .or_insert_with(toml_edit::table)
        .as_table_like_mut()
        .ok_or("[dependencies] is not a table")?;
    let mut changes = Vec::new();

    let (item, shown) = match cacheme {
        CachemeSource::Version(req) => (toml_edit::value(req.as_str()), format!("cacheme = {req:?}")),
        CachemeSource::Path(path) => {
            let mut table = InlineTable::new();
            table.insert("path", path.as_str().into());
            (toml_edit::value(table), format!("cacheme = {{ path = {path:?} }}"))
        }
    };
    match deps.get_mut("cacheme") {
        None => {
            deps.insert("cacheme", item);
            changes.push(Change::Added(shown));
        }
        Some(existing) if replace => {
            let before = existing.to_string();
            set_source(existing, item)?;
            changes.push(if existing.to_string() == before {
                Change::Kept("cacheme".to_owned())
            } else {
                Change::Replaced(shown)
            });
        }
        Some(_) => changes.push(Change::Kept("cacheme".to_owned())),
    }
    changes.push(with_features(deps, "serde", "1", &["derive"])?);
    changes.push(with_features(deps, "tokio", "1", &["macros", "rt-multi-thread"])?);
    Ok((doc.to_string(), changes))
}

/// Points an existing dependency at `source` (a version string or a
/// `{ path }` table), keeping its other keys (`features`, ...).
fn set_source(existing: &mut Item, source: Item) -> Result<(), String> {
    let Some(table) = existing.as_table_like_mut() else {
        *existing = source;
        return Ok(());
    };
    for key in ["version", "path", "git", "branch", "tag", "rev", "registry"] {
        table.remove(key);
    }
    match source.as_value() {
        Some(Value::String(req)) => table.insert("version", Item::Value(req.value().as_str().into())),
        Some(Value::InlineTable(path)) => path
            .get("path")
            .and_then(|path| table.insert("path", Item::Value(path.clone()))),
        _ => return Err("unexpected source for `cacheme`".to_owned()),
    };
    // The removed key's spacing would be left behind (`false , path`).
    table.fmt();
    Ok(())
}

/// Adds `name = { version, features }`, or the missing `features` to the
/// entry that is there (a plain version becomes an inline table).
fn with_features(deps: &mut dyn TableLike, name: &str, version: &str, features: &[&str]) -> Result<Change, String> {
    let wanted = || Array::from_iter(features.iter().copied());
    let shown = format!("{name} (features {})", features.join(", "));
    let Some(item) = deps.get_mut(name) else {
        let mut table = InlineTable::new();
        table.insert("version", version.into());
        table.insert("features", Value::Array(wanted()));
        deps.insert(name, toml_edit::value(table));
        return Ok(Change::Added(shown));
    };
    if let Some(Value::String(existing)) = item.as_value() {
        let mut table = InlineTable::new();
        table.insert("version", existing.value().as_str().into());
        table.insert("features", Value::Array(wanted()));
        *item = toml_edit::value(table);
        return Ok(Change::Extended(shown));
    }
    let table = item
        .as_table_like_mut()
        .ok_or_else(|| format!("dependency `{name}` is neither a version nor a table"))?;
    let Some(list) = table.get_mut("features") else {
        table.insert("features", Item::Value(Value::Array(wanted())));
        return Ok(Change::Extended(shown));
    };
    let list = list
        .as_array_mut()
        .ok_or_else(|| format!("`features` of dependency `{name}` is not a list"))?;
    let mut extended = false;
    for feature in features {
        if !list.iter().any(|f| f.as_str() == Some(feature)) {
            list.push(*feature);
            extended = true;
        }
    }
    Ok(if extended {
        Change::Extended(shown)
    } else {
        Change::Kept(name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_is_missing_and_keeps_comments_and_layout() {
        let before = r#"# The app.
[package]
name = "app"   # keep this comment
version = "0.1.0"
edition = "2024"

[dependencies]
# serialization
serde = "1.0.200"
tokio = { version = "1.40", features = ["rt"] } # runtime

[dev-dependencies]
"#;
        let (after, changes) = add_dependencies(before, &CachemeSource::Version("0.1".into()), false).unwrap();
        assert_eq!(
            after,
            r#"# The app.
[package]
name = "app"   # keep this comment
version = "0.1.0"
edition = "2024"

[dependencies]
# serialization
serde = { version = "1.0.200", features = ["derive"] }
tokio = { version = "1.40", features = ["rt", "macros", "rt-multi-thread"] } # runtime
cacheme = "0.1"

[dev-dependencies]
"#
        );
        assert_eq!(
            changes,
            [
                Change::Added("cacheme = \"0.1\"".into()),
                Change::Extended("serde (features derive)".into()),
                Change::Extended("tokio (features macros, rt-multi-thread)".into()),
            ]
        );
    }

    #[test]
    fn creates_the_section_and_uses_a_path_when_asked() {
        let before = "[package]\nname = \"app\"\n";
        let source = CachemeSource::Path("/src/cacheme".into());
        let (after, _) = add_dependencies(before, &source, false).unwrap();
        assert!(after.contains("cacheme = { path = \"/src/cacheme\" }"), "{after}");
        assert!(
            after.contains("serde = { version = \"1\", features = [\"derive\"] }"),
            "{after}"
        );
        let (again, changes) = add_dependencies(&after, &source, true).unwrap();
        assert_eq!(again, after, "a second run changes nothing");
        assert!(changes.iter().all(|c| matches!(c, Change::Kept(_))), "{changes:?}");
    }

    #[test]
    fn force_replaces_the_source_of_an_existing_cacheme_and_keeps_its_features() {
        let before = "[package]\nname = \"app\"\n\n[dependencies]\ncacheme = \"0.1\"\n";
        let checkout = CachemeSource::Path("../cacheme".into());
        let (kept, changes) = add_dependencies(before, &checkout, false).unwrap();
        assert!(kept.contains("cacheme = \"0.1\""), "{kept}");
        assert_eq!(changes[0], Change::Kept("cacheme".into()));

        let (after, changes) = add_dependencies(before, &checkout, true).unwrap();
        assert!(after.contains("cacheme = { path = \"../cacheme\" }"), "{after}");
        assert_eq!(
            changes[0],
            Change::Replaced("cacheme = { path = \"../cacheme\" }".into())
        );

        let table = "[package]\nname = \"app\"\n\n[dependencies]\n\
                     cacheme = { version = \"0.1\", default-features = false, features = [\"redis\"] }\n";
        let (after, _) = add_dependencies(table, &checkout, true).unwrap();
        assert!(
            after.contains("cacheme = { default-features = false, features = [\"redis\"], path = \"../cacheme\" }"),
            "{after}"
        );
        let (back, _) = add_dependencies(&after, &CachemeSource::Version("0.1".into()), true).unwrap();
        assert!(
            back.contains("cacheme = { default-features = false, features = [\"redis\"], version = \"0.1\" }"),
            "{back}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_edit() {
        let source = CachemeSource::Version("0.1".into());
        assert!(
            add_dependencies("[workspace]\n", &source, false)
                .unwrap_err()
                .contains("virtual workspace")
        );
        assert!(
            add_dependencies("[package\n", &source, false)
                .unwrap_err()
                .contains("not valid TOML")
        );
    }
}
