//! Parsing: the attribute's options and the fetcher function, as written.
//! Nothing is checked here beyond syntax and each option's value kind;
//! see `valid`.
//!
//! Every option is one row of [`OPTIONS`] (its name and how its value is
//! read into [`Args`]): adding an option is a field of `Args` and a row.
//! A bad option is reported and parsing goes on, so one mistake is one
//! error: a misspelt option gets a suggestion, and the option it was meant
//! to be is not then reported missing.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, ItemFn, Lit, LitInt, LitStr, Path};

/// The options of `#[cache_store(...)]`, each with its span.
#[derive(Default)]
pub struct Args {
    /// `key = "book:<id>"`: the key template.
    pub key: Option<LitStr>,
    /// `ttl = "5m"`.
    pub ttl: Option<LitStr>,
    /// `ttl_jitter = "10%"` or `ttl_jitter = "30s"`.
    pub ttl_jitter: Option<LitStr>,
    /// `version = ...`.
    pub version: Option<VersionArg>,
    /// `singleflight` or `singleflight = bool`, with the option's span.
    pub singleflight: Option<(bool, Span)>,
    /// `codec = "json"`.
    pub codec: Option<LitStr>,
    /// `name = "Books"`: the generated type's name.
    pub name: Option<LitStr>,
    /// `lock_ttl = "10s"`.
    pub lock_ttl: Option<LitStr>,
    /// `prefix = "shop"`: a namespace inside the client's.
    pub prefix: Option<LitStr>,
    /// `fetch_many = path::to::fn`: the batch fetcher.
    pub fetch_many: Option<Path>,
    /// `batch = false`: no `get_m` / `get_p`, and none of their bounds.
    pub batch: Option<(bool, Span)>,
    /// `crate = "path::to::cacheme"`: where generated code finds the
    /// facade (default `::cacheme`), as serde's `crate` option.
    pub krate: Option<Path>,
    /// `local` or `local(capacity = 10_000, ttl = "30s")`: a local tier;
    /// `local = false`: never one, not even the client's default.
    pub local: Option<LocalArg>,
    /// `stale_for = "1h"`: the fail-safe keeps values this long past their TTL.
    pub stale_for: Option<LitStr>,
    /// `fail_safe_throttle = "5s"`.
    pub fail_safe_throttle: Option<LitStr>,
    /// `soft_timeout = "100ms"`.
    pub soft_timeout: Option<LitStr>,
    /// `hard_timeout = "2s"`.
    pub hard_timeout: Option<LitStr>,
    /// `refresh_after = "4m"`.
    pub refresh_after: Option<LitStr>,
    /// `none_ttl = "30s"`: how long a fetched `None` is cached.
    pub none_ttl: Option<LitStr>,
    /// `ttl_from = path::to::fn`: each value's TTL, from the value.
    pub ttl_from: Option<Path>,
    /// Options that were written but refused, or misspelt: already
    /// reported, so their absence is not reported again.
    pub attempted: Vec<&'static str>,
}

/// `version = 1`, `version = "2024-06"` or `version = path::to::fn`.
pub enum VersionArg {
    /// `version = 1`.
    Int(LitInt),
    /// `version = "2024-06"`.
    Str(LitStr),
    /// `version = path::to::fn`.
    Path(Path),
}

/// The `local` option as written, with its span.
pub struct LocalArg {
    /// The option's span.
    pub span: Span,
    /// `local = false`: the store opts out of every local tier (then
    /// `capacity` and `ttl` are `None`).
    pub off: bool,
    /// `capacity = N`.
    pub capacity: Option<LitInt>,
    /// `ttl = "30s"`.
    pub ttl: Option<LitStr>,
    /// `max_bytes = N`.
    pub max_bytes: Option<LitInt>,
}

/// One option as written: its name and its value, if it has one.
pub struct Value {
    /// The option's name.
    pub name: Ident,
    /// What follows `=`, if anything.
    pub expr: Option<Expr>,
    /// What is between the parentheses of `option(...)`, if anything.
    pub list: Option<TokenStream>,
}

/// One row of [`OPTIONS`]: an option's name and how its value is stored.
pub struct Opt {
    /// The option's name, as written.
    pub name: &'static str,
    /// Reads the value into `Args`, or says what is wrong with it.
    pub set: fn(&mut Args, Value) -> syn::Result<()>,
}

