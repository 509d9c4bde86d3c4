//! The key of one store entry, built by the runtime's own pieces
//! ([`push_param`], [`Version::push_suffix`]) exactly as the generated
//! `Store::key` builds it.

use cacheme_runtime::store::key::{Part, push_param};
use cacheme_runtime::store::spec::Version;

use crate::decl::{Declaration, DeclaredVersion};
use crate::error::{Error, Result};

/// The key (without the backend's prefix) of `store` for these values:
/// `positional` in template order, or `named` as `name=value`; `version`
/// overrides the declared one.
pub fn build(store: &Declaration, positional: &[String], named: &[String], version: Option<&str>) -> Result<String> {
    let values = values(store, positional, named)?;
    for ((value, name), ty) in values.iter().zip(&store.variables).zip(&store.types) {
        if !parses_as(value, ty) {
            return Err(Error::Usage(format!(
                "{value:?} is not a `{ty}`, the type of {}'s parameter `{name}`: the application could not build this key",
                store.name
            )));
        }
    }
    Ok(key(store, &values, &self::version(store, version)?))
}

/// Whether `value` is a valid `ty`, for the primitive types whose `Display`
/// the CLI can check (numbers, `bool`, `char`); any text for other types.
fn parses_as(value: &str, ty: &str) -> bool {
    let ty = ty.trim_start_matches('&');
    let ty = ty.rsplit("::").next().unwrap_or(ty);
    match ty {
        "u8" => value.parse::<u8>().is_ok(),
        "u16" => value.parse::<u16>().is_ok(),
        "u32" | "NonZeroU32" => value.parse::<u32>().is_ok_and(|n| ty == "u32" || n != 0),
        "u64" | "NonZeroU64" => value.parse::<u64>().is_ok_and(|n| ty == "u64" || n != 0),
        "u128" => value.parse::<u128>().is_ok(),
        "usize" => value.parse::<usize>().is_ok(),
        "i8" => value.parse::<i8>().is_ok(),
        "i16" => value.parse::<i16>().is_ok(),
        "i32" => value.parse::<i32>().is_ok(),
        "i64" => value.parse::<i64>().is_ok(),
        "i128" => value.parse::<i128>().is_ok(),
        "isize" => value.parse::<isize>().is_ok(),
        "f32" | "f64" => value.parse::<f64>().is_ok(),
        "bool" => value.parse::<bool>().is_ok(),
        "char" => value.chars().count() == 1,
        _ => true,
    }
}

/// `given`, or the store's declared version.
pub fn version(store: &Declaration, given: Option<&str>) -> Result<String> {
    match (given, &store.version) {
        (Some(v), _) => Ok(v.to_owned()),
        (None, DeclaredVersion::Static(v)) => Ok(v.clone()),
        (None, DeclaredVersion::Function(path)) => Err(Error::Usage(format!(
            "{}'s version is computed by `{path}` when the program runs; pass --version",
            store.name
        ))),
    }
}

/// The key of `values` (one per variable, in template order) and `version`.
pub fn key(store: &Declaration, values: &[&str], version: &str) -> String {
    let mut key = String::new();
    let mut values = values.iter();
    for part in store.template.parts {
        match part {
            Part::Lit(text) => key.push_str(text),
            Part::Var(_) => push_param(&mut key, values.next().copied().unwrap_or_default()),
        }
    }
    // The runtime's suffix takes `'static` text (the macro's versions are
    // literals); one small leak per run keeps its code the only copy.
    Version::Static(Box::leak(version.to_owned().into_boxed_str())).push_suffix(&mut key);
    key
}

