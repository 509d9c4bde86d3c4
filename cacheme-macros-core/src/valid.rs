//! Checks: turns the parsed attribute and fetcher into a [`Store`] the
//! expansion can trust, or errors spanned at the offending tokens (all of
//! them, not just the first).

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitInt, LitStr, Pat, ReturnType, Type};

use crate::ast::{Args, Fetcher, LocalArg, VersionArg, default_store_name};
use crate::duration::parse_millis;
use crate::template::{self, Part};

/// A store that passed every check.
pub struct Store {
    /// The fetcher, as written.
    pub item: ItemFn,
    /// The generated type's name (`BookStore`).
    pub store: Ident,
    /// The multi-getter's name (`BookStoreMulti`).
    pub multi: Ident,
    /// The key template as stored, the store `prefix` included
    /// (`"shop:book:<id>"`).
    pub key_source: String,
    /// `key_source` split into literal text and variables.
    pub parts: Vec<Part>,
    /// How long values live, in milliseconds (at least 1).
    pub ttl_ms: u64,
    /// How far below `ttl` each written value's TTL is drawn, when given.
    pub ttl_jitter: Option<Jitter>,
    /// The fetch lock's lifetime, in milliseconds, when given.
    pub lock_ttl_ms: Option<u64>,
    /// The version in every key.
    pub version: Version,
    /// Whether concurrent gets of one key share one fetch.
    pub singleflight: bool,
    /// The local tier, when asked for.
    pub local: Option<Local>,
    /// `local = false`: no local tier, not even the client's default
    /// (`local` is then `None`).
    pub local_off: bool,
    /// Fail-safe and freshness options, in milliseconds, each with the
    /// span of its value.
    pub freshness: Freshness,
    /// The runtime `Codec` variant (`Bincode`, `Json`, `MessagePack`),
    /// spanned at the option; `None` uses the client's.
    pub codec: Option<Ident>,
    /// The context type behind the reference (`App` in `ctx: &App`).
    pub context: Type,
    /// The key parameters, in the fetcher's order.
    pub params: Vec<(Ident, Type)>,
    /// The fetcher's return type, as written.
    pub output: Type,
    /// The batch fetcher (`fetch_many = path`), if any.
    pub fetch_many: Option<syn::Path>,
    /// The facade's path (`crate = "..."`, default `::cacheme`).
    pub krate: syn::Path,
    /// Whether `get_m` and `get_p` are generated: not with `batch = false`
    /// nor with a borrowed parameter (see [`Store::borrowed`]).
    pub batch: bool,
}

impl Store {
    /// Whether a key parameter borrows (`&str`, `Cow<'_, str>`): such a
    /// store has `get`, `invalidate`, `update` and `key`, but no batching
    /// (`get_m`, `get_p`), which keeps parameters past the call.
    pub fn borrowed(&self) -> bool {
        self.params.iter().any(|(_, ty)| borrows(ty))
    }
}

/// Whether a type has a reference or a lifetime in it.
pub fn borrows(ty: &Type) -> bool {
    fn any(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Punct(p) => p.as_char() == '&' || p.as_char() == '\'',
            proc_macro2::TokenTree::Group(g) => any(g.stream()),
            _ => false,
        })
    }
    any(quote::ToTokens::to_token_stream(ty))
}

/// The validated `local` option.
pub struct Local {
    /// Where it was written (the value type's bounds are checked there).
    pub span: Span,
    /// The most values held.
    pub capacity: u64,
    /// How long a value is served locally, in milliseconds; `None`: the
    /// store's TTL.
    pub ttl_ms: Option<u64>,
    /// The most bytes held (`max_bytes`); `None`: bounded by `capacity`
    /// alone.
    pub max_bytes: Option<u64>,
}

/// `stale_for`, `fail_safe_throttle`, `soft_timeout`, `hard_timeout` and
/// `refresh_after`, in milliseconds, each with the span of its value.
#[derive(Default)]
pub struct Freshness {
    /// How long values are kept past their TTL for the fail-safe.
    pub stale_for: Option<(u64, Span)>,
    /// How long a stale value is served again before the source is asked.
    pub fail_safe_throttle: Option<(u64, Span)>,
    /// How long callers wait for a refetch when a stale value exists.
    pub soft_timeout: Option<(u64, Span)>,
    /// How long a fetch may run.
    pub hard_timeout: Option<(u64, Span)>,
    /// The age past which a hit refreshes its key in the background.
    pub refresh_after: Option<(u64, Span)>,
    /// How long a fetched `None` is cached.
    pub none_ttl: Option<(u64, Span)>,
    /// The function giving each value's TTL (`ttl_from`).
    pub ttl_from: Option<syn::Path>,
}

