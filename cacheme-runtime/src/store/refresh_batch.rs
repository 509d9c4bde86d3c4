//! Refresh-ahead in batches: the keys of a store with `fetch_many` that
//! fall due within a short window are refreshed by one call of its batch
//! fetcher, each key still behind its own lock (so one process of the
//! fleet refreshes it) and settled through its own lease.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use serde::Serialize;

use super::encode;
use super::fresh::{Gate, Settle};
use crate::backend::BoxFuture;
use crate::client::Client;
use crate::spec::StoreSpec;

/// How long the first due key of a store waits for others to join its
/// batch.
pub(crate) const WINDOW: Duration = Duration::from_millis(10);

/// The batch fetcher with an owned context: the store's parameters in,
/// `(parameters, value)` pairs out.
type Many<P, V, E> = Arc<dyn Fn(Vec<P>) -> BoxFuture<'static, Result<Vec<(P, V)>, E>> + Send + Sync>;

type Enqueue = Box<dyn FnOnce(&Client, &'static StoreSpec, String, Gate) + Send>;

/// One due key's refresh, joining its store's next batch. Built by the
/// generated code of stores with `refresh_after` and `fetch_many`.
pub struct BatchRefresh {
    enqueue: Enqueue,
}

impl std::fmt::Debug for BatchRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchRefresh")
    }
}

/// The keys of one store waiting for their batch.
struct Pending<P, V, E> {
    entries: Vec<(P, String, Gate)>,
    many: Option<Many<P, V, E>>,
}

impl<P, V, E> Default for Pending<P, V, E> {
    fn default() -> Self {
        Pending {
            entries: Vec::new(),
            many: None,
        }
    }
}

impl BatchRefresh {
    /// The refresh of the key of `params` (`key_of` gives a key of the
    /// store's from parameters) through `many`, the store's batch fetcher
    /// with an owned context; `checked` turns each value found into the
    /// store's value type.
    pub fn new<P, V, E, D, C, F, Fut, I>(params: P, key_of: fn(&P) -> String, checked: C, many: F) -> Self
    where
        P: Send + Sync + 'static,
        V: Serialize + Send + Sync + 'static,
        E: Send + Sync + 'static,
        C: Fn(D) -> V + Copy + Send + Sync + 'static,
        F: Fn(Vec<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (P, D)>,
    {
        let many: Many<P, V, E> = Arc::new(move |params| {
            let found = many(params);
            Box::pin(async move {
                let found = found.await?;
                Ok(found.into_iter().map(|(p, value)| (p, checked(value))).collect())
            })
        });
        let enqueue: Enqueue = Box::new(move |client, spec, key, gate| {
            let pending = client.refresh_batch::<Mutex<Pending<P, V, E>>>(spec.name);
            let first = {
                let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.entries.push((params, key, gate));
                pending.many.get_or_insert(many);
                pending.entries.len() == 1
            };
            if first {
                tokio::spawn(flush(client.clone(), spec, key_of, pending));
            }
        });
        BatchRefresh { enqueue }
    }

    /// Adds the refresh of `key` (its storage key), started once `gate`
    /// gives its settlement, to the store's next batch.
    pub(crate) fn start(self, client: &Client, spec: &'static StoreSpec, key: &str, gate: Gate) {
        (self.enqueue)(client, spec, key.to_owned(), gate);
    }
}

/// After the window, refreshes every key that joined: takes their locks
/// (their gates), calls the batch fetcher once with the keys whose lock
/// was taken, and settles each (its value, or nothing: the fetcher failed,
/// panicked, ran past the store's `hard_timeout` or left the key out).
async fn flush<P, V, E>(
    client: Client,
    spec: &'static StoreSpec,
    key_of: fn(&P) -> String,
    pending: Arc<Mutex<Pending<P, V, E>>>,
) where
    P: Send + 'static,
    V: Serialize + Send + 'static,
    E: Send + 'static,
{
    tokio::time::sleep(WINDOW).await;
    let (entries, many) = {
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut pending.entries), pending.many.take())
    };
    let Some(many) = many else { return };
    let (params, gates): (Vec<P>, Vec<(String, Gate)>) =
        entries.into_iter().map(|(p, key, gate)| (p, (key, gate))).unzip();
    let settles = join_all(gates.into_iter().map(|(key, gate)| async move { (key, gate.await) })).await;
    let mut taken = Vec::new();
    let mut asked = Vec::new();
    for (p, (key, settle)) in params.into_iter().zip(settles) {
        if let Some(settle) = settle {
            taken.push((key_of(&p), key, settle));
            asked.push(p);
        }
    }
    if taken.is_empty() {
        return;
    }
    let fetched = AssertUnwindSafe(many(asked)).catch_unwind();
    let fetched = match spec.hard_timeout {
        Some(limit) => tokio::time::timeout(limit, fetched).await.ok(),
        None => Some(fetched.await),
    };
    let mut found: HashMap<String, V> = match fetched {
        Some(Ok(Ok(pairs))) => pairs.into_iter().map(|(p, value)| (key_of(&p), value)).collect(),
        _ => HashMap::new(),
    };
    let settled = taken
        .into_iter()
        .map(|(store_key, key, settle): (String, String, Settle)| {
            let bytes = found
                .remove(&store_key)
                .and_then(|value| encode(&client, spec, &key, &value));
            settle(bytes)
        });
    join_all(settled).await;
}

/// The client's batches of pending refreshes, one per store.
#[derive(Default)]
pub(crate) struct RefreshBatches(Mutex<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>);

impl RefreshBatches {
    /// The batch of `store`, made on first use.
    pub(crate) fn of<T: Any + Send + Sync + Default>(&self, store: &'static str) -> Arc<T> {
        let mut batches = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let batch = batches
            .entry(store)
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>);
        match Arc::clone(batch).downcast::<T>() {
            Ok(batch) => batch,
            // One store, one parameter and value type: only a second client
            // of another program could get here; it gets a batch of its own.
            Err(_) => Arc::new(T::default()),
        }
    }
}
