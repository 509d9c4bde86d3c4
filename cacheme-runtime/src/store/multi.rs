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
//! `get_m` logs it and serves the source (nothing is cached).

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::observe::{self, Call};
use crate::pipeline::{self, Fetchers, Outcome, StoreGroup};
use crate::spec::StoreSpec;

/// The results of a store's `get_m`: in the order the keys were added
/// (duplicates included) and by parameters.
///
/// `P` is the store's parameters: the one parameter's type, or a tuple of
/// them for several (`(u32, u64)`).
pub struct MultiResult<V, P> {
    values: Vec<V>,
    order: Vec<usize>,
    index: HashMap<String, usize>,
    key_of: fn(&P) -> String,
}

impl<V, P> MultiResult<V, P> {
    /// The value for these parameters, if they were added.
    pub fn get(&self, params: &P) -> Option<&V> {
        self.index.get(&(self.key_of)(params)).map(|&i| &self.values[i])
    }

    /// The values in the order their keys were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.order.iter().map(|&i| &self.values[i])
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
        self.values.len()
    }
}

impl<V: std::fmt::Debug, P> std::fmt::Debug for MultiResult<V, P> {
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
) -> Result<MultiResult<V, P>, E>
where
    V: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    let many = || get_many_unobserved(client, spec, params, fetchers);
    observe::call(Some(client), Some(spec), Call::GetMany, many).await
}

async fn get_many_unobserved<'a, V, E, P>(
    client: &Client,
    spec: &'static StoreSpec,
    params: Vec<P>,
    fetchers: Fetchers<'a, P, V, E>,
) -> Result<MultiResult<V, P>, E>
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
    let mut values = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Outcome::Value(value) => values.push(value),
            Outcome::Fetch(error) => return Err(error),
            Outcome::Pending => unreachable!("every key of get_m is resolved or fetched"),
        }
    }
    Ok(MultiResult {
        values,
        order,
        index,
        key_of,
    })
}