impl Freshness {
    /// The span of the option that makes fetches run in the background
    /// (`soft_timeout` or `refresh_after`), if one is given.
    pub fn background(&self) -> Option<Span> {
        self.soft_timeout.or(self.refresh_after).map(|(_, span)| span)
    }
}

/// The validated `ttl_jitter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// A share of the TTL, 1 to 99 percent.
    Percent(u8),
    /// A duration shorter than the TTL, in milliseconds (at least 1).
    Millis(u64),
}

/// The validated version.
pub enum Version {
    /// A constant: an integer or a string, as text.
    Static(String),
    /// A `fn() -> String` evaluated on every key built.
    Dynamic(syn::Path),
}

/// Checks everything; returns the store or every error found.
pub fn validate(args: Args, fetcher: Fetcher, errors: &mut Vec<syn::Error>) -> Option<Store> {
    let item = fetcher.item;
    let sig = &item.sig;
    let mut err = |span: Span, msg: String| errors.push(syn::Error::new(span, msg));

    if sig.asyncness.is_none() {
        err(
            sig.fn_token.span(),
            "a cache_store fetcher must be an `async fn`".to_owned(),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        err(
            sig.generics.span(),
            "a cache_store fetcher cannot be generic: the store it generates has one concrete type".to_owned(),
        );
    }

    // The context, then the key parameters.
    let mut inputs = sig.inputs.iter();
    let context = match inputs.next() {
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(reference) if reference.mutability.is_none() && reference.lifetime.is_none() => {
                Some((*reference.elem).clone())
            }
            other => {
                err(other.span(), "the first parameter must be the context by shared reference, e.g. `ctx: &App`, where `App` implements `cacheme::Context`".to_owned());
                None
            }
        },
        Some(FnArg::Receiver(receiver)) => {
            err(
                receiver.span(),
                "a cache_store fetcher is a free function, not a method: take the context as `ctx: &App`".to_owned(),
            );
            None
        }
        None => {
            err(
                sig.paren_token.span.join(),
                "a cache_store fetcher takes the context first, e.g. `async fn book(ctx: &App, id: u64)`".to_owned(),
            );
            None
        }
    };
    let mut params = Vec::new();
    for input in inputs {
        match input {
            FnArg::Typed(arg) => match &*arg.pat {
                Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                    params.push((pat.ident.clone(), (*arg.ty).clone()));
                }
                other => err(
                    other.span(),
                    "a key parameter must be a plain name (`id: u64`), not a pattern".to_owned(),
                ),
            },
            FnArg::Receiver(receiver) => err(receiver.span(), "`self` is not allowed here".to_owned()),
        }
    }

    let output = match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => Some((**ty).clone()),
        ReturnType::Type(_, ty) => {
            err(ty.span(), "a cache_store fetcher returns `Result<Value, Error>` (or an alias named `...Result`): the error is what `get` returns when the source fails".to_owned());
            None
        }
        ReturnType::Default => {
            err(
                sig.ident.span(),
                "a cache_store fetcher returns `Result<Value, Error>`".to_owned(),
            );
            None
        }
    };

    // The key template against the parameters.
    let mut parts = Vec::new();
    let key_source = match &args.key {
        None if args.attempted.contains(&"key") => String::new(),
        None => {
            err(
                Span::call_site(),
                "missing `key = \"...\"`: the key template, e.g. `key = \"book:<id>\"`".to_owned(),
            );
            String::new()
        }
        Some(key) => {
            let source = key.value();
            match template::parse(&source) {
                Err(reason) => err(key.span(), reason),
                Ok(parsed) => parts = parsed,
            }
            source
        }
    };
    // A store prefix is a literal segment in front of the template, inside
    // the client's namespace: `prefix = "shop"` + `book:<id>` is `shop:book:<id>`.
    let key_source = match &args.prefix {
        Some(prefix) => match check_prefix(&prefix.value()) {
            Ok(()) => {
                if let Some(Part::Lit(first)) = parts.first_mut() {
                    first.insert_str(0, &format!("{}:", prefix.value()));
                } else if !parts.is_empty() {
                    parts.insert(0, Part::Lit(format!("{}:", prefix.value())));
                }
                format!("{}:{key_source}", prefix.value())
            }
            Err(reason) => {
                err(prefix.span(), reason);
                key_source
            }
        },
        None => key_source,
    };
    let key_span = args.key.as_ref().map_or_else(Span::call_site, |k| k.span());
    let mut seen = BTreeSet::new();
    for part in &parts {
        if let Part::Var(name) = part {
            if !seen.insert(name.clone()) {
                err(key_span, format!("`<{name}>` appears twice in the key template"));
            } else if !params.iter().any(|(ident, _)| ident == name) {
                err(
                    key_span,
                    format!(
                        "the key template uses `<{name}>` but `{}` has no parameter `{name}`",
                        sig.ident
                    ),
                );
            }
        }
    }
    if !parts.is_empty() {
        // `book:{id}` is `<id>` written as a format string: one hint, with
        // the template fixed, rather than one error per parameter.
        let braced: Vec<&Ident> = params
            .iter()
            .map(|(ident, _)| ident)
            .filter(|ident| !seen.contains(&ident.to_string()) && key_source.contains(&format!("{{{ident}}}")))
            .collect();
        if !braced.is_empty() {
            let fixed = braced.iter().fold(
                args.key.as_ref().map(LitStr::value).unwrap_or_default(),
                |key, ident| key.replace(&format!("{{{ident}}}"), &format!("<{ident}>")),
            );
            err(
                key_span,
                format!(
                    "key templates write variables as `<{first}>`, not `{{{first}}}`: `key = {fixed:?}`",
                    first = braced[0]
                ),
            );
        }
        for (ident, _) in &params {
            if !seen.contains(&ident.to_string()) && !braced.contains(&ident) {
                err(
                    ident.span(),
                    format!(
                        "parameter `{ident}` is not in the key template: add `<{ident}>` to the key, or calls with different `{ident}` would share one cached value"
                    ),
                );
            }
        }
    }

    // Batching keeps parameters past the call: it needs owned ones.
    if let (Some(path), Some((false, at))) = (&args.fetch_many, args.batch) {
        err(
            at,
            format!(
                "`batch = false` removes `get_m` and `get_p`, the only callers of `fetch_many = {}`: drop one of them",
                path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default()
            ),
        );
    }
    if args.fetch_many.is_some() {
        for (ident, ty) in params.iter().filter(|(_, ty)| borrows(ty)) {
            err(
                ty.span(),
                format!(
                    "`fetch_many` batches keys, so parameter `{ident}` must be owned (`String`, not `&str`); a store with a borrowed parameter has `get`, `invalidate` and `update` but no batching"
                ),
            );
        }
    }

    // Durations, version, codec, name.
    let ttl_ms = match &args.ttl {
        Some(ttl) => duration(ttl, "ttl", errors),
        None if args.attempted.contains(&"ttl") => None,
        None => {
            errors.push(syn::Error::new(
                Span::call_site(),
                "missing `ttl = \"...\"`: how long values live, e.g. `ttl = \"5m\"`",
            ));
            None
        }
    };
    let ttl_jitter = args.ttl_jitter.as_ref().map(|lit| match jitter(&lit.value(), ttl_ms) {
        Ok(jitter) => Some(jitter),
        Err(reason) => {
            errors.push(syn::Error::new(lit.span(), reason));
            None
        }
    });
    let lock_ttl_ms = args.lock_ttl.as_ref().map(|lit| duration(lit, "lock_ttl", errors));
    let freshness = freshness(&args, ttl_ms, &params, errors);
    let local_off = args.local.as_ref().is_some_and(|arg| arg.off);
    let local = args
        .local
        .as_ref()
        .filter(|arg| !arg.off)
        .map(|arg| local(arg, ttl_ms, errors));
    let version = match args.version {
        None => Some(Version::Static("1".to_owned())),
        Some(VersionArg::Int(int)) => match int.base10_parse::<u64>() {
            Ok(n) => Some(Version::Static(n.to_string())),
            Err(_) => {
                errors.push(syn::Error::new(
                    int.span(),
                    "`version` must be a non-negative integer, a string, or a path to a `fn() -> String`",
                ));
                None
            }
        },
        Some(VersionArg::Str(s)) if s.value().is_empty() => {
            errors.push(syn::Error::new(s.span(), "`version` must not be empty"));
            None
        }
        Some(VersionArg::Str(s)) => Some(Version::Static(s.value())),
        Some(VersionArg::Path(path)) => Some(Version::Dynamic(path)),
    };
    let codec = args.codec.as_ref().and_then(|lit| {
        let variant = match lit.value().as_str() {
            "bincode" => "Bincode",
            "json" => "Json",
            "msgpack" | "messagepack" => "MessagePack",
            other => {
                errors.push(syn::Error::new(
                    lit.span(),
                    format!("unknown codec {other:?}; expected \"bincode\", \"json\" or \"msgpack\""),
                ));
                return None;
            }
        };
        Some(Ident::new(variant, lit.span()))
    });
    let store = match &args.name {
        None => Some(Ident::new(&default_store_name(&sig.ident), sig.ident.span())),
        Some(lit) => match syn::parse_str::<Ident>(&lit.value()) {
            Ok(ident) => Some(Ident::new(&ident.to_string(), lit.span())),
            Err(_) => {
                errors.push(syn::Error::new(
                    lit.span(),
                    format!("`name` must be a type name, got {:?}", lit.value()),
                ));
                None
            }
        },
    };

    if !errors.is_empty() {
        return None;
    }
    let store = store?;
    let batch = args.batch.is_none_or(|(on, _)| on) && !params.iter().any(|(_, ty)| borrows(ty));
    Some(Store {
        multi: Ident::new(&format!("{store}Multi"), store.span()),
        store,
        key_source,
        parts,
        ttl_ms: ttl_ms?,
        ttl_jitter: ttl_jitter.flatten(),
        lock_ttl_ms: lock_ttl_ms.flatten(),
        version: version?,
        singleflight: args.singleflight.is_some_and(|(on, _)| on),
        local: local.flatten(),
        local_off,
        freshness,
        codec,
        context: context?,
        params,
        output: output?,
        fetch_many: args.fetch_many,
        krate: args.krate.unwrap_or_else(|| syn::parse_quote!(::cacheme)),
        batch,
        item,
    })
}

