//! The Redis side of stampede protection: the [`Coordinator`] of a
//! [`RedisBackend`]. Its single-key steps are Lua scripts on the key's
//! node ([`steps`](super::steps)), its batch steps one script per slice
//! of a batch ([`lock_batches`](super::lock_batches)), its waits
//! notifications on the key's channel ([`notify`](super::notify)); the
//! names of a key's lock and channel are in [`names`](super::names).

use std::time::Duration;

use super::RedisBackend;
use super::lock_batches::{LockBatch, RenewBatch, SettleBatch};
use crate::backend::BoxFuture;
use crate::error::{Error, Op, Result};
use crate::stampede::{Coordinator, Hearing, LockRequest, Settlement, Watch};

/// The stampede coordinator of a [`RedisBackend`].
#[derive(Debug)]
pub(super) struct RedisCoordinator {
    pub(super) backend: RedisBackend,
}

impl Coordinator for RedisCoordinator {
    fn try_lock<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.backend.try_lock(key, token, ttl))
    }

    fn try_lock_to_refresh<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let names = self.backend.names(key);
            self.backend.set_lock(key, &names.lock, token, ttl).await
        })
    }

    fn renew<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.backend.renew_lock(key, token, ttl))
    }

    fn fill<'a>(&'a self, key: &'a str, token: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.backend.fill(key, token, value, ttl))
    }

    fn abandon<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.backend.abandon(key, token))
    }

    fn watch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            let channel = self.backend.names(key).channel;
            self.backend
                .notifier
                .watch(&channel)
                .await
                .map_err(|e| Error::backend(self.backend.provider, Op::Watch, Some(key), e))
        })
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.backend.invalidate(key))
    }

    /// `PUBLISH` (in a cluster `SPUBLISH`) on the store's channel.
    fn announce<'a>(&'a self, store: &'a str, payload: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.backend.announce(store, payload))
    }

    /// Subscribes the stores' channels on the backend's push connection.
    fn listen(&self, stores: &[&'static str], hear: Hearing) -> bool {
        let channels: Vec<(String, &'static str)> = stores
            .iter()
            .map(|store| (self.backend.announcements(store), *store))
            .collect();
        self.backend.notifier.listen(&channels, hear);
        true
    }

    fn replace<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.backend.replace(key, value, ttl))
    }

    /// One script per [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND)
    /// keys, pipelined on one server; per slot in a cluster (see
    /// [`lock_batches`](super::lock_batches)).
    fn try_lock_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move { self.backend.run_batch(&LockBatch::new(&self.backend, requests)).await })
    }

    /// One script per [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND)
    /// locks, pipelined on one server; per slot in a cluster (see
    /// [`lock_batches`](super::lock_batches)).
    fn renew_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move { self.backend.run_batch(&RenewBatch::new(&self.backend, requests)).await })
    }

    /// One script per [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND)
    /// keys, pipelined on one server; per slot in a cluster (see
    /// [`lock_batches`](super::lock_batches)).
    fn settle_many<'a>(&'a self, settlements: &'a [Settlement<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            self.backend
                .run_batch(&SettleBatch::new(&self.backend, settlements))
                .await
        })
    }

    fn waiting(&self) -> usize {
        self.backend.notifier.waiting()
    }
}