/// Every option of `#[cache_store]`, in the order the docs list them.
pub const OPTIONS: &[Opt] = &[
    Opt {
        name: "key",
        set: |a, v| put(&mut a.key, v.string("\"book:<id>\"")?, &v.name),
    },
    Opt {
        name: "ttl",
        set: |a, v| put(&mut a.ttl, v.duration("\"5m\"")?, &v.name),
    },
    Opt {
        name: "ttl_jitter",
        set: |a, v| put(&mut a.ttl_jitter, v.string("\"10%\"")?, &v.name),
    },
    Opt {
        name: "version",
        set: |a, v| put(&mut a.version, v.version()?, &v.name),
    },
    Opt {
        name: "singleflight",
        set: |a, v| put(&mut a.singleflight, (v.flag()?, v.name.span()), &v.name),
    },
    Opt {
        name: "local",
        set: |a, v| put(&mut a.local, v.local()?, &v.name),
    },
    Opt {
        name: "stale_for",
        set: |a, v| put(&mut a.stale_for, v.duration("\"1h\"")?, &v.name),
    },
    Opt {
        name: "fail_safe_throttle",
        set: |a, v| put(&mut a.fail_safe_throttle, v.duration("\"5s\"")?, &v.name),
    },
    Opt {
        name: "soft_timeout",
        set: |a, v| put(&mut a.soft_timeout, v.duration("\"100ms\"")?, &v.name),
    },
    Opt {
        name: "hard_timeout",
        set: |a, v| put(&mut a.hard_timeout, v.duration("\"2s\"")?, &v.name),
    },
    Opt {
        name: "refresh_after",
        set: |a, v| put(&mut a.refresh_after, v.duration("\"4m\"")?, &v.name),
    },
    Opt {
        name: "none_ttl",
        set: |a, v| put(&mut a.none_ttl, v.duration("\"30s\"")?, &v.name),
    },
    Opt {
        name: "ttl_from",
        set: |a, v| {
            put(
                &mut a.ttl_from,
                v.path(
                    "a function of the value: `ttl_from = token_ttl` with `fn token_ttl(value: &Token) -> Duration`",
                )?,
                &v.name,
            )
        },
    },
    Opt {
        name: "codec",
        set: |a, v| put(&mut a.codec, v.string("\"json\"")?, &v.name),
    },
    Opt {
        name: "name",
        set: |a, v| put(&mut a.name, v.string("\"Books\"")?, &v.name),
    },
    Opt {
        name: "prefix",
        set: |a, v| put(&mut a.prefix, v.string("\"shop\"")?, &v.name),
    },
    Opt {
        name: "lock_ttl",
        set: |a, v| put(&mut a.lock_ttl, v.duration("\"10s\"")?, &v.name),
    },
    Opt {
        name: "fetch_many",
        set: |a, v| {
            put(
                &mut a.fetch_many,
                v.path("the batch fetcher: `fetch_many = books`")?,
                &v.name,
            )
        },
    },
    Opt {
        name: "batch",
        set: |a, v| put(&mut a.batch, (v.flag()?, v.name.span()), &v.name),
    },
    Opt {
        name: "crate",
        set: |a, v| put(&mut a.krate, v.string_path()?, &v.name),
    },
];