/// Reads and cross-checks the fail-safe and freshness options.
fn freshness(args: &Args, ttl_ms: Option<u64>, params: &[(Ident, Type)], errors: &mut Vec<syn::Error>) -> Freshness {
    let mut read = |lit: &Option<LitStr>, name: &str| {
        let lit = lit.as_ref()?;
        duration(lit, name, errors).map(|ms| (ms, lit.span()))
    };
    let fresh = Freshness {
        stale_for: read(&args.stale_for, "stale_for"),
        fail_safe_throttle: read(&args.fail_safe_throttle, "fail_safe_throttle"),
        soft_timeout: read(&args.soft_timeout, "soft_timeout"),
        hard_timeout: read(&args.hard_timeout, "hard_timeout"),
        refresh_after: read(&args.refresh_after, "refresh_after"),
        none_ttl: read(&args.none_ttl, "none_ttl"),
        ttl_from: args.ttl_from.clone(),
    };
    let mut refuse = |span: Span, message: &str| errors.push(syn::Error::new(span, message));
    if fresh.stale_for.is_none() {
        if let Some((_, span)) = fresh.fail_safe_throttle {
            refuse(
                span,
                "`fail_safe_throttle` paces the fail-safe: it needs `stale_for = \"...\"`, how long values are kept past their TTL to be served when a refetch fails",
            );
        }
        if let Some((_, span)) = fresh.soft_timeout {
            refuse(
                span,
                "`soft_timeout` answers from a stale value while the fetch goes on: it needs `stale_for = \"...\"`, how long values are kept past their TTL",
            );
        }
    }
    if let (Some((soft, span)), Some((hard, _))) = (fresh.soft_timeout, fresh.hard_timeout)
        && soft >= hard
    {
        refuse(span, "`soft_timeout` must be shorter than `hard_timeout`");
    }
    if let Some((after, span)) = fresh.refresh_after
        && exceeds_ttl(after, ttl_ms, Bound::Shorter)
    {
        refuse(
            span,
            "`refresh_after` must be shorter than the `ttl`: values are refreshed in the background before they expire",
        );
    }
    if fresh.background().is_some()
        && let Some((name, _)) = params.iter().find(|(_, ty)| borrows(ty))
    {
        refuse(
            name.span(),
            &format!(
                "`{name}` is borrowed, but `soft_timeout` and `refresh_after` fetch in the background, after the call returned: take an owned parameter (e.g. `String` for `&str`)"
            ),
        );
    }
    fresh
}

