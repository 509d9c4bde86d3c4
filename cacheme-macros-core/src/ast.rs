//! Parsing: the attribute's options and the fetcher function, as written.
//! Nothing is checked here beyond syntax; see `valid`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{Ident, ItemFn, LitBool, LitInt, LitStr, Path};

/// The options of `#[cache_store(...)]`, each with its span.
#[derive(Default)]
pub struct Args {
    /// `key = "book:<id>"`: the key template.
    pub key: Option<LitStr>,
    /// `ttl = "5m"`.
    pub ttl: Option<LitStr>,
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
    /// `local` or `local(capacity = 10_000, ttl = "30s")`: a local tier.
    pub local: Option<LocalArg>,
}

/// The `local` option as written, with its span.
pub struct LocalArg {
    /// The option's span.
    pub span: Span,
    /// `capacity = N`.
    pub capacity: Option<LitInt>,
    /// `ttl = "30s"`.
    pub ttl: Option<LitStr>,
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

const OPTIONS: &str = "key, ttl, version, singleflight, local, codec, name, prefix, lock_ttl, fetch_many";

/// Parses the attribute's arguments. Collects one error per bad option.
pub fn parse_args(tokens: TokenStream, errors: &mut Vec<syn::Error>) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| {
        let Some(ident) = meta.path.get_ident() else {
            return Err(meta.error(format!("unknown cache_store option; expected one of: {OPTIONS}")));
        };
        let name = ident.to_string();
        let duplicate = || syn::Error::new(ident.span(), format!("`{name}` is given twice"));
        match name.as_str() {
            "key" | "ttl" | "codec" | "name" | "prefix" | "lock_ttl" => {
                let value: LitStr = meta.value()?.parse().map_err(|_| {
                    syn::Error::new(ident.span(), format!("`{name}` takes a string: `{name} = \"...\"`"))
                })?;
                let slot = match name.as_str() {
                    "key" => &mut args.key,
                    "ttl" => &mut args.ttl,
                    "codec" => &mut args.codec,
                    "name" => &mut args.name,
                    "prefix" => &mut args.prefix,
                    _ => &mut args.lock_ttl,
                };
                if slot.is_some() {
                    return Err(duplicate());
                }
                *slot = Some(value);
            }
            "version" => {
                if args.version.is_some() {
                    return Err(duplicate());
                }
                let input = meta.value()?;
                args.version = Some(if input.peek(LitInt) {
                    VersionArg::Int(input.parse()?)
                } else if input.peek(LitStr) {
                    VersionArg::Str(input.parse()?)
                } else {
                    VersionArg::Path(input.parse().map_err(|_| {
                        syn::Error::new(
                            ident.span(),
                            "`version` takes an integer, a string, or a path to a `fn() -> String`",
                        )
                    })?)
                });
            }
            "fetch_many" => {
                if args.fetch_many.is_some() {
                    return Err(duplicate());
                }
                args.fetch_many = Some(meta.value()?.parse().map_err(|_| {
                    syn::Error::new(
                        ident.span(),
                        "`fetch_many` takes a path to the batch fetcher: `fetch_many = books`",
                    )
                })?);
            }
            "local" => {
                if args.local.is_some() {
                    return Err(duplicate());
                }
                let mut local = LocalArg {
                    span: ident.span(),
                    capacity: None,
                    ttl: None,
                };
                if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|inner| {
                        let what = inner.path.get_ident().map(ToString::to_string).unwrap_or_default();
                        match what.as_str() {
                            "capacity" if local.capacity.is_none() => local.capacity = Some(inner.value()?.parse()?),
                            "ttl" if local.ttl.is_none() => local.ttl = Some(inner.value()?.parse()?),
                            "capacity" | "ttl" => return Err(inner.error(format!("`{what}` is given twice"))),
                            _ => {
                                return Err(inner.error(
                                    "unknown `local` option; expected `capacity = 10_000` and/or `ttl = \"30s\"`",
                                ));
                            }
                        }
                        Ok(())
                    })?;
                }
                args.local = Some(local);
            }
            "singleflight" => {
                if args.singleflight.is_some() {
                    return Err(duplicate());
                }
                let on = if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<LitBool>()?.value
                } else {
                    true
                };
                args.singleflight = Some((on, ident.span()));
            }
            _ => {
                return Err(syn::Error::new(
                    ident.span(),
                    format!("unknown cache_store option `{name}`; expected one of: {OPTIONS}"),
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    args
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
}
