//! A fetch lock owned by a value: a [`Lease`] is made, armed, *before* the
//! lock command is sent, and stays armed until its fill or abandon has
//! completed. Dropping it anywhere in between (a cancelled caller, a
//! timeout, a panic) releases the lock on a task of its own, so no await of
//! the miss path can leave a lock behind for `lock_ttl`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::stampede::{Coordinator, new_token};

/// One attempt at a key's fetch lock (see the module docs).
pub(crate) struct Lease {
    coordinator: Arc<dyn Coordinator>,
    key: String,
    token: String,
    /// Whether dropping must release the lock: it may be held.
    armed: bool,
}

impl Lease {
    /// An armed lease for `key` with a fresh token; nothing sent yet.
    pub(crate) fn new(coordinator: &Arc<dyn Coordinator>, key: &str) -> Self {
        Lease {
            coordinator: Arc::clone(coordinator),
            key: key.to_owned(),
            token: new_token(),
            armed: true,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

    /// Tries the lock. `Ok(false)` (someone else holds it, or a value is
    /// there) disarms the lease; an error leaves it armed, since the lock
    /// may have been taken before the answer was lost.
    pub(crate) async fn acquire(&mut self, ttl: Duration) -> Result<bool> {
        let taken = self.coordinator.try_lock(&self.key, &self.token, ttl).await;
        if let Ok(false) = taken {
            self.armed = false;
        }
        taken
    }

    /// Stores `value` if the lock is still ours, releases it and notifies
    /// the waiters. On an error the lease stays armed and its drop
    /// releases the lock (a refused value must not hold the key).
    pub(crate) async fn fill(mut self, value: &[u8], ttl: Duration) -> Result<bool> {
        let filled = self.coordinator.fill(&self.key, &self.token, value, ttl).await?;
        self.armed = false;
        Ok(filled)
    }

    /// Releases the lock and tells the waiters the fetch failed. If this is
    /// cut short, the drop releases it again (releasing is idempotent).
    pub(crate) async fn abandon(mut self) -> Result<()> {
        self.coordinator.abandon(&self.key, &self.token).await?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Without a runtime (shut down) the lock expires by itself.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordinator = Arc::clone(&self.coordinator);
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            if let Err(error) = coordinator.abandon(&key, &token).await {
                tracing::warn!(target: "cacheme", key, %error, "could not release a fetch lock left by a cancelled or failed call");
            }
        });
    }
}
