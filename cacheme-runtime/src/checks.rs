//! What a `#[cache_store]` declaration requires of the user's types, as
//! traits the generated code goes through (spanned at the user's tokens),
//! each with a `#[diagnostic::on_unimplemented]` message that names the
//! requirement and why it exists. A type that falls short is one error at
//! the value type, the parameter or the context, not a cascade inside the
//! runtime. Every trait is implemented for every type that meets the
//! requirement; none adds one.

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, Context};
use crate::key::{KeyBuf, push_param};
use crate::pipeline::{Fetchers, Promise};
use crate::store::{FetchResult, MultiResult, UpdateError};

/// A value a store can cache: encoded on the way in, decoded on the way out.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a cached value: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the value this fetcher returns is cached, so it is encoded and decoded",
    note = "derive both: `#[derive(serde::Serialize, serde::Deserialize)]` (a value that borrows, `Deserialize<'a>`, cannot be cached)"
)]
pub trait CacheValue: Serialize + DeserializeOwned {}

// Not recommended: rustc then reports the missing `CacheValue` (with its
// message) once, rather than each missing serde trait on its own.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> CacheValue for T {}

/// The value and error types of a fetcher's `Result`, the value checked
/// to be cacheable: generated code hands the runtime these types (the
/// fetcher's output goes through [`Fetched::split`]), so a value that
/// cannot be cached is reported once, at the return type.
///
/// Why once: the only other impl, for `NotFetched` types, never
/// applies, but its presence makes rustc check the `Result` impl's bound
/// while choosing the impl. A value that is not cacheable then leaves no
/// impl, so every mention of `<Output as Fetched>::Value` is the same
/// error at the same span (rustc shows it once) and stands for an unknown
/// type that the runtime's own bounds are not reported against. The
/// store's public signatures name the unchecked [`FetchResult`] types
/// (the methods below convert), so its callers add no error either.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a cache_store fetcher's return type: it must be a `Result` whose value implements `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "this value is cached, so it is encoded and decoded: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    note = "derive both for the value: `#[derive(serde::Serialize, serde::Deserialize)]` (a value that borrows, `Deserialize<'a>`, cannot be cached)"
)]
pub trait Fetched: FetchResult {
    /// The cached value.
    type Value: CacheValue;
    /// The fetcher's error.
    type Error;

    /// The fetcher's output as the checked types.
    fn split(self) -> Result<<Self as Fetched>::Value, <Self as Fetched>::Error>;

    /// A `get`'s outcome as the fetcher's output type.
    fn join(outcome: Result<<Self as Fetched>::Value, <Self as Fetched>::Error>) -> Self;

    /// An `update`'s outcome as the declared types.
    #[allow(clippy::type_complexity)]
    fn updated(
        outcome: Result<<Self as Fetched>::Value, UpdateError<<Self as Fetched>::Error>>,
    ) -> Result<<Self as FetchResult>::Value, UpdateError<<Self as FetchResult>::Error>>;

    /// A `peek`'s outcome as the declared value type.
    fn peeked(
        outcome: crate::Result<Option<<Self as Fetched>::Value>>,
    ) -> crate::Result<Option<<Self as FetchResult>::Value>>;

    /// A declared value as the checked value type (a batch fetcher's).
    fn checked(value: <Self as FetchResult>::Value) -> <Self as Fetched>::Value;

    /// A checked value as the declared value type (for `ttl_from`).
    fn declared_ref(value: &<Self as Fetched>::Value) -> &<Self as FetchResult>::Value;

    /// A declared value as the checked value type.
    fn value_ref(value: &<Self as FetchResult>::Value) -> &<Self as Fetched>::Value;

    /// A promise of the checked types as one of the declared types.
    fn promise(
        promise: Promise<<Self as Fetched>::Value, <Self as Fetched>::Error>,
    ) -> Promise<<Self as FetchResult>::Value, <Self as FetchResult>::Error>;

    /// Multi-get results of the checked types as ones of the declared types.
    #[allow(clippy::type_complexity)]
    fn multi<P>(
        results: MultiResult<Result<<Self as Fetched>::Value, <Self as Fetched>::Error>, P>,
    ) -> MultiResult<Result<<Self as FetchResult>::Value, <Self as FetchResult>::Error>, P>;
}

impl<V: CacheValue, E> Fetched for Result<V, E> {
    type Value = V;
    type Error = E;

    #[inline]
    fn split(self) -> Self {
        self
    }

    #[inline]
    fn join(outcome: Self) -> Self {
        outcome
    }

    #[inline]
    fn updated(outcome: Result<V, UpdateError<E>>) -> Result<V, UpdateError<E>> {
        outcome
    }

    #[inline]
    fn peeked(outcome: crate::Result<Option<V>>) -> crate::Result<Option<V>> {
        outcome
    }

    #[inline]
    fn checked(value: V) -> V {
        value
    }

    #[inline]
    fn declared_ref(value: &V) -> &V {
        value
    }

    #[inline]
    fn value_ref(value: &V) -> &V {
        value
    }

    #[inline]
    fn promise(promise: Promise<V, E>) -> Promise<V, E> {
        promise
    }

