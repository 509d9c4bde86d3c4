//! Pipelines: typed promises of many stores, resolved together.
//!
//! A store's `get_p` adds a key to a [`Pipeline`] and returns a
//! [`Promise`]; [`Pipeline::execute`] resolves every promise at once:
//!
//! - every key of every store is read in one round trip (one MGET on
//!   Redis, one command per node of a Redis Cluster, one multi-get per
//!   memcached server);
//! - the misses take their stampede locks in one more round trip, are
//!   fetched (a store's `fetch_many` once per store, else concurrently,
//!   one fetch per key), and written in one more; misses whose lock another
//!   process holds wait for it as a single `get` does;
//! - each promise then holds its own value or its own fetch error: one
//!   key's failure does not fail the others. A backend that cannot be read
//!   or locked fails the whole pipeline with [`Error::Pipeline`].
//!
//! ```
//! use cacheme::{Client, Pipeline, cache_store};
//!
//! #[cache_store(key = "book:<id>", ttl = "5m")]
//! async fn book(ctx: &Client, id: u64) -> Result<String, std::io::Error> {
//!     Ok(format!("book {id}"))
//! }
//!
//! #[cache_store(key = "author:<name>", ttl = "1h")]
//! async fn author(ctx: &Client, name: String) -> Result<usize, std::io::Error> {
//!     Ok(name.len())
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::memory()?;
//! let mut pipeline = Pipeline::new();
//! let first = BookStore::get_p(&client, &mut pipeline, 1);
//! let second = BookStore::get_p(&client, &mut pipeline, 2);
//! let author = AuthorStore::get_p(&client, &mut pipeline, "Ursula".to_owned());
//! pipeline.execute().await?;
//!
//! assert_eq!(first.into_result().unwrap(), "book 1");
//! assert_eq!(second.into_result().unwrap(), "book 2");
//! assert_eq!(author.into_result().unwrap(), 6);
//! # Ok::<(), cacheme::Error>(())
//! # }).unwrap();
//! ```

mod engine;
mod group;
mod promise;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::store::spec::StoreSpec;

pub(crate) use engine::run;
pub use group::Fetchers;
pub(crate) use group::{Group, Outcome, StoreGroup};
use promise::Cell;
pub use promise::{Promise, PromiseError};

/// Promises of one or more stores, resolved together by
/// [`execute`](Pipeline::execute). See the [module docs](self).
///
/// A pipeline borrows the contexts its stores were given (`'a`). Keys of
/// stores on different clients can share a pipeline: each client's keys
/// are resolved in their own batch, concurrently.
#[derive(Default)]
pub struct Pipeline<'a> {
    members: Vec<Member<'a>>,
    promises: usize,
}

/// One store's keys, for one context.
struct Member<'a> {
    client: &'a Client,
    spec: &'static StoreSpec,
    /// The context's address: fetchers are bound to it.
    context: usize,
    group: Box<dyn Group<'a> + 'a>,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline.
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// How many promises were added.
    pub fn len(&self) -> usize {
        self.promises
    }

    /// Whether no promise was added.
    pub fn is_empty(&self) -> bool {
        self.promises == 0
    }

    /// Resolves every promise (see the [module docs](self)).
    ///
    /// `Err` ([`Error::Pipeline`]) when a backend could not be read or
    /// locked; promises it had not resolved then hold the same error.
    /// Fetch errors are not errors of the pipeline: they are in their own
    /// promises. If this future is dropped before it completes, promises
    /// not yet resolved report [`PromiseError::NotExecuted`] and the
    /// locks taken are released.
    pub async fn execute(self) -> Result<()> {
        let Pipeline { mut members, .. } = self;
        let mut clients: Vec<&Client> = Vec::new();
        for member in &members {
            if !clients.iter().any(|c| c.same(member.client)) {
                clients.push(member.client);
            }
        }
        let outcomes: Vec<std::result::Result<(), Arc<Error>>> = {
            let members = &members;
            let runs = clients.iter().map(|&client| async move {
                let groups: Vec<&dyn Group<'a>> = members
                    .iter()
                    .filter(|m| m.client.same(client))
                    .map(|m| &*m.group)
                    .collect();
                run(client, &groups).await.map_err(Arc::new)
            });
            join_all(runs).await
        };
        let mut first_error = None;
        let mut deliveries = Vec::new();
        for member in &mut members {
            let at = clients.iter().position(|c| c.same(member.client));
            let failed = at.and_then(|at| outcomes[at].as_ref().err());
            if first_error.is_none() {
                first_error = failed.cloned();
            }
            deliveries.push(member.group.deliver(member.client, failed));
        }
        join_all(deliveries).await;
        match first_error {
            Some(error) => Err(Error::Pipeline(error)),
            None => Ok(()),
        }
    }

    /// Adds one key of a store; what a store's `get_p` calls.
    #[doc(hidden)]
    pub fn add<C, P, V, E>(
        &mut self,
        context: &'a C,
        client: &'a Client,
        spec: &'static StoreSpec,
        params: P,
        fetchers: impl FnOnce() -> Fetchers<'a, P, V, E>,
    ) -> Promise<V, E>
    where
        C: ?Sized,
        P: Clone + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
        E: Send + 'static,
    {
        self.promises += 1;
        let context = context as *const C as *const () as usize;
        let cell = Cell::new();
        let promise = Promise::new(Arc::clone(&cell));
        let mut params: Box<dyn Any> = Box::new(params);
        let mut cell: Box<dyn Any> = Box::new(cell);
        for member in &mut self.members {
            if std::ptr::eq(member.spec, spec) && member.context == context && member.client.same(client) {
                // Same store and context: the same concrete group type.
                match member.group.add_any(params, cell) {
                    Ok(()) => return promise,
                    Err(back) => (params, cell) = back,
                }
            }
        }
        let mut group = StoreGroup::new(spec, fetchers());
        if group.add_any(params, cell).is_ok() {
            self.members.push(Member {
                client,
                spec,
                context,
                group: Box::new(group),
            });
        }
        promise
    }
}

impl fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("promises", &self.promises)
            .field("stores", &self.members.iter().map(|m| m.spec.name).collect::<Vec<_>>())
            .finish()
    }
}
