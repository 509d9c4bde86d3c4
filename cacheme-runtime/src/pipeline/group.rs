//! One store's share of a batch: its distinct keys, their parameters, the
//! fetchers, and what each key resolved to. The engine drives groups of
//! many stores through one [`Group`] trait object each, so a pipeline can
//! mix stores of different value, error and parameter types.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::backend::BoxFuture;
use crate::client::Client;
use crate::keeping::{Kept, ValueKeeping};
use crate::logger::EventKind;
use crate::observe;
use crate::pipeline::promise::{Cell, PromiseError};
use crate::sharing::{ErrorSharing, SharedError};
use crate::singleflight::LeaderGuard;
use crate::spec::StoreSpec;
use crate::stampede::renewer::Renewer;
use crate::stampede::waiter::Waiter;
use crate::store::{Stale, Ways, decode, encode, landed, load, tier, wait_then_load};

/// A store's single-key fetcher, bound to its context.
type FetchOne<'a, P, V, E> = Box<dyn Fn(P) -> BoxFuture<'a, Result<V, E>> + Send + Sync + 'a>;

/// A store's batch fetcher, bound to its context: the values of the keys
/// it found, each with its parameters.
type FetchMany<'a, P, V, E> = Box<dyn Fn(Vec<P>) -> BoxFuture<'a, Result<Vec<(P, V)>, E>> + Send + Sync + 'a>;

/// A pipeline's parameters and promise cell, before they meet their group.
pub(crate) type AnyPair = (Box<dyn Any>, Box<dyn Any>);

/// How a store's values are fetched, as generated code hands them over:
/// its key function, its fetcher and, optionally, its batch fetcher.
pub struct Fetchers<'a, P, V, E> {
    key_of: fn(&P) -> String,
    one: FetchOne<'a, P, V, E>,
    many: Option<Many<'a, P, V, E>>,
    sharing: ErrorSharing<E>,
    keeping: ValueKeeping<V>,
}

/// A batch fetcher and how to hand its error to every key of the batch.
struct Many<'a, P, V, E> {
    fetch: FetchMany<'a, P, V, E>,
    clone_error: fn(&E) -> E,
}

impl<'a, P, V, E> Fetchers<'a, P, V, E> {
    /// The store's key function and single-key fetcher.
    pub fn new<F, Fut>(key_of: fn(&P) -> String, one: F) -> Self
    where
        F: Fn(P) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<V, E>> + Send + 'a,
    {
        Fetchers {
            key_of,
            one: Box::new(move |p| Box::pin(one(p))),
            many: None,
            sharing: ErrorSharing::none(),
            keeping: ValueKeeping::none(),
        }
    }

    /// How a failed fetch's error reaches callers coalesced behind it
    /// (chosen by generated code for the store's error type).
    pub fn sharing(mut self, sharing: ErrorSharing<E>) -> Self {
        self.sharing = sharing;
        self
    }

    /// How the store's values are kept decoded in process (chosen by
    /// generated code for the store's value type): with it, keys the
    /// store's local tier holds fresh are served from it, values read or
    /// fetched are held there, and a key added twice to a pipeline is
    /// cloned rather than decoded again.
    pub fn keeping(mut self, keeping: ValueKeeping<V>) -> Self {
        self.keeping = keeping;
        self
    }

    /// Adds the store's batch fetcher (`fetch_many`): given the parameters
    /// of every missed key, it returns the values it found, each with its
    /// parameters. Its error is handed to every key of the batch, hence
    /// `E: Clone`.
    pub fn many<F, Fut, I>(mut self, many: F) -> Self
    where
        F: Fn(Vec<P>) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<I, E>> + Send + 'a,
        I: IntoIterator<Item = (P, V)>,
        E: Clone,
    {
        self.many = Some(Many {
            fetch: Box::new(move |ps| {
                let fut = many(ps);
                Box::pin(async move { fut.await.map(|found| found.into_iter().collect()) })
            }),
            clone_error: E::clone,
        });
        self
    }
}

/// How the fetch of one key ended, for its lock and its flight.
pub(crate) enum Fetched {
    /// Fetched; its encoding (`None` if it did not encode).
    Value(Option<Arc<[u8]>>),
    /// The fetch failed; its error, if it can be shared.
    Failed(Option<SharedError>),
}

