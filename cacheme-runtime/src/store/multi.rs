//! `get_m`: many keys of one store in one call, through the batch path of
//! pipelines (see [`pipeline`](crate::pipeline)): duplicate keys are read
//! and fetched once, every key is read in one round trip, the misses are
//! locked in one more, fetched with the store's `fetch_many` once (else
//! concurrently, one fetch per key) and written in one more. Keys another
//! task of this process is reading or loading (a concurrent `get_m` over
//! the same keys, in any order, or a `get`) are waited for, not read or
//! fetched again.
//!
//! Failure policy, as for `get`: when the cache cannot be read or locked,
//! `get_m` logs it and serves the source (nothing is cached). Each key has
//! its own outcome: a key whose fetch fails (a key `fetch_many` did not
//! return is fetched alone, and fails with the fetcher's error) is an
//! error for that key only; the others are served and cached.

use std::borrow::Borrow;
use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::observe::{self, Call};
use crate::pipeline::{self, Fetchers, Outcome, StoreGroup};
use crate::spec::StoreSpec;

/// The results of a store's `get_m`: one per key, in the order the keys
/// were added (duplicates included) and by parameters.
///
/// `get_m` gives a `MultiResult<Result<V, E>, P>`: each key has its own
/// outcome, so one missing or failing key does not fail the others.
/// [`into_all`](MultiResult::into_all) turns it into a `MultiResult<V, P>`
/// of values, or the first error in the order the keys were added.
/// `P` is the store's parameters: the one parameter's type, or a tuple of
/// them for several (`(u32, u64)`).
///
/// ```
/// use cacheme::{Client, cache_store};
///
/// #[cache_store(key = "shelf:<id>", ttl = "1m")]
/// async fn shelf_book(_: &Client, id: u64) -> Result<String, String> {
///     if id == 999 { Err(format!("no book {id}")) } else { Ok(format!("book {id}")) }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let client = Client::memory().unwrap();
/// let found = ShelfBookStore::get_m(&client).add(1).add(2).add(999).run().await;
/// assert!(found.get(&999).is_some_and(|outcome| outcome.is_err()));
/// let books: Vec<&String> = found.oks().collect(); // books 1 and 2
/// assert_eq!(books, ["book 1", "book 2"]);
/// let all = found.into_all(); // every book, or the first error
/// assert_eq!(all.unwrap_err(), "no book 999");
/// # });
/// ```
pub struct MultiResult<T, P> {
    outcomes: Vec<T>,
    order: Vec<usize>,
    index: HashMap<String, usize>,
    key_of: fn(&P) -> String,
}

impl<T, P> MultiResult<T, P> {
    /// The outcome for these parameters, if they were added.
    ///
    /// As `HashMap::get`, it takes any borrowed form of the parameters:
    /// a store keyed by one `String` is looked up with a `&str`; one
    /// keyed by several, with a reference to their tuple (each element
    /// its owned type: a tuple of borrows is not a borrowed tuple).
    ///
    /// ```
    /// use cacheme::{Client, cache_store};
    ///
    /// #[cache_store(key = "member:<name>", ttl = "1m")]
    /// async fn member(_: &Client, name: String) -> Result<usize, String> {
    ///     Ok(name.len())
    /// }
    ///
    /// #[cache_store(key = "edition:<category>:<id>", ttl = "1m")]
    /// async fn edition(_: &Client, category: u32, id: u64) -> Result<u64, String> {
    ///     Ok(u64::from(category) * id)
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = Client::memory().unwrap();
    /// let users = MemberStore::get_m(&client).add("ann".to_string()).add("bob".to_string()).run().await;
    /// assert_eq!(users.get("ann"), Some(&Ok(3)));
    /// assert_eq!(users.get("eve"), None);
    ///
    /// let books = EditionStore::get_m(&client).add(7, 42).run().await;
    /// assert_eq!(books.get(&(7, 42)), Some(&Ok(294)));
    /// # });
    /// ```
    pub fn get<Q>(&self, params: &Q) -> Option<&T>
    where
        P: Borrow<Q>,
        Q: ?Sized + ToOwned<Owned = P>,
    {
        // The key function takes the owned form; the lookup pays one copy
        // of the parameters, as building the key already allocates.
        let owned = params.to_owned();
        self.index.get(&(self.key_of)(&owned)).map(|&i| &self.outcomes[i])
    }

