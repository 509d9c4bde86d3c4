//! Stampede locks from a backend's own atomic operations, for backends
//! without notifications (memcached, file): the lock is
//! [`set_if_absent`](Backend::set_if_absent) (memcached `add`, the file
//! backend's stripe lock), released with
//! [`delete_if_equals`](Backend::delete_if_equals), and waiters poll the
//! key with backoff (5 ms doubling to 200 ms).
//!
//! What this cannot guarantee, unlike Redis's Lua scripts: the fencing
//! check and the fill are separate steps, so an `invalidate` that lands in
//! the one round trip between them can be overwritten by the fill; a
//! renewal racing the lock's expiry can, rarely, let a second process
//! fetch. Both need a fetch that outlives `lock_ttl` or an invalidation in
//! a window of one round trip.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BoxFuture};
use crate::error::Result;
use crate::stampede::{Coordinator, Watch};

/// The lock of `key`: a name no store key can have (store keys hold no
/// whitespace).
fn lock_key(key: &str) -> String {
    format!("{key} lock")
}

/// [`Coordination::Polling`](crate::stampede::Coordination::Polling) over a backend.
#[derive(Debug)]
pub(crate) struct PollingCoordinator {
    backend: Arc<dyn Backend>,
}

impl PollingCoordinator {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        PollingCoordinator { backend }
    }

    async fn holds(&self, lock: &str, token: &str) -> Result<bool> {
        Ok(self.backend.get(lock).await?.as_deref() == Some(token.as_bytes()))
    }
}

impl Coordinator for PollingCoordinator {
    fn try_lock<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let lock = lock_key(key);
            if !self.backend.set_if_absent(&lock, token.as_bytes(), Some(ttl)).await? {
                return Ok(false);
            }
            // The value may have landed between the caller's miss and the
            // lock (its holder filled and released): then there is
            // nothing to fetch, and the caller re-reads.
            let exists = self.backend.exists(key).await;
            if !matches!(exists, Ok(false)) {
                // A value is there (or the check failed): release the lock
                // taken above before answering, so it is not left behind.
                self.backend.delete_if_equals(&lock, token.as_bytes()).await?;
                exists?;
                return Ok(false);
            }
            Ok(true)
        })
    }

    fn try_lock_to_refresh<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.backend
                .set_if_absent(&lock_key(key), token.as_bytes(), Some(ttl))
                .await
        })
    }

    fn renew<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let lock = lock_key(key);
            if !self.holds(&lock, token).await? {
                return Ok(false);
            }
            self.backend.set(&lock, token.as_bytes(), Some(ttl)).await?;
            Ok(true)
        })
    }

    fn fill<'a>(&'a self, key: &'a str, token: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let lock = lock_key(key);
            if !self.holds(&lock, token).await? {
                return Ok(false);
            }
            let stored = self.backend.set(key, value, Some(ttl)).await;
            // Released whether or not the value was stored (too large for
            // the server, ...): waiters then take the lock at once instead
            // of waiting for it to expire.
            let released = self.backend.delete_if_equals(&lock, token.as_bytes()).await;
            stored?;
            released?;
            Ok(true)
        })
    }

    fn abandon<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.backend
                .delete_if_equals(&lock_key(key), token.as_bytes())
                .await
                .map(drop)
        })
    }

    fn watch<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async { Ok(Watch::polling()) })
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let deleted = self.backend.delete(key).await?;
            self.backend.delete(&lock_key(key)).await?;
            Ok(deleted)
        })
    }

    fn replace<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.backend.set(key, value, Some(ttl)).await?;
            self.backend.delete(&lock_key(key)).await.map(drop)
        })
    }
}
