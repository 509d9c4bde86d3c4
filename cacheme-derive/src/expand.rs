//! Code generation: the store type, its methods, its multi-getter and its
//! link-time registration. Generated code names only
//! `::cacheme::__private` paths (or the `crate = "..."` option's), so it
//! works whatever the user imported.

use proc_macro2::{Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use cacheme_macros_core::template::Part;
use cacheme_macros_core::{Jitter, Store, Version};

/// The attribute's entry point: parse, validate, expand; on error the
/// fetcher is emitted unchanged beside the errors, with a stub of the store
/// (see `fallback`) so call sites do not add errors of their own.
pub fn cache_store(args: TokenStream, input: TokenStream) -> TokenStream {
    match cacheme_macros_core::store(args.clone(), input.clone()) {
        Ok(store) => expand(&store),
        Err(errors) => {
            let stub = crate::fallback::stub(args, input.clone());
            let errors = errors.iter().map(syn::Error::to_compile_error);
            quote! { #input #stub #(#errors)* }
        }
    }
}

fn expand(s: &Store) -> TokenStream {
    let krate = &s.krate;
    let cm = quote!(#krate::__private);
    let item = &s.item;
    let vis = &item.vis;
    let fetcher = &item.sig.ident;
    let store = &s.store;
    let multi = &s.multi;
    let context = &s.context;
    let output = &s.output;
    let names: Vec<_> = s.params.iter().map(|(name, _)| name).collect();
    let types: Vec<_> = s.params.iter().map(|(_, ty)| ty).collect();

    let key_source = &s.key_source;
    let parts = s.parts.iter().map(|part| match part {
        Part::Lit(text) => quote!(#cm::Part::Lit(#text)),
        Part::Var(name) => quote!(#cm::Part::Var(#name)),
    });
    let pushes: Vec<_> = s
        .parts
        .iter()
        .map(|part| match part {
            Part::Lit(text) => quote!(__key.push_str(#text);),
            Part::Var(name) => {
                let ident = format_ident!("{}", name);
                // Spanned at the parameter's type: a type without `Display`
                // is one error there, saying why it needs it.
                let span = s
                    .params
                    .iter()
                    .find(|(p, _)| p == name)
                    .map_or(ident.span(), |(_, ty)| ty.span());
                let ident = Ident::new(name, span);
                let ty = s.params.iter().find(|(p, _)| p == name).map(|(_, ty)| ty);
                if ty.is_some_and(|ty| is_primitive_integer(ty) || is_string(ty)) {
                    // Written without `fmt` if it is the type it is spelled
                    // as; the compiler picks (see `KeyPart`), so a shadowed
                    // `String` still takes the `Display` path.
                    return quote! {{
                        #[allow(unused_imports)]
                        use #cm::{AnyKeyPart as _, FastKeyPart as _};
                        (&#cm::KeyPart(#ident)).push_key(&mut __key);
                    }};
                }
                at(span, quote!(#cm::KeyParam::push_to(#ident, &mut __key);))
            }
        })
        .collect();
    let version = match &s.version {
        Version::Static(v) => quote!(#cm::Version::Static(#v)),
        Version::Dynamic(path) => quote_spanned! {path.span()=>
            #cm::Version::Dynamic({
                let version: fn() -> ::std::string::String = #path;
                version
            })
        },
    };
    let codec = match &s.codec {
        Some(variant) => quote!(::core::option::Option::Some(#cm::Codec::#variant)),
        None => quote!(::core::option::Option::None),
    };
    let ttl = Literal::u64_suffixed(s.ttl_ms);
    let lock_ttl = match s.lock_ttl_ms {
        Some(ms) => {
            let ms = Literal::u64_suffixed(ms);
            quote!(::core::option::Option::Some(#cm::Duration::from_millis(#ms)))
        }
        None => quote!(::core::option::Option::None),
    };
    let ttl_jitter = match s.ttl_jitter {
        Some(Jitter::Percent(percent)) => {
            let percent = Literal::u8_suffixed(percent);
            quote!(::core::option::Option::Some(#cm::TtlJitter::Percent(#percent)))
        }
        Some(Jitter::Millis(ms)) => {
            let ms = Literal::u64_suffixed(ms);
            quote!(::core::option::Option::Some(#cm::TtlJitter::Span(#cm::Duration::from_millis(#ms))))
        }
        None => quote!(::core::option::Option::None),
    };
    let singleflight = s.singleflight;
    let local_off = s.local_off;
    let local = match &s.local {
        Some(local) => {
            let capacity = Literal::u64_suffixed(local.capacity);
            let mut tier = quote!(#cm::LocalTier::new(#capacity));
            if let Some(ms) = local.ttl_ms {
                let ms = Literal::u64_suffixed(ms);
                tier = quote!(#tier.with_ttl(#cm::Duration::from_millis(#ms)));
            }
            if let Some(bytes) = local.max_bytes {
                let bytes = Literal::u64_suffixed(bytes);
                tier = quote!(#tier.with_max_bytes(#bytes));
            }
            quote!(::core::option::Option::Some(#tier))
        }
        None => quote!(::core::option::Option::None),
    };
    let millis = |option: Option<(u64, Span)>| match option {
        Some((ms, _)) => {
            let ms = Literal::u64_suffixed(ms);
            quote!(::core::option::Option::Some(#cm::Duration::from_millis(#ms)))
        }
        None => quote!(::core::option::Option::None),
    };
    let fresh = &s.freshness;
    let stale_for = millis(fresh.stale_for);
    let fail_safe_throttle = millis(fresh.fail_safe_throttle);
    let soft_timeout = millis(fresh.soft_timeout);
    let hard_timeout = millis(fresh.hard_timeout);
    let refresh_after = millis(fresh.refresh_after);
    let none_ttl = millis(fresh.none_ttl);
    let store_name = store.to_string();
    let fetcher_name = fetcher.to_string();

    // get_m's parameter bundle: `T`, `(T1, T2)`, or `()`.
    let (bundle_ty, bundle_pat) = match names.as_slice() {
        [one] => (quote!(#(#types)*), quote!(#one)),
        _ => (quote!((#(#types,)*)), quote!((#(#names,)*))),
    };
    // The value and error types go through `Fetched`, spanned at the
    // value type: a value that cannot be cached is one error there, and
    // the rest of the store sees an unknown type and adds none (see
    // `Fetched` for how).
    let vspan = value_span(output);
    let cloned: Vec<_> = s
        .params
        .iter()
        .map(|(name, ty)| at(ty.span(), quote!(#cm::clone_param(&#name))))
        .collect();
    let value_ty = at(vspan, quote!(<#output as #cm::Fetched>::Value));
    // The public signatures name the declared types, unchecked, so a call
    // of a store whose value cannot be cached adds no error; the bodies
    // convert (identities, when the value type is right).
    let dvalue_ty = at(vspan, quote!(<#output as #cm::FetchResult>::Value));
    let derror_ty = at(vspan, quote!(<#output as #cm::FetchResult>::Error));
    // `ttl_from = path`: each written value's TTL, asked of the user's
    // `fn(&Value) -> Duration` (checked at the path) on the value decoded
    // from the bytes being written.
    let ttl_from = match &fresh.ttl_from {
        Some(path) => {
            let declared = at(vspan, quote!(<#output as #cm::Fetched>::declared_ref(&value)));
            let call = at(
                path.span(),
                quote!({
                    let ttl_from: fn(&#dvalue_ty) -> #cm::Duration = #path;
                    ttl_from
                }),
            );
            quote! {
                ::core::option::Option::Some({
                    fn __ttl_from(codec: #cm::Codec, bytes: &[u8]) -> ::core::option::Option<#cm::Duration> {
                        let value: #value_ty = codec.decode(bytes).ok()?;
                        ::core::option::Option::Some((#call)(#declared))
                    }
                    __ttl_from
                })
            }
        }
        None => quote!(::core::option::Option::None),
    };
    let error_ty = at(vspan, quote!(<#output as #cm::Fetched>::Error));
    let conv = |method: &str, arg: &str| {
        let (method, arg) = (Ident::new(method, vspan), Ident::new(arg, vspan));
        at(vspan, quote!(<#output as #cm::Fetched>::#method(#arg)))
    };
    let joined = conv("join", "__out");
    let updated = conv("updated", "__out");
    let peeked = conv("peeked", "__out");
    let promised = conv("promise", "__out");
    let multied = conv("multi", "__out");
    let value_ref = conv("value_ref", "__value");
    // The fetcher's output, named as those types: the runtime infers its
    // value type from here, never from the fetcher's own signature.
    let split = at(vspan, quote!(<#output as #cm::Fetched>::split));
    let split = at(vspan, quote!(#split(__fetch.await)));
    let fetch = |call: TokenStream| quote!({ let __fetch = #call; async move { #split } });
    let get_fetch = fetch(quote!(#fetcher(__ctx, #(#cloned),*)));
    let update_fetch = fetch(quote!(#fetcher(__ctx, #(#names),*)));
    let many_fetch = fetch(quote!(#fetcher(__ctx, #(#names),*)));
    let promise_ty = at(vspan, quote!(#cm::Promise<#dvalue_ty, #derror_ty>));
    let probe = at(vspan, quote!((&&#cm::ErrorProbe::<#error_ty>::NEW).sharing()));
    let update_ty = at(
        vspan,
        quote!(::core::result::Result<#dvalue_ty, #cm::UpdateError<#derror_ty>>),
    );
    let multi_ty = at(
        vspan,
        quote!(#cm::MultiResult<::core::result::Result<#dvalue_ty, #derror_ty>, #bundle_ty>),
    );
    let peek_ty = at(vspan, quote!(#cm::Result<::core::option::Option<#dvalue_ty>>));
    let client = at(context.span(), quote!(#cm::StoreContext::client(__ctx)));
    // How a failed fetch's error reaches the callers coalesced behind it
    // (cloned when the error type is `Clone + Send`), and whether values
    // can be kept decoded in process (the memory backend, a local tier:
    // when the value type is `Clone + Send + Sync + 'static`), by autoref
    // specialization. Expressions, not functions: a signature naming the
    // checked types would repeat their error at the attribute.
    let sharing = quote! {{
        #[allow(unused_imports)]
        use #cm::{ShareByClone as _, ShareNothing as _};
        #[allow(clippy::needless_borrow)]
        let __sharing = #probe;
        __sharing
    }};
    let keeping_probe = at(vspan, quote!((&&#cm::ValueProbe::<#value_ty>::NEW).keeping()));
    let keeping = quote! {{
        #[allow(unused_imports)]
        use #cm::{KeepByClone as _, KeepNothing as _};
        #[allow(clippy::needless_borrow)]
        let __keeping = #keeping_probe;
        __keeping
    }};
    // A local tier holds decoded values and clones them out: the value
    // type must allow it (checked where `local` is written).
    let local_check = s.local.as_ref().map(|local| {
        quote_spanned! {local.span=>
            const _: fn() = || {
                fn local_tier_values_must_be_clone_send_sync_and_static<
                    T: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
                >() {
                }
                local_tier_values_must_be_clone_send_sync_and_static::<#value_ty>();
            };
        }
    });
    // A hard timeout reaches the caller as the fetcher's own error:
    // `From<FetchTimeout>`, checked where `hard_timeout` is written.
    let on_timeout = fresh.hard_timeout.map(|(_, span)| {
        let from = at(
            span,
            quote!(<#derror_ty as ::core::convert::From<#cm::FetchTimeout>>::from),
        );
        quote!(.on_timeout(#from))
    });
    // A fetch that outlives its call (`soft_timeout`, `refresh_after`)
    // owns a clone of the context and of the parameters; what that needs
    // (a `Clone + Send + Sync + 'static` context, a `Send` fetch) is
    // checked where the option is written.
    let background = fresh.background().map(|span| {
        let owned = s.params.iter().map(|(name, ty)| {
            let clone = at(ty.span(), quote!(#cm::clone_param(&#name)));
            quote!(let #name = #clone;)
        });
        let new = at(span, quote!(#cm::Background::new));
        let clone_ctx = at(span, quote!(<#context as ::core::clone::Clone>::clone(__ctx)));
        quote! {
            .background(&|| {
                let __owned_ctx = #clone_ctx;
                #(#owned)*
                // Its value goes through `Fetched` as the fetcher's does.
                #new(move || async move {
                    let __fetch = #fetcher(&__owned_ctx, #(#names),*);
                    #split
                })
            })
        }
    });
    // Refresh-ahead of a store with `fetch_many`: due keys of one window
    // are refreshed by one call of the batch fetcher (owned context and
    // parameters, as above; the batch fetcher's type is checked at
    // `fetch_many = path` by `__fetchers`).
    let batch_refresh = match (&s.fetch_many, fresh.refresh_after) {
        (Some(path), Some((_, span))) if s.batch => {
            let new = at(span, quote!(#cm::BatchRefresh::new));
            let clone_ctx = at(span, quote!(<#context as ::core::clone::Clone>::clone(__ctx)));
            let clones: Vec<_> = s
                .params
                .iter()
                .map(|(name, ty)| at(ty.span(), quote!(#cm::clone_param(&#name))))
                .collect();
            let bundle = match clones.as_slice() {
                [one] => quote!(#one),
                _ => quote!((#(#clones,)*)),
            };
            let checked = at(
                vspan,
                quote!(|__value: #dvalue_ty| <#output as #cm::Fetched>::checked(__value)),
            );
            Some(quote! {
                .batch_refresh(&|| {
                    let __owned_ctx = #clone_ctx;
                    #new(
                        #bundle,
                        |#bundle_pat: &#bundle_ty| #store::key(#(#names),*),
                        #checked,
                        move |__params: ::std::vec::Vec<#bundle_ty>| {
                            let __ctx = ::core::clone::Clone::clone(&__owned_ctx);
                            async move { #path(&__ctx, __params).await }
                        },
                    )
                })
            })
        }
        _ => None,
    };
    let policy = quote!(#cm::FetchPolicy::none() #on_timeout #background #batch_refresh);
    // `none_ttl` caches a fetched `None`: the value must be an `Option`.
    let none_check = fresh.none_ttl.map(|(_, span)| {
        let check = at(span, quote!(none_ttl_needs_an_option_value::<#dvalue_ty>();));
        quote! {
            const _: fn() = || {
                fn none_ttl_needs_an_option_value<T: #cm::OptionValue>() {}
                #check
            };
        }
    });

    // The batch fetcher, bound to the context like the fetcher.
    let fetchers = quote! {
        #cm::Fetchers::new(
            |#bundle_pat: &#bundle_ty| #store::key(#(#names),*),
            move |#bundle_pat: #bundle_ty| #many_fetch,
        )
        .sharing(#sharing)
        .keeping(#keeping)
    };
    let fetchers = match &s.fetch_many {
        None => fetchers,
        Some(path) => {
            let with_many = at(path.span(), quote!(#cm::with_many));
            let checked = at(
                vspan,
                quote!(|__value: #dvalue_ty| <#output as #cm::Fetched>::checked(__value)),
            );
            // The call's own tokens are all at the path (its first and last
            // tokens make its span): a batch fetcher or error type that does
            // not fit is reported at `fetch_many = path`.
            quote_spanned! {path.span()=>
                {
                    let __fetchers = #fetchers;
                    #with_many(__fetchers, #checked, move |__params: ::std::vec::Vec<#bundle_ty>| #path(__ctx, __params))
                }
            }
        }
    };

    let doc_store = format!(
        "Cache store of [`{fetcher_name}`]: key `{key_source}`, TTL {}.\n\n\
         Generated by `#[cache_store]`: `get`, {}`update`, `invalidate`, `invalidate_all`.",
        human_ms(s.ttl_ms),
        if s.batch { "`get_m`, `get_p`, " } else { "" }
    );
    let doc_multi = format!("Multi-getter of [`{store_name}`]: `add` (or `push`) keys, then `run` once.");

    // Batching keeps parameters past the call (`get_m`'s list, a
    // pipeline's groups), so it needs owned ones: a store with a borrowed
    // parameter (`name: &str`) has `get`, `invalidate`, `update` and `key`
    // only (`valid` refuses `fetch_many` on it, at the parameter).
    let batching = if !s.batch {
        quote! {
            // Types spelled at the user's return type, for its error messages.
            #[allow(clippy::type_complexity)]
            impl #store {
                /// None: the store does not batch (`batch = false`, or a
                /// borrowed key parameter); calling this is an error that
                /// says so.
                #[doc(hidden)]
                #vis fn get_m<C: ?::core::marker::Sized + #cm::Unbatchable<Self>>(_: &C) -> ::core::convert::Infallible {
                    ::core::unreachable!()
                }
            }
        }
    } else {
        quote! {
            // Types spelled at the user's return type, for its error messages.
            #[allow(clippy::type_complexity)]
            impl #store {
            /// Starts a multi-get: `add` (or `push`) keys, then `run` once.
            #vis fn get_m(__ctx: &#context) -> #multi<'_> {
                #multi { ctx: __ctx, params: ::std::vec::Vec::new() }
            }

            /// Adds these parameters to `pipeline` and returns their
            /// promise, resolved (with the other stores' promises) by
            /// `pipeline.execute()`.
            #vis fn get_p<'p>(
                __ctx: &'p #context,
                __pipeline: &mut #cm::Pipeline<'p>,
                #(#names: #types),*
            ) -> #promise_ty {
                let __out = __pipeline.add(
                    __ctx,
                    #client,
                    Self::SPEC,
                    #bundle_pat,
                    || #fetchers,
                );
                #promised
            }

            }

        #[doc = #doc_multi]
        #vis struct #multi<'a> {
            ctx: &'a #context,
            params: ::std::vec::Vec<#bundle_ty>,
        }

        // Types spelled at the user's return type, for its error messages.
        #[allow(clippy::type_complexity)]
        impl<'a> #multi<'a> {
            /// Adds a key (duplicates are read and fetched once) and
            /// returns the multi-getter, to chain
            /// (`get_m(ctx).add(1).add(2)`) or to reassign
            /// (`batch = batch.add(id)`). In place, in a loop: `push`, or
            /// `extend`.
            #[must_use = "`add` returns the multi-getter with the key added; to add in place, use `push`"]
            #vis fn add(mut self, #(#names: #types),*) -> Self {
                self.params.push(#bundle_pat);
                self
            }

            /// Adds a key in place (duplicates are read and fetched
            /// once): `for id in ids { multi.push(id); }`.
            #vis fn push(&mut self, #(#names: #types),*) {
                self.params.push(#bundle_pat);
            }

            /// Reads every added key in one round trip, locks and fetches
            /// the misses together (the store's `fetch_many` once, if it
            /// has one) and writes them in one more. The added keys are
            /// consumed, so the multi-getter can be filled and run again.
            ///
            /// Each key has its own outcome (a failing key does not fail
            /// the others); `into_all()` gives every value or the first
            /// error.
            #vis async fn run(&mut self) -> #multi_ty {
                let __ctx: &#context = self.ctx;
                let __out = #cm::get_many(
                    #client,
                    #store::SPEC,
                    ::core::mem::take(&mut self.params),
                    #fetchers,
                )
                .await;
                #multied
            }
        }


            impl<'a> ::core::iter::Extend<#bundle_ty> for #multi<'a> {
                /// Adds every key of `keys`: `multi.extend(ids)`.
                fn extend<I: ::core::iter::IntoIterator<Item = #bundle_ty>>(&mut self, keys: I) {
                    self.params.extend(keys);
                }
            }
        }
    };

    quote! {
        #item

        #local_check
        #none_check

        #[doc = #doc_store]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #store;

        // Types spelled at the user's return type, for its error messages.
        #[allow(clippy::type_complexity)]
        impl #store {
            /// Everything the runtime knows about this store: a reference
            /// to one `static`, so every use sees the same address.
            pub const SPEC: &'static #cm::StoreSpec = {
                static SPEC: #cm::StoreSpec = #cm::StoreSpec::new(
                    #store_name,
                    #cm::KeyTemplate { source: #key_source, parts: &[#(#parts),*] },
                    #cm::Duration::from_millis(#ttl),
                )
                .version(#version)
                .ttl_jitter(#ttl_jitter)
                .singleflight(#singleflight)
                .codec(#codec)
                .lock_ttl(#lock_ttl)
                .local(#local)
                .local_off(#local_off)
                .keeps_values(|| #keeping.keeps())
                .stale_for(#stale_for)
                .fail_safe_throttle(#fail_safe_throttle)
                .soft_timeout(#soft_timeout)
                .hard_timeout(#hard_timeout)
                .refresh_after(#refresh_after)
                .none_ttl(#none_ttl)
                .ttl_from(#ttl_from)
                .declared_at(
                    ::core::concat!(::core::module_path!(), "::", #fetcher_name),
                    ::core::file!(),
                    ::core::line!(),
                );
                &SPEC
            };

            /// The cache key of these parameters (the backend adds its prefix).
            #vis fn key(#(#names: &#types),*) -> ::std::string::String {
                Self::__key(#(#names),*).into_string()
            }

            /// The key, written on the stack while it is short.
            #[doc(hidden)]
            #[inline]
            fn __key(#(#names: &#types),*) -> #cm::KeyBuf {
                let mut __key = #cm::KeyBuf::new();
                #(#pushes)*
                Self::SPEC.version.push_suffix(&mut __key);
                __key
            }

            /// The cached value, or the fetcher's (then cached). Cache
            /// failures fall back to the fetcher and are logged.
            #vis async fn get(__ctx: &#context, #(#names: #types),*) -> #output {
                let __key = Self::__key(#(&#names),*);
                let __out = #cm::get(#client, Self::SPEC, &__key, || #get_fetch, #sharing, #keeping, #policy).await;
                #joined
            }

            /// Removes the cached value of these parameters.
            #vis async fn invalidate(__ctx: &#context, #(#names: #types),*) -> #cm::Result<()> {
                #cm::invalidate(#client, Self::SPEC, &Self::__key(#(&#names),*)).await
            }

            /// Fetches afresh and replaces the cached value.
            #vis async fn update(
                __ctx: &#context,
                #(#names: #types),*
            ) -> #update_ty {
                let __key = Self::__key(#(&#names),*);
                let __out = #cm::update(#client, Self::SPEC, &__key, #update_fetch).await;
                #updated
            }

            /// Writes `value` as the cached value of these parameters (a
            /// value the caller already has, after a database write), with
            /// the store's TTL. Fenced as `update` is: a fetch in flight
            /// for this key does not land over it, and no get that starts
            /// afterwards, in this process or another, sees the old value.
            #vis async fn set(
                __ctx: &#context,
                #(#names: #types,)*
                __value: &#dvalue_ty,
            ) -> #cm::Result<()> {
                #cm::set(#client, Self::SPEC, &Self::__key(#(&#names),*), #value_ref).await
            }

            /// The cached value of these parameters, if there is one,
            /// without fetching. A stored value that no longer decodes is
            /// reported and peeked as `None`; a cache failure is an error.
            #vis async fn peek(__ctx: &#context, #(#names: #types),*) -> #peek_ty {
                let __out = #cm::peek(#client, Self::SPEC, &Self::__key(#(&#names),*), #keeping).await;
                #peeked
            }

            /// Removes every cached value of this store written with
            /// `version`; returns how many were removed.
            #vis async fn invalidate_all(
                __ctx: &#context,
                version: impl ::core::fmt::Display,
            ) -> #cm::Result<::core::primitive::u64> {
                #cm::invalidate_all(#client, Self::SPEC, &::std::string::ToString::to_string(&version)).await
            }
        }

        const _: () = {
            #[#cm::linkme::distributed_slice(#cm::STORES)]
            #[linkme(crate = #cm::linkme)]
            static __CACHEME_STORE: &'static #cm::StoreSpec = #store::SPEC;
        };

        #batching
    }
}

/// `tokens` with every span set to `span`, so an error anywhere in them
/// points at the user's tokens rather than at the attribute.
fn at(span: Span, tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner = Group::new(group.delimiter(), at(span, group.stream()));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// Where the value type is written: the first type argument of the
/// return type (`Book` in `Result<Book, AppError>` or `AppResult<Book>`),
/// else the whole return type.
fn value_span(output: &syn::Type) -> Span {
    if let syn::Type::Path(path) = output
        && let Some(last) = path.path.segments.last()
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(value) = args.args.iter().find_map(|arg| match arg {
            syn::GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
    {
        return value.span();
    }
    output.span()
}

fn human_ms(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// Whether `ty` is written as one of Rust's integer types (`u64`, `i32`,
/// ...): its key part can be written by the integer fast path.
fn is_primitive_integer(ty: &syn::Type) -> bool {
    const INTEGERS: [&str; 12] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    ];
    match ty {
        syn::Type::Path(path) if path.qself.is_none() => path
            .path
            .get_ident()
            .is_some_and(|ident| INTEGERS.iter().any(|name| ident == name)),
        syn::Type::Group(group) => is_primitive_integer(&group.elem),
        syn::Type::Paren(paren) => is_primitive_integer(&paren.elem),
        _ => false,
    }
}

/// Whether `ty` is written as `String` or `&str`: its key part can be
/// escaped without `fmt`.
fn is_string(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(path) if path.qself.is_none() => path.path.get_ident().is_some_and(|ident| ident == "String"),
        syn::Type::Reference(reference) if reference.mutability.is_none() => matches!(
            &*reference.elem,
            syn::Type::Path(path) if path.qself.is_none() && path.path.get_ident().is_some_and(|ident| ident == "str")
        ),
        syn::Type::Group(group) => is_string(&group.elem),
        syn::Type::Paren(paren) => is_string(&paren.elem),
        _ => false,
    }
}