/// The validated `local` option, defaults filled in; `None` when it is
/// wrong (the errors are pushed).
fn local(arg: &LocalArg, ttl_ms: Option<u64>, errors: &mut Vec<syn::Error>) -> Option<Local> {
    let capacity = match &arg.capacity {
        None => Some(10_000),
        Some(int) => positive(int, "`capacity` is how many values the local tier holds", errors),
    };
    let local_ttl = match &arg.ttl {
        None => Some(None),
        Some(lit) => local_ttl(lit, ttl_ms, errors).map(Some),
    };
    let max_bytes = match &arg.max_bytes {
        None => Some(None),
        Some(int) => positive(int, "`max_bytes` is how many bytes the local tier holds", errors).map(Some),
    };
    Some(Local {
        span: arg.span,
        capacity: capacity?,
        ttl_ms: local_ttl?,
        max_bytes: max_bytes?,
    })
}

/// `local(capacity = N)`, `local(max_bytes = N)`: a positive integer;
/// `what` says what it counts.
fn positive(int: &LitInt, what: &str, errors: &mut Vec<syn::Error>) -> Option<u64> {
    match int.base10_parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            errors.push(syn::Error::new(int.span(), format!("{what}: a positive integer")));
            None
        }
    }
}

/// `local(ttl = "30s")`: a duration no longer than the store's `ttl`
/// (when that is known).
fn local_ttl(lit: &LitStr, ttl_ms: Option<u64>, errors: &mut Vec<syn::Error>) -> Option<u64> {
    let ms = duration(lit, "ttl", errors)?;
    if exceeds_ttl(ms, ttl_ms, Bound::NotLonger) {
        errors.push(syn::Error::new(
            lit.span(),
            "`local(ttl = ...)` must not be longer than the store's `ttl`: the local tier serves a value at most as long as it lives (leave `ttl` out of `local` for the store's)",
        ));
        return None;
    }
    Some(ms)
}