fn put<T>(slot: &mut Option<T>, value: T, name: &Ident) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(name.span(), format!("`{name}` is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

impl Value {
    fn span(&self) -> Span {
        self.expr.as_ref().map_or_else(|| self.name.span(), Spanned::span)
    }

    fn lit(&self) -> Option<&Lit> {
        match &self.expr {
            Some(Expr::Lit(ExprLit { lit, .. })) => Some(lit),
            _ => None,
        }
    }

    fn string(&self, example: &str) -> syn::Result<LitStr> {
        match self.lit() {
            Some(Lit::Str(s)) => Ok(s.clone()),
            _ => Err(syn::Error::new(
                self.span(),
                format!("`{name}` takes a string: `{name} = {example}`", name = self.name),
            )),
        }
    }

    /// A duration is a string with a unit; a bare number gets its fix.
    fn duration(&self, example: &str) -> syn::Result<LitStr> {
        let name = &self.name;
        match self.lit() {
            Some(Lit::Int(n)) => Err(syn::Error::new(
                n.span(),
                format!(
                    "`{name}` takes a duration string with a unit: `{name} = \"{}s\"` (or \"ms\", \"m\", \"h\", \"d\")",
                    n.base10_digits()
                ),
            )),
            Some(Lit::Float(n)) => Err(syn::Error::new(
                n.span(),
                format!("`{name}` takes a duration string with a unit, in whole numbers: `{name} = \"1m30s\"`"),
            )),
            _ => self.string(example),
        }
    }

    fn version(&self) -> syn::Result<VersionArg> {
        match (self.lit(), &self.expr) {
            (Some(Lit::Int(n)), _) => Ok(VersionArg::Int(n.clone())),
            (Some(Lit::Str(s)), _) => Ok(VersionArg::Str(s.clone())),
            (_, Some(Expr::Path(p))) if p.qself.is_none() => Ok(VersionArg::Path(p.path.clone())),
            _ => Err(syn::Error::new(
                self.span(),
                "`version` takes an integer, a string, or a path to a `fn() -> String`",
            )),
        }
    }

    fn flag(&self) -> syn::Result<bool> {
        match (self.lit(), &self.expr) {
            (_, None) => Ok(true),
            (Some(Lit::Bool(b)), _) => Ok(b.value),
            _ => Err(syn::Error::new(
                self.span(),
                format!(
                    "`{name}` takes no value or a bool: `{name}` or `{name} = false`",
                    name = self.name
                ),
            )),
        }
    }

    fn path(&self, what: &str) -> syn::Result<Path> {
        match (self.lit(), &self.expr) {
            (_, Some(Expr::Path(p))) if p.qself.is_none() => Ok(p.path.clone()),
            (Some(Lit::Str(s)), _) => Err(syn::Error::new(
                s.span(),
                format!(
                    "`{}` takes a path, not a string: `{} = {}`",
                    self.name,
                    self.name,
                    s.value()
                ),
            )),
            _ => Err(syn::Error::new(
                self.span(),
                format!("`{}` takes a path to {what}", self.name),
            )),
        }
    }

    /// An integer; a number written as a string gets its fix.
    fn integer(&self, example: &str) -> syn::Result<LitInt> {
        let name = &self.name;
        match self.lit() {
            Some(Lit::Int(n)) => Ok(n.clone()),
            Some(Lit::Str(s)) if s.value().parse::<u64>().is_ok() => Err(syn::Error::new(
                s.span(),
                format!("`{name}` takes an integer, not a string: `{name} = {}`", s.value()),
            )),
            _ => Err(syn::Error::new(
                self.span(),
                format!("`{name}` takes an integer: `{name} = {example}`"),
            )),
        }
    }

    /// `local` alone (or `local = true`), `local = false`, or
    /// `local(capacity = N, ttl = "30s")`.
    fn local(&self) -> syn::Result<LocalArg> {
        let mut local = LocalArg {
            span: self.name.span(),
            off: false,
            capacity: None,
            ttl: None,
            max_bytes: None,
        };
        if self.expr.is_some() {
            local.off = !self.local_flag()?;
            return Ok(local);
        }
        let Some(list) = &self.list else {
            return Ok(local);
        };
        let parser = syn::meta::parser(|inner| {
            let value = Value::inner(&inner)?;
            match value.name.to_string().as_str() {
                "capacity" => put(&mut local.capacity, value.integer("10_000")?, &value.name),
                "ttl" => put(&mut local.ttl, value.duration("\"30s\"")?, &value.name),
                "max_bytes" => put(&mut local.max_bytes, value.integer("67_108_864")?, &value.name),
                written => Err(syn::Error::new(
                    value.name.span(),
                    format!(
                        "unknown `local` option `{written}`; expected any of `capacity = 10_000`, `ttl = \"30s\"`, `max_bytes = 67_108_864`"
                    ),
                )),
            }
        });
        parser.parse2(list.clone())?;
        Ok(local)
    }

    /// `local = true` or `local = false`; any other value is refused with
    /// every form `local` takes.
    fn local_flag(&self) -> syn::Result<bool> {
        match self.lit() {
            Some(Lit::Bool(b)) => Ok(b.value),
            _ => Err(syn::Error::new(
                self.span(),
                "`local` takes no value or a bool: `local`, `local = false` (no local tier, not even the client's default) or `local(capacity = 10_000, ttl = \"30s\")`",
            )),
        }
    }

    /// One `name = value` (or bare `name`) inside an option's parentheses.
    fn inner(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Value> {
        let name = meta.path.require_ident()?.clone();
        let expr = if meta.input.peek(syn::Token![=]) {
            Some(meta.value()?.parse::<Expr>()?)
        } else {
            None
        };
        Ok(Value { name, expr, list: None })
    }

    /// `crate = "..."` is a path in a string, as serde spells it.
    fn string_path(&self) -> syn::Result<Path> {
        let lit = self.string("\"::my_facade::cacheme\"")?;
        lit.parse_with(Path::parse_mod_style).map_err(|_| {
            syn::Error::new(
                lit.span(),
                "`crate` takes the path of the cacheme crate: `crate = \"::cacheme\"`",
            )
        })
    }
}

/// Parses the attribute's arguments. Collects one error per bad option and
/// goes on with the next one.
pub fn parse_args(tokens: TokenStream, errors: &mut Vec<syn::Error>) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| {
        let expr = if meta.input.peek(syn::Token![=]) {
            Some(meta.value()?.parse::<Expr>()?)
        } else {
            None
        };
        let list = if meta.input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in meta.input);
            Some(content.parse::<TokenStream>()?)
        } else {
            None
        };
        let Some(name) = meta.path.get_ident().cloned() else {
            errors.push(meta.error(format!("unknown cache_store option; expected one of: {}", names())));
            return Ok(());
        };
        let written = name.to_string();
        match OPTIONS.iter().find(|opt| opt.name == written) {
            Some(opt) => {
                if let Err(e) = (opt.set)(&mut args, Value { name, expr, list }) {
                    args.attempted.push(opt.name);
                    errors.push(e);
                }
            }
            None => errors.push(syn::Error::new(
                name.span(),
                match closest(&written) {
                    Some(meant) => {
                        args.attempted.push(meant);
                        format!("unknown cache_store option `{written}`; did you mean `{meant}`?")
                    }
                    None => format!("unknown cache_store option `{written}`; expected one of: {}", names()),
                },
            )),
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    args
}

fn names() -> String {
    OPTIONS.iter().map(|opt| opt.name).collect::<Vec<_>>().join(", ")
}

/// The option `written` most likely meant: at most two edits away (one
/// for short names), the nearest first.
fn closest(written: &str) -> Option<&'static str> {
    let written = written.to_ascii_lowercase();
    OPTIONS
        .iter()
        .map(|opt| (edit_distance(&written, opt.name), opt.name))
        .filter(|&(d, name)| d <= if name.len() <= 4 { 1 } else { 2 })
        .min()
        .map(|(_, name)| name)
}

/// Levenshtein distance, with a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The fetcher as written.
pub struct Fetcher {
    /// The function, with its other attributes.
    pub item: ItemFn,
}

/// Parses the item the attribute is on; it must be a function.
pub fn parse_fetcher(tokens: TokenStream) -> syn::Result<Fetcher> {
    let item: ItemFn = syn::parse2(tokens).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[cache_store] goes on an `async fn` that fetches the value: `async fn book(ctx: &App, id: u64) -> Result<Book, Error>`",
        )
    })?;
    Ok(Fetcher { item })
}

