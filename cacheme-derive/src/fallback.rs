//! What the macro emits beside its errors: the store type with every
//! generated method's signature and an `unimplemented!()` body, so
//! `BookStore::get(..)` at call sites type-checks and the user sees the
//! declaration's mistakes only, not a cascade of "no function named `get`"
//! (thiserror's `fallback.rs` does the same for its impls).
//!
//! Everything is read leniently from what parsed; what cannot be known is
//! left out rather than guessed.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, Ident, ReturnType, Type};

use cacheme_macros_core::ast::{self, default_store_name};

/// The stub of the store `args` and `item` would have declared; nothing if
/// the item is not even a function.
pub fn stub(args: TokenStream, item: TokenStream) -> TokenStream {
    let Ok(fetcher) = ast::parse_fetcher(item) else {
        return TokenStream::new();
    };
    let args = ast::parse_args(args, &mut Vec::new());
    let sig = &fetcher.item.sig;
    let vis = &fetcher.item.vis;
    let store = args
        .name
        .as_ref()
        .and_then(|lit| lit.parse::<Ident>().ok())
        .unwrap_or_else(|| Ident::new(&default_store_name(&sig.ident), sig.ident.span()));
    let multi = format_ident!("{store}Multi");
    let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::cacheme));
    let cm = quote!(#krate::__private);

    let mut types = sig.inputs.iter().filter_map(|input| match input {
        FnArg::Typed(arg) => Some(&*arg.ty),
        FnArg::Receiver(_) => None,
    });
    let Some(ctx) = types.next() else {
        return quote!(#vis struct #store;);
    };
    let context = match ctx {
        Type::Reference(r) => &*r.elem,
        other => other,
    };
    let params: Vec<&Type> = types.collect();
    let output = match &sig.output {
        ReturnType::Type(_, ty) => quote!(#ty),
        ReturnType::Default => quote!(()),
    };
    let bundle = match params.as_slice() {
        [one] => quote!(#one),
        _ => quote!((#(#params,)*)),
    };
    let body = quote!(::core::unimplemented!("#[cache_store] failed; see its errors"));

    // Methods naming the value or error type exist only when the fetcher
    // returns a `Result`: otherwise that is the error already reported.
    let typed = returns_result(&sig.output).then(|| {
        let value = quote!(<#output as #cm::FetchResult>::Value);
        let error = quote!(<#output as #cm::FetchResult>::Error);
        quote! {
            #[allow(unused, clippy::all)]
            impl #store {
                pub async fn update(_: &#context, #(_: #params),*) -> ::core::result::Result<#value, #cm::UpdateError<#error>> { #body }
                pub async fn set(_: &#context, #(_: #params,)* _: &#value) -> #cm::Result<()> { #body }
                pub async fn peek(_: &#context, #(_: #params),*) -> #cm::Result<::core::option::Option<#value>> { #body }
                pub fn get_m(_: &#context) -> #multi { #multi }
                pub fn get_p<'p>(_: &'p #context, _: &mut #cm::Pipeline<'p>, #(_: #params),*) -> #cm::Promise<#value, #error> { #body }
            }
            #vis struct #multi;
            #[allow(unused, clippy::all)]
            impl #multi {
                pub fn add(self, #(_: #params),*) -> Self { self }
                pub fn push(&mut self, #(_: #params),*) {}
                pub async fn run(&mut self) -> #cm::MultiResult<::core::result::Result<#value, #error>, #bundle> { #body }
            }
        }
    });
    quote! {
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #store;

        #[allow(unused, clippy::all)]
        impl #store {
            pub fn key(#(_: &#params),*) -> ::std::string::String { #body }
            pub async fn get(_: &#context, #(_: #params),*) -> #output { #body }
            pub async fn invalidate(_: &#context, #(_: #params),*) -> #cm::Result<()> { #body }
            pub async fn invalidate_all(_: &#context, _: impl ::core::fmt::Display) -> #cm::Result<::core::primitive::u64> { #body }
        }
        #typed
    }
}

fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(path) => path
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident.to_string().ends_with("Result")),
            _ => false,
        },
        ReturnType::Default => false,
    }
}