/// How a duration option must compare with the store's `ttl`.
#[derive(Clone, Copy)]
enum Bound {
    /// Strictly shorter (`ttl_jitter`, `refresh_after`).
    Shorter,
    /// At most as long (`local(ttl = ...)`).
    NotLonger,
}

/// Whether `ms` breaks `bound` against the store's `ttl`. `false` when the
/// `ttl` is not known (missing or invalid, which is reported already).
fn exceeds_ttl(ms: u64, ttl_ms: Option<u64>, bound: Bound) -> bool {
    ttl_ms.is_some_and(|ttl| match bound {
        Bound::Shorter => ms >= ttl,
        Bound::NotLonger => ms > ttl,
    })
}

/// A `ttl_jitter`: a whole percentage from 1% to 99%, or a duration
/// shorter than the TTL (`ttl_ms`, when it is known).
fn jitter(text: &str, ttl_ms: Option<u64>) -> Result<Jitter, String> {
    if let Some(percent) = text.trim().strip_suffix('%') {
        return match percent.trim().parse::<u8>() {
            Ok(n @ 1..=99) => Ok(Jitter::Percent(n)),
            _ => Err(format!(
                "invalid `ttl_jitter` {text:?}: a share of the TTL is a whole percentage from 1% to 99%, e.g. \"10%\""
            )),
        };
    }
    let ms = parse_millis(text)
        .map_err(|reason| format!("invalid `ttl_jitter`: {reason}, or a share of the TTL such as \"10%\""))?;
    if ms == 0 {
        return Err("`ttl_jitter` must be positive; leave it out for none".to_owned());
    }
    if exceeds_ttl(ms, ttl_ms, Bound::Shorter) {
        return Err(format!(
            "`ttl_jitter` ({text}) must be shorter than the `ttl`: each value's TTL is drawn between ttl - jitter and ttl, never zero"
        ));
    }
    Ok(Jitter::Millis(ms))
}

/// A store prefix is plain text: no variables, no whitespace, not empty.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("`prefix` must not be empty; leave it out to use none".to_owned());
    }
    if prefix.contains(['<', '>']) {
        return Err("`prefix` is plain text: variables (`<name>`) belong in `key`".to_owned());
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("`prefix` must not contain whitespace or control characters".to_owned());
    }
    Ok(())
}