/// `book` -> `BookStore`.
pub fn default_store_name(function: &Ident) -> String {
    let mut out = String::new();
    for word in function
        .to_string()
        .trim_start_matches("r#")
        .split('_')
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out.push_str("Store");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_upper_camel_case_plus_store() {
        let name = |s: &str| default_store_name(&Ident::new(s, Span::call_site()));
        assert_eq!(name("book"), "BookStore");
        assert_eq!(name("user_profile"), "UserProfileStore");
        assert_eq!(name("_private_thing"), "PrivateThingStore");
    }

    #[test]
    fn misspelt_options_get_the_nearest_one() {
        assert_eq!(closest("tll"), Some("ttl"));
        assert_eq!(closest("TTL"), Some("ttl"));
        assert_eq!(closest("kye"), Some("key"));
        assert_eq!(closest("singelflight"), Some("singleflight"));
        assert_eq!(closest("fetchmany"), Some("fetch_many"));
        assert_eq!(closest("lockttl"), Some("lock_ttl"));
        assert_eq!(closest("expire"), None);
        assert_eq!(closest("x"), None);
    }

    fn parsed(tokens: &str) -> (Args, Vec<String>) {
        let mut errors = Vec::new();
        let args = parse_args(tokens.parse().unwrap(), &mut errors);
        (args, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_bad_option_is_reported_and_the_others_still_read() {
        let (args, errors) = parsed(r#"tll = "5m", key = "book:<id>", expire = 3"#);
        assert!(args.key.is_some());
        assert_eq!(args.attempted, ["ttl"]);
        assert_eq!(errors[0], "unknown cache_store option `tll`; did you mean `ttl`?");
        let (args, errors) = parsed(r#"ttl = 300, key = "book:<id>""#);
        assert!(args.key.is_some() && args.ttl.is_none());
        assert_eq!(args.attempted, ["ttl"]);
        assert!(errors[0].contains(r#"`ttl = "300s"`"#), "{errors:?}");
        let (args, errors) = parsed(r#"crate = "::my::cacheme", singleflight, singleflight"#);
        assert!(args.krate.is_some());
        assert_eq!(errors, ["`singleflight` is given twice"]);
    }

    #[test]
    fn local_arguments_get_the_messages_top_level_options_get() {
        let error = |tokens: &str| parsed(tokens).1.join("\n");
        assert_eq!(
            error("local(ttl = 30)"),
            r#"`ttl` takes a duration string with a unit: `ttl = "30s"` (or "ms", "m", "h", "d")"#
        );
        assert_eq!(error("local(ttl)"), r#"`ttl` takes a string: `ttl = "30s"`"#);
        assert_eq!(
            error(r#"local(capacity = "10")"#),
            "`capacity` takes an integer, not a string: `capacity = 10`"
        );
        assert_eq!(
            error("local(capacity = big)"),
            "`capacity` takes an integer: `capacity = 10_000`"
        );
        assert_eq!(
            error("local(capacty = 10)"),
            r#"unknown `local` option `capacty`; expected any of `capacity = 10_000`, `ttl = "30s"`, `max_bytes = 67_108_864`"#
        );
        assert_eq!(error(r#"local(ttl = "1s", ttl = "2s")"#), "`ttl` is given twice");
        assert_eq!(
            error(r#"local(max_bytes = "64mb")"#),
            "`max_bytes` takes an integer: `max_bytes = 67_108_864`"
        );
        let (args, errors) = parsed(r#"local(capacity = 5, ttl = "30s", max_bytes = 1_000)"#);
        assert!(errors.is_empty(), "{errors:?}");
        let local = args.local.unwrap();
        assert_eq!(local.capacity.unwrap().base10_digits(), "5");
        assert_eq!(local.ttl.unwrap().value(), "30s");
        assert_eq!(local.max_bytes.unwrap().base10_digits(), "1000");
    }

    #[test]
    fn local_takes_a_bool_like_the_other_flags() {
        let local = |tokens: &str| {
            let (args, errors) = parsed(tokens);
            assert!(errors.is_empty(), "{tokens}: {errors:?}");
            let local = args.local.unwrap();
            (local.off, local.capacity.is_some() || local.ttl.is_some())
        };
        assert_eq!(local("local"), (false, false));
        assert_eq!(local("local = true"), (false, false));
        assert_eq!(local("local = false"), (true, false));
        let error = |tokens: &str| parsed(tokens).1.join("\n");
        for value in ["local = 10_000", r#"local = "off""#, "local = no"] {
            assert!(
                error(value).starts_with("`local` takes no value or a bool: `local`, `local = false`"),
                "{value}: {}",
                error(value)
            );
        }
        assert_eq!(error("local = false, local(capacity = 5)"), "`local` is given twice");
        assert_eq!(error("local(capacity = 5), local = false"), "`local` is given twice");
    }
}