impl Fetched {
    /// The encoding to store, if any.
    pub(crate) fn bytes(&self) -> Option<&Arc<[u8]>> {
        match self {
            Fetched::Value(bytes) => bytes.as_ref(),
            Fetched::Failed(_) => None,
        }
    }
}

/// What one key of a group resolved to.
pub(crate) enum Outcome<V, E> {
    /// Not resolved (yet).
    Pending,
    /// Read from the cache, handed over, or fetched.
    Value(V),
    /// The fetcher's error for this key.
    Fetch(E),
}

/// One store's keys in a batch, as the engine sees them.
pub(crate) trait Group<'a>: Send + Sync {
    /// The store.
    fn spec(&self) -> &'static StoreSpec;

    /// How many distinct keys.
    fn len(&self) -> usize;

    /// The store key of entry `i` (without generation or prefix).
    fn key(&self, i: usize) -> &str;

    /// Resolves entry `i` (cache key `key`) from the store's local tier,
    /// if it has one and holds the value fresh; `false` otherwise. As the
    /// batch's reads of the cache, a value due for refresh-ahead is served
    /// without one.
    fn serve_local(&self, client: &Client, i: usize, key: &str) -> bool;

    /// Holds entry `i`'s value, read or fetched under `flight` and stored
    /// as `bytes`, in the store's local tier (see [`tier::keep`]).
    fn keep_local(&self, client: &Client, flight: &LeaderGuard<'_>, i: usize, key: &str, bytes: &[u8]);

    /// Resolves entry `i` from cached bytes (`hit`) or bytes handed over
    /// by another caller's flight, with its decoded value if it kept one
    /// (`decoded`, cloned rather than the bytes decoded); `false` when
    /// they do not decode (a miss).
    fn accept(&self, client: &Client, i: usize, key: &str, bytes: &[u8], decoded: Option<&Kept>, hit: bool) -> bool;

    /// Fetches the entries `which` (`(entry, cache key)`): the batch
    /// fetcher once if the store has one, else one fetch per key,
    /// concurrently but each holding a permit of `limit`. Resolves each and
    /// returns how each ended, in order.
    fn fetch<'f>(
        &'f self,
        client: &'f Client,
        limit: &'f Semaphore,
        which: &'f [(usize, &'f str)],
    ) -> BoxFuture<'f, Vec<Fetched>>;

    /// Entry `i` lost its lock to another fetch: waits for it as a single
    /// get does (the stampede protocol from its waiting step). A fetch of
    /// its own holds a permit of `limit`.
    fn wait_lost<'f>(
        &'f self,
        client: &'f Client,
        renewer: &'f Renewer,
        limit: &'f Semaphore,
        i: usize,
        key: &'f str,
    ) -> BoxFuture<'f, Fetched>;

    /// Resolves entry `i` with the error another task's fetch of its key
    /// shared; `false` when it is not this store's error type.
    fn fail_with(&self, i: usize, error: &SharedError) -> bool;

    /// Resolves entry `i` through the whole single-key miss path
    /// (singleflight, then the stampede protocol); a fetch holds a permit
    /// of `limit`.
    fn load<'f>(&'f self, client: &'f Client, limit: &'f Semaphore, i: usize, key: &'f str) -> BoxFuture<'f, ()>;

    /// [`load`](Group::load) entry `i`, whose value was read past its TTL
    /// as `stale` (`stale_for`): served if its refetch fails.
    fn load_stale<'f>(
        &'f self,
        client: &'f Client,
        limit: &'f Semaphore,
        i: usize,
        key: &'f str,
        stale: Vec<u8>,
    ) -> BoxFuture<'f, ()>;

    /// For pipelines: adds `params` (a `P`) and a promise cell (an
    /// `Arc<Cell<V, E>>`); gives them back if they are not this group's
    /// types.
    fn add_any(&mut self, params: Box<dyn Any>, cell: Box<dyn Any>) -> Result<(), AnyPair>;

    /// For pipelines: hands every entry's outcome to its promises (those
    /// left unresolved, by a cancelled run, report `NotExecuted`).
    fn deliver<'f>(&'f mut self, client: &'f Client) -> BoxFuture<'f, ()>;
}