    /// The outcomes in the order their keys were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.order.iter().map(|&i| &self.outcomes[i])
    }

    /// How many keys were added (duplicates included).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// How many distinct keys there were.
    pub fn distinct(&self) -> usize {
        self.outcomes.len()
    }
}

impl<V, E, P> MultiResult<Result<V, E>, P> {
    /// Every value, or the first error in the order the keys were added
    /// (the all-or-nothing case).
    pub fn into_all(self) -> Result<MultiResult<V, P>, E> {
        let MultiResult {
            outcomes,
            order,
            index,
            key_of,
        } = self;
        let mut outcomes = outcomes;
        // The first failing key in added order, as the caller reads them.
        if let Some(first) = order.iter().copied().find(|&i| outcomes[i].is_err())
            && let Err(error) = outcomes.swap_remove(first)
        {
            return Err(error);
        }
        // Every outcome is a value: their indices are unchanged.
        let outcomes = outcomes.into_iter().filter_map(Result::ok).collect();
        Ok(MultiResult {
            outcomes,
            order,
            index,
            key_of,
        })
    }

    /// The value for these parameters, if they were added and it was
    /// found; like [`get`](MultiResult::get), by any borrowed form.
    pub fn value<Q>(&self, params: &Q) -> Option<&V>
    where
        P: Borrow<Q>,
        Q: ?Sized + ToOwned<Owned = P>,
    {
        self.get(params)?.as_ref().ok()
    }

    /// The values found, in the order their keys were added.
    pub fn oks(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().filter_map(|outcome| outcome.as_ref().ok())
    }

    /// The errors, in the order their keys were added.
    pub fn errs(&self) -> impl Iterator<Item = &E> + '_ {
        self.iter().filter_map(|outcome| outcome.as_ref().err())
    }

    /// Whether every key has a value.
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(Result::is_ok)
    }
}

impl<T: std::fmt::Debug, P> std::fmt::Debug for MultiResult<T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Runs a store's `get_m` over `params`.
pub async fn get_many<'a, V, E, P>(
    client: &Client,
    spec: &'static StoreSpec,
    params: Vec<P>,
    fetchers: Fetchers<'a, P, V, E>,
) -> MultiResult<Result<V, E>, P>
where
    V: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    // A call with a failed key is observed as failed (its span's `error`),
    // though the other keys have their values.
    let many = || async {
        let results = get_many_unobserved(client, spec, params, fetchers).await;
        if results.all_ok() { Ok(results) } else { Err(results) }
    };
    match observe::call(Some(client), Some(spec), Call::GetMany, many).await {
        Ok(results) | Err(results) => results,
    }
}

async fn get_many_unobserved<'a, V, E, P>(
    client: &Client,
    spec: &'static StoreSpec,
    params: Vec<P>,
    fetchers: Fetchers<'a, P, V, E>,
) -> MultiResult<Result<V, E>, P>
where
    V: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    let mut group = StoreGroup::new(spec, fetchers);
    let order: Vec<usize> = params.into_iter().map(|p| group.add(p)).collect();
    pipeline::run(client, &[&group]).await;
    // What the cache could not serve (it failed) comes from the source.
    let pending = group.pending();
    if !pending.is_empty() {
        let which: Vec<(usize, &str)> = pending.iter().map(|&i| (i, pipeline::Group::key(&group, i))).collect();
        let limit = tokio::sync::Semaphore::new(client.fetch_concurrency());
        pipeline::Group::fetch(&group, client, &limit, &which).await;
    }
    let key_of = group.key_of();
    let (outcomes, index) = group.into_outcomes();
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Value(value) => Ok(value),
            Outcome::Fetch(error) => Err(error),
            Outcome::Pending => unreachable!("every key of get_m is resolved or fetched"),
        })
        .collect();
    MultiResult {
        outcomes,
        order,
        index,
        key_of,
    }
}