/// One value per variable, in template order.
fn values<'a>(store: &Declaration, positional: &'a [String], named: &'a [String]) -> Result<Vec<&'a str>> {
    let variables = &store.variables;
    let usage = || {
        let names: Vec<String> = variables.iter().map(|v| format!("<{v}>")).collect();
        format!(
            "{}'s key `{}` takes {} value(s): {}",
            store.name,
            store.key,
            variables.len(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(" ")
            }
        )
    };
    if named.is_empty() {
        if positional.len() != variables.len() {
            return Err(Error::Usage(format!(
                "{}, in that order (or --param NAME=VALUE); got {}",
                usage(),
                positional.len()
            )));
        }
        return Ok(positional.iter().map(String::as_str).collect());
    }
    let mut found: Vec<Option<&str>> = vec![None; variables.len()];
    for pair in named {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(Error::Usage(format!("--param {pair:?}: write NAME=VALUE")));
        };
        let Some(index) = variables.iter().position(|v| v == name) else {
            return Err(Error::Usage(format!("--param {name}: no such variable; {}", usage())));
        };
        if found[index].replace(value).is_some() {
            return Err(Error::Usage(format!("--param {name} is given twice")));
        }
    }
    found
        .iter()
        .zip(variables)
        .map(|(value, name)| value.ok_or_else(|| Error::Usage(format!("--param {name}=... is missing; {}", usage()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Sources, scan_file};

    fn store(declaration: &str) -> Declaration {
        let mut sources = Sources::default();
        scan_file("src/lib.rs", declaration, &mut sources);
        assert_eq!(sources.problems, []);
        sources.stores.remove(0)
    }

    #[test]
    fn keys_are_escaped_and_versioned_like_the_store_builds_them() {
        let book = store(
            r#"#[cache_store(key = "category:<category_id>:book:<book_id>", ttl = "5m", version = 2, prefix = "shop")]
               async fn book(ctx: &App, book_id: u64, category_id: String) -> Result<B, E> { loop {} }"#,
        );
        let values = ["a:b".to_owned(), "42".to_owned()];
        assert_eq!(
            build(&book, &values, &[], None).unwrap(),
            "shop:category:a%3Ab:book:42:v2"
        );
        let named = ["book_id=42".to_owned(), "category_id=a:b".to_owned()];
        assert_eq!(
            build(&book, &[], &named, Some("x y")).unwrap(),
            "shop:category:a%3Ab:book:42:vx%20y"
        );
    }

    #[test]
    fn wrong_values_say_what_the_key_takes() {
        let book = store(
            r#"#[cache_store(key = "b:<a>:<b>", ttl = "5m")] async fn b(c: &C, a: u8, b: u8) -> Result<B, E> { loop {} }"#,
        );
        let err = build(&book, &["1".to_owned()], &[], None).unwrap_err().to_string();
        assert!(
            err.contains("takes 2 value(s): <a> <b>") && err.contains("got 1"),
            "{err}"
        );
        let err = build(&book, &[], &["c=1".to_owned()], None).unwrap_err().to_string();
        assert!(err.contains("--param c: no such variable"), "{err}");
        let err = build(&book, &[], &["a=1".to_owned()], None).unwrap_err().to_string();
        assert!(err.contains("--param b=... is missing"), "{err}");
        let dynamic = store(
            r#"#[cache_store(key = "d", ttl = "5m", version = crate::v)] async fn d(c: &C) -> Result<B, E> { loop {} }"#,
        );
        let err = build(&dynamic, &[], &[], None).unwrap_err().to_string();
        assert!(err.contains("computed by `crate::v`"), "{err}");
        let typed = store(
            r#"#[cache_store(key = "t:<id>:<on>:<name>", ttl = "5m")] async fn t(c: &C, id: i64, on: bool, name: &str) -> Result<B, E> { loop {} }"#,
        );
        let args = |v: [&str; 3]| v.map(str::to_owned);
        let err = build(&typed, &args(["abc", "true", "x"]), &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"abc\" is not a `i64`, the type of TStore's parameter `id`"),
            "{err}"
        );
        let err = build(&typed, &args(["-1", "yes", "x"]), &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a `bool`"), "{err}");
        assert_eq!(
            build(&typed, &args(["-1", "true", "a b"]), &[], None).unwrap(),
            "t:-1:true:a%20b:v1"
        );
    }
}