/// One distinct key of a group.
struct Entry<P> {
    key: String,
    params: P,
}

/// The [`Group`] of one store with values `V`, errors `E`, parameters `P`.
pub(crate) struct StoreGroup<'a, P, V, E> {
    spec: &'static StoreSpec,
    fetchers: Fetchers<'a, P, V, E>,
    entries: Vec<Entry<P>>,
    index: HashMap<String, usize>,
    outcomes: Mutex<Vec<Outcome<V, E>>>,
    /// Per entry, the promises waiting for it (pipelines only). The
    /// first gets the outcome; the others a decoding of its bytes.
    promises: Vec<Vec<Arc<Cell<V, E>>>>,
    /// The encoding of entries with more than one promise, once known.
    bytes: Mutex<HashMap<usize, Arc<[u8]>>>,
}

impl<'a, P, V, E> StoreGroup<'a, P, V, E>
where
    P: Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
{
    pub(crate) fn new(spec: &'static StoreSpec, fetchers: Fetchers<'a, P, V, E>) -> Self {
        StoreGroup {
            spec,
            fetchers,
            entries: Vec::new(),
            index: HashMap::new(),
            outcomes: Mutex::new(Vec::new()),
            promises: Vec::new(),
            bytes: Mutex::default(),
        }
    }

    /// Adds `params` unless its key is there already; returns the entry.
    pub(crate) fn add(&mut self, params: P) -> usize {
        let key = (self.fetchers.key_of)(&params);
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.entries.len();
        self.index.insert(key.clone(), i);
        self.entries.push(Entry { key, params });
        lock(&self.outcomes).push(Outcome::Pending);
        self.promises.push(Vec::new());
        i
    }

    /// The key function (`get_m` indexes its results by it).
    pub(crate) fn key_of(&self) -> fn(&P) -> String {
        self.fetchers.key_of
    }

    /// Entries not resolved yet.
    pub(crate) fn pending(&self) -> Vec<usize> {
        lock(&self.outcomes)
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Outcome::Pending))
            .map(|(i, _)| i)
            .collect()
    }

    /// Every entry's outcome and the key index, consuming the group.
    pub(crate) fn into_outcomes(self) -> (Vec<Outcome<V, E>>, HashMap<String, usize>) {
        let outcomes = self.outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
        (outcomes, self.index)
    }

    fn resolve(&self, i: usize, outcome: Outcome<V, E>) {
        lock(&self.outcomes)[i] = outcome;
    }

    fn keep_bytes(&self, i: usize, bytes: &Arc<[u8]>) {
        if self.promises[i].len() > 1 {
            lock(&self.bytes).insert(i, Arc::clone(bytes));
        }
    }

    fn fetch_one(&self, i: usize) -> BoxFuture<'a, Result<V, E>> {
        (self.fetchers.one)(self.entries[i].params.clone())
    }

    /// [`fetch_one`](Self::fetch_one) once a permit of `limit` is free: the
    /// fetcher is not even called before (the batch's bound on fetches in
    /// flight, [`ClientBuilder::fetch_concurrency`](crate::ClientBuilder::fetch_concurrency)).
    async fn fetch_limited(&self, limit: &Semaphore, i: usize) -> Result<V, E> {
        // The batch owns the semaphore and never closes it.
        let _permit = limit.acquire().await.ok();
        self.fetch_one(i).await
    }

    /// The batch fetcher's results for `which`, or `None` without one.
    async fn fetch_batch(&self, limit: &Semaphore, which: &[(usize, &str)]) -> Option<Vec<Result<V, E>>> {
        let many = self.fetchers.many.as_ref()?;
        let params = which.iter().map(|&(i, _)| self.entries[i].params.clone()).collect();
        let found = match (many.fetch)(params).await {
            Ok(found) => found,
            Err(error) => return Some(which.iter().map(|_| Err((many.clone_error)(&error))).collect()),
        };
        let mut by_key: HashMap<String, V> = found
            .into_iter()
            .map(|(p, v)| ((self.fetchers.key_of)(&p), v))
            .collect();
        let mut out: Vec<Option<Result<V, E>>> = which
            .iter()
            .map(|&(i, _)| by_key.remove(&self.entries[i].key).map(Ok))
            .collect();
        // Keys the batch did not return are fetched one by one, so their
        // error (not found, ...) is the one the store's fetcher gives.
        let missing: Vec<usize> = (0..which.len()).filter(|&n| out[n].is_none()).collect();
        let fetched = join_all(missing.iter().map(|&n| self.fetch_limited(limit, which[n].0))).await;
        for (n, result) in missing.into_iter().zip(fetched) {
            out[n] = Some(result);
        }
        Some(out.into_iter().flatten().collect())
    }
}