fn duration(lit: &syn::LitStr, what: &str, errors: &mut Vec<syn::Error>) -> Option<u64> {
    match parse_millis(&lit.value()) {
        Ok(ms) => Some(ms),
        Err(reason) => {
            errors.push(syn::Error::new(lit.span(), format!("invalid `{what}`: {reason}")));
            None
        }
    }
}

/// Whether a return type is spelled as a `Result` (`Result<T, E>`,
/// `io::Result<T>`, `AppResult<T>`). Anything else would only produce a
/// cascade of trait errors in the generated code.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident.to_string().ends_with("Result")),
        Type::Group(group) => returns_result(&group.elem),
        Type::Paren(paren) => returns_result(&paren.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    /// The store `attr` declares on a plain fetcher, or its errors.
    fn store(attr: &str) -> Result<crate::Store, Vec<String>> {
        let item = "async fn book(ctx: &App, id: u64) -> Result<String, E> { todo!() }";
        crate::store(attr.parse().unwrap(), item.parse().unwrap())
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_local_ttl_is_at_most_the_store_ttl() {
        let local = |attr: &str| store(attr).map(|s| s.local.map(|l| (l.capacity, l.ttl_ms)));
        assert_eq!(
            local(r#"key = "book:<id>", ttl = "5m", local"#),
            Ok(Some((10_000, None)))
        );
        assert_eq!(
            local(r#"key = "book:<id>", ttl = "5m", local(capacity = 7, ttl = "5m")"#),
            Ok(Some((7, Some(300_000))))
        );
        let errors = local(r#"key = "book:<id>", ttl = "5m", local(ttl = "10m")"#).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("`local(ttl = ...)` must not be longer than the store's `ttl`"));
        // An unknown store TTL is reported once, and not compared with.
        for ttl in [r#"ttl = "5 minutes","#, "ttl = 300,", ""] {
            let errors = local(&format!(r#"key = "book:<id>", {ttl} local(ttl = "10m")"#)).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(!errors[0].contains("local"), "{errors:?}");
        }
    }

    #[test]
    fn a_local_byte_bound_is_a_positive_integer() {
        let bytes = |attr: &str| store(attr).map(|s| s.local.and_then(|l| l.max_bytes));
        assert_eq!(bytes(r#"key = "book:<id>", ttl = "5m", local"#), Ok(None));
        assert_eq!(
            bytes(r#"key = "book:<id>", ttl = "5m", local(max_bytes = 67_108_864)"#),
            Ok(Some(67_108_864))
        );
        for zero in ["0", "0_000"] {
            let errors = bytes(&format!(r#"key = "book:<id>", ttl = "5m", local(max_bytes = {zero})"#)).unwrap_err();
            assert_eq!(
                errors,
                ["`max_bytes` is how many bytes the local tier holds: a positive integer"]
            );
        }
    }

    #[test]
    fn local_false_is_no_tier_and_local_true_is_the_default_one() {
        let local = |attr: &str| store(attr).map(|s| (s.local_off, s.local.map(|l| (l.capacity, l.ttl_ms))));
        assert_eq!(
            local(r#"key = "book:<id>", ttl = "5m", local = false"#),
            Ok((true, None))
        );
        assert_eq!(
            local(r#"key = "book:<id>", ttl = "5m", local = true"#),
            Ok((false, Some((10_000, None))))
        );
        assert_eq!(local(r#"key = "book:<id>", ttl = "5m""#), Ok((false, None)));
        let errors = local(r#"key = "book:<id>", ttl = "5m", local = false, local(capacity = 5)"#).unwrap_err();
        assert_eq!(errors, ["`local` is given twice"]);
    }

    #[test]
    fn options_shorter_than_the_ttl_are_refused_at_the_ttl() {
        let errors = |attr: &str| store(attr).err().unwrap_or_default();
        assert_eq!(
            errors(r#"key = "book:<id>", ttl = "5m", refresh_after = "4m""#).len(),
            0
        );
        assert_eq!(
            errors(r#"key = "book:<id>", ttl = "5m", refresh_after = "5m""#).len(),
            1
        );
        assert_eq!(errors(r#"key = "book:<id>", ttl = "5m", ttl_jitter = "4m""#).len(), 0);
        assert_eq!(errors(r#"key = "book:<id>", ttl = "5m", ttl_jitter = "5m""#).len(), 1);
    }
}