    #[inline]
    fn multi<P>(results: MultiResult<Self, P>) -> MultiResult<Self, P> {
        results
    }
}

/// Never implemented: the second impl of [`Fetched`], so that rustc
/// checks the first one's bound while choosing.
pub trait NotFetched {}

// Never applies (nothing implements `NotFetched`): its methods are never
// called.
#[diagnostic::do_not_recommend]
impl<T: NotFetched + FetchResult> Fetched for T {
    type Value = ();
    type Error = ();

    fn split(self) -> Result<(), ()> {
        unreachable!("NotFetched has no impl")
    }

    fn join(_: Result<(), ()>) -> Self {
        unreachable!("NotFetched has no impl")
    }

    fn updated(_: Result<(), UpdateError<()>>) -> Result<T::Value, UpdateError<T::Error>> {
        unreachable!("NotFetched has no impl")
    }

    fn peeked(_: crate::Result<Option<()>>) -> crate::Result<Option<T::Value>> {
        unreachable!("NotFetched has no impl")
    }

    fn checked(_: T::Value) {
        unreachable!("NotFetched has no impl")
    }

    fn declared_ref(_: &()) -> &T::Value {
        unreachable!("NotFetched has no impl")
    }

    fn value_ref(_: &T::Value) -> &() {
        &()
    }

    fn promise(_: Promise<(), ()>) -> Promise<T::Value, T::Error> {
        unreachable!("NotFetched has no impl")
    }

    fn multi<P>(_: MultiResult<Result<(), ()>, P>) -> MultiResult<Result<T::Value, T::Error>, P> {
        unreachable!("NotFetched has no impl")
    }
}

/// The fetcher's first parameter: what hands the stores their client.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a store's context: it must implement `cacheme::Context`",
    label = "the context of this fetcher",
    note = "implement it to hand out the client: `impl cacheme::Context for {Self} {{ fn cacheme(&self) -> &cacheme::Client {{ &self.cache }} }}`"
)]
pub trait StoreContext {
    /// The client of this context.
    fn client(&self) -> &Client;
}

impl<T: Context + ?Sized> StoreContext for T {
    #[inline]
    fn client(&self) -> &Client {
        self.cacheme()
    }
}

/// A key parameter: written into the key with `Display`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a key parameter: it must implement `std::fmt::Display`",
    label = "written into the cache key with `Display`",
    note = "implement `Display` (the key must tell different values apart), or take a parameter that has it"
)]
pub trait KeyParam {
    /// Appends this parameter, escaped, to `key`.
    fn push_to(&self, key: &mut KeyBuf);
}

impl<T: Display + ?Sized> KeyParam for T {
    #[inline]
    fn push_to(&self, key: &mut KeyBuf) {
        push_param(key, self);
    }
}

/// A key parameter `get` hands on to the fetcher while keeping its own.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a key parameter: it must implement `Clone`",
    label = "cloned: `get` may call the fetcher more than once with it",
    note = "derive it: `#[derive(Clone)]`"
)]
pub trait ParamClone: Clone {}

impl<T: Clone> ParamClone for T {}

/// Clones a key parameter for the fetcher (through [`ParamClone`], for its
/// message).
#[inline]
pub fn clone_param<T: ParamClone>(param: &T) -> T {
    param.clone()
}

/// The error of a store with `fetch_many`: one batch fetch's error is
/// handed to every key of the batch.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Clone` to be the error of a store with `fetch_many`",
    label = "this batch fetcher's error goes to every key of its batch, so it is cloned",
    note = "derive it (`#[derive(Clone)]`), wrap it in an `Arc`, or drop `fetch_many`"
)]
pub trait BatchError: Clone {}

impl<E: Clone> BatchError for E {}

/// [`Fetchers::many`] with its error requirement stated as [`BatchError`];
/// `checked` turns each value found (declared type `D`) into the checked
/// value type (see [`Fetched::checked`]).
pub fn with_many<'a, P, V, E, F, Fut, I, D, C>(
    fetchers: Fetchers<'a, P, V, E>,
    checked: C,
    many: F,
) -> Fetchers<'a, P, V, E>
where
    E: BatchError,
    C: Fn(D) -> V + Copy + Send + Sync + 'a,
    F: Fn(Vec<P>) -> Fut + Send + Sync + 'a,
    Fut: Future<Output = Result<I, E>> + Send + 'a,
    I: IntoIterator<Item = (P, D)>,
{
    fetchers.many(move |params| {
        let found = many(params);
        async move {
            let found = found.await?;
            Ok(found.into_iter().map(move |(params, value)| (params, checked(value))))
        }
    })
}

/// Never implemented: the bound of the `get_m` of a store that does not
/// batch (`batch = false`, or a borrowed key parameter), so calling it is
/// one error saying why there is none.
#[diagnostic::on_unimplemented(
    message = "`{S}` has no `get_m`: it does not batch (`batch = false`, or a borrowed key parameter)",
    label = "batching keeps the parameters past this call",
    note = "remove `batch = false`, and take owned parameters (`String`, not `&str`), to get `get_m` and `get_p`"
)]
pub trait Unbatchable<S> {}
