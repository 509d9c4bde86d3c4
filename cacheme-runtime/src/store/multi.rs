//! `get_m`: many keys of one store in one call. Duplicate keys are read
//! and fetched once; all keys are read in one backend call (`get_many`:
//! MGET on Redis); the misses are fetched concurrently, each through the
//! same miss path as `get` (so `singleflight` applies).

use std::collections::HashMap;
use std::future::Future;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::logger::EventKind;
use crate::store::generation::storage_key;
use crate::store::spec::StoreSpec;
use crate::store::{decode, load};

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
pub async fn get_many<V, E, P, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    params: Vec<P>,
    key_of: fn(&P) -> String,
    fetch: F,
) -> Result<MultiResult<V, P>, E>
where
    V: Serialize + DeserializeOwned,
    P: Clone,
    F: Fn(P) -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let mut index = HashMap::with_capacity(params.len());
    let mut order = Vec::with_capacity(params.len());
    let mut distinct: Vec<(String, P)> = Vec::new();
    for p in params {
        let key = key_of(&p);
        let next = distinct.len();
        let i = *index.entry(key).or_insert_with_key(|key| {
            distinct.push((key.clone(), p));
            next
        });
        order.push(i);
    }

    // Where stores invalidate by generation, the stored keys carry it.
    let mut stored = Vec::with_capacity(distinct.len());
    for (key, _) in &distinct {
        match storage_key(client, spec, key).await {
            Ok(key) => stored.push(key.into_owned()),
            Err(error) => {
                client.log(EventKind::BackendError, spec, key, Some(&error));
                return uncached_many(client, spec, distinct, order, index, key_of, fetch).await;
            }
        }
    }
    let keys: Vec<&str> = stored.iter().map(String::as_str).collect();
    let found = match client.cache().backend().get_many(&keys).await {
        Ok(found) => found,
        Err(error) => {
            client.log(
                EventKind::BackendError,
                spec,
                keys.first().copied().unwrap_or(""),
                Some(&error),
            );
            vec![None; keys.len()]
        }
    };
    let hits: Vec<Option<V>> = found
        .into_iter()
        .zip(&keys)
        .map(|(bytes, key)| bytes.and_then(|bytes| decode(client, spec, key, &bytes, true)))
        .collect();

    let loads = hits
        .iter()
        .zip(keys.iter().zip(&distinct))
        .filter(|(hit, _)| hit.is_none())
        .map(|(_, (key, (_, p)))| load(client, spec, key, || fetch(p.clone())));
    let mut loaded = join_all(loads).await.into_iter();

    let mut values = Vec::with_capacity(hits.len());
    for hit in hits {
        match hit.map(Ok).or_else(|| loaded.next()) {
            Some(value) => values.push(value?),
            None => break, // unreachable: one load per miss
        }
    }
    Ok(MultiResult {
        values,
        order,
        index,
        key_of,
    })
}

/// `get_m` when the cache cannot say where values live: every distinct key
/// is fetched (concurrently) and nothing is cached.
async fn uncached_many<V, E, P, F, Fut>(
    client: &Client,
    spec: &'static StoreSpec,
    distinct: Vec<(String, P)>,
    order: Vec<usize>,
    index: HashMap<String, usize>,
    key_of: fn(&P) -> String,
    fetch: F,
) -> Result<MultiResult<V, P>, E>
where
    F: Fn(P) -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let fetches = distinct.into_iter().map(|(key, p)| {
        client.log(EventKind::Fetch, spec, &key, None);
        fetch(p)
    });
    let values = join_all(fetches).await.into_iter().collect::<Result<Vec<V>, E>>()?;
    Ok(MultiResult {
        values,
        order,
        index,
        key_of,
    })
}