impl<'a, P, V, E> Group<'a> for StoreGroup<'a, P, V, E>
where
    P: Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
{
    fn spec(&self) -> &'static StoreSpec {
        self.spec
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn key(&self, i: usize) -> &str {
        &self.entries[i].key
    }

    fn serve_local(&self, client: &Client, i: usize, key: &str) -> bool {
        let keeping = self.fetchers.keeping;
        if !keeping.keeps() || !client.local().has(self.spec) {
            return false;
        }
        let Some(held) = client.local().get(self.spec, key) else {
            return false;
        };
        if tier::age_of(client, &held).is_none() {
            return false;
        }
        let Some(value) = keeping.take(&held.value) else {
            return false;
        };
        client.log(EventKind::LocalHit, self.spec, key, None);
        self.resolve(i, Outcome::Value(value));
        true
    }

    fn keep_local(&self, client: &Client, flight: &LeaderGuard<'_>, i: usize, key: &str, bytes: &[u8]) {
        tier::keep(client, self.spec, flight, key, bytes, || {
            match &lock(&self.outcomes)[i] {
                Outcome::Value(value) => self.fetchers.keeping.keep(value),
                _ => None,
            }
        });
    }

    fn accept(&self, client: &Client, i: usize, key: &str, bytes: &[u8], decoded: Option<&Kept>, hit: bool) -> bool {
        let keeping = self.fetchers.keeping;
        let Some(value) = landed::<V>(client, self.spec, key, keeping, bytes, decoded, hit) else {
            return false;
        };
        if self.promises[i].len() > 1 {
            lock(&self.bytes).insert(i, Arc::from(bytes));
        }
        self.resolve(i, Outcome::Value(value));
        true
    }

    fn fetch<'f>(
        &'f self,
        client: &'f Client,
        limit: &'f Semaphore,
        which: &'f [(usize, &'f str)],
    ) -> BoxFuture<'f, Vec<Fetched>> {
        Box::pin(async move {
            let mut fetching = observe::Fetching::start(client, self.spec, which.len());
            let results = match self.fetch_batch(limit, which).await {
                Some(results) => results,
                None => join_all(which.iter().map(|&(i, _)| self.fetch_limited(limit, i))).await,
            };
            which
                .iter()
                .zip(results)
                .map(|(&(i, key), result)| match fetching.done(key, result) {
                    Ok(value) => {
                        let bytes = encode(client, self.spec, key, &value);
                        if let Some(bytes) = &bytes {
                            self.keep_bytes(i, bytes);
                        }
                        self.resolve(i, Outcome::Value(value));
                        Fetched::Value(bytes)
                    }
                    Err(error) => {
                        let shared = self.fetchers.sharing.share(&error);
                        self.resolve(i, Outcome::Fetch(error));
                        Fetched::Failed(shared)
                    }
                })
                .collect()
        })
    }

    fn wait_lost<'f>(
        &'f self,
        client: &'f Client,
        renewer: &'f Renewer,
        limit: &'f Semaphore,
        i: usize,
        key: &'f str,
    ) -> BoxFuture<'f, Fetched> {
        Box::pin(async move {
            let mut fetch = || self.fetch_limited(limit, i);
            let waiter = Waiter::new(client, renewer, self.spec, key);
            match wait_then_load(client, waiter, &mut fetch, None, crate::store::FetchPolicy::none()).await {
                Ok((value, bytes)) => {
                    if let Some(bytes) = &bytes {
                        self.keep_bytes(i, bytes);
                    }
                    self.resolve(i, Outcome::Value(value));
                    Fetched::Value(bytes)
                }
                Err(error) => {
                    let shared = self.fetchers.sharing.share(&error);
                    self.resolve(i, Outcome::Fetch(error));
                    Fetched::Failed(shared)
                }
            }
        })
    }

    fn fail_with(&self, i: usize, error: &SharedError) -> bool {
        let Some(error) = self.fetchers.sharing.restore(error) else {
            return false;
        };
        self.resolve(i, Outcome::Fetch(error));
        true
    }

    fn load<'f>(&'f self, client: &'f Client, limit: &'f Semaphore, i: usize, key: &'f str) -> BoxFuture<'f, ()> {
        Box::pin(async move {
            let sharing = self.fetchers.sharing;
            let deadline = tokio::time::Instant::now() + client.cache_timeout();
            let fetch = || self.fetch_limited(limit, i);
            let outcome = match load(client, self.spec, key, fetch, Ways::plain(sharing), deadline, None).await {
                Ok(value) => Outcome::Value(value),
                Err(error) => Outcome::Fetch(error),
            };
            self.resolve(i, outcome);
        })
    }

    fn load_stale<'f>(
        &'f self,
        client: &'f Client,
        limit: &'f Semaphore,
        i: usize,
        key: &'f str,
        stale: Vec<u8>,
    ) -> BoxFuture<'f, ()> {
        Box::pin(async move {
            let sharing = self.fetchers.sharing;
            let deadline = tokio::time::Instant::now() + client.cache_timeout();
            let fetch = || self.fetch_limited(limit, i);
            let stale = decode::<V>(client, self.spec, key, &stale, false).and_then(|value| Stale::new(value, &stale));
            let outcome = match load(client, self.spec, key, fetch, Ways::plain(sharing), deadline, stale).await {
                Ok(value) => Outcome::Value(value),
                Err(error) => Outcome::Fetch(error),
            };
            self.resolve(i, outcome);
        })
    }

    fn add_any(&mut self, params: Box<dyn Any>, cell: Box<dyn Any>) -> Result<(), AnyPair> {
        let params = match params.downcast::<P>() {
            Ok(params) => params,
            Err(params) => return Err((params, cell)),
        };
        let cell = match cell.downcast::<Arc<Cell<V, E>>>() {
            Ok(cell) => cell,
            Err(cell) => return Err((params, cell)),
        };
        let i = self.add(*params);
        self.promises[i].push(*cell);
        Ok(())
    }

    fn deliver<'f>(&'f mut self, client: &'f Client) -> BoxFuture<'f, ()> {
        Box::pin(async move {
            let outcomes = std::mem::take(&mut *lock(&self.outcomes));
            let bytes = std::mem::take(&mut *lock(&self.bytes));
            let mut again = Vec::new();
            for (i, (outcome, promises)) in outcomes.into_iter().zip(&self.promises).enumerate() {
                let Some((first, others)) = promises.split_first() else {
                    continue;
                };
                let ok = matches!(outcome, Outcome::Value(_));
                // A decoded copy to clone for the others, where values can
                // be kept (else each decodes the bytes).
                let kept = match &outcome {
                    Outcome::Value(value) if !others.is_empty() => self.fetchers.keeping.keep(value),
                    _ => None,
                };
                first.set(match outcome {
                    Outcome::Value(value) => Ok(value),
                    Outcome::Fetch(error) => Err(PromiseError::Fetch(error)),
                    Outcome::Pending => Err(PromiseError::NotExecuted),
                });
                for other in others {
                    // Another promise of the same key: its own copy of the
                    // value or, as errors are not shared, its own get.
                    let copy = kept
                        .as_ref()
                        .and_then(|kept| self.fetchers.keeping.take(kept))
                        .or_else(|| {
                            ok.then(|| bytes.get(&i))
                                .flatten()
                                .and_then(|b| decode::<V>(client, self.spec, &self.entries[i].key, b, false))
                        });
                    match copy {
                        Some(value) => other.set(Ok(value)),
                        None => again.push((i, Arc::clone(other))),
                    }
                }
            }
            for (i, cell) in again {
                let key = &self.entries[i].key;
                let sharing = self.fetchers.sharing;
                let result = crate::store::get(
                    client,
                    self.spec,
                    key,
                    || self.fetch_one(i),
                    sharing,
                    self.fetchers.keeping,
                    crate::store::FetchPolicy::none(),
                )
                .await;
                cell.set(result.map_err(PromiseError::Fetch));
            }
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Outcomes are plain slots: a panic elsewhere leaves them consistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
