//! Fetch locks owned by a value: [`Leases`] (one key for a `get`, many for
//! a batch) are made, armed, *before* the lock command is sent, and stay
//! armed until their fill or abandon has completed. Dropping them anywhere
//! in between (a cancelled caller, a timeout, a panic) releases every lock
//! they may hold, in one call on a task of its own, so no await of the
//! miss path can leave a lock behind for `lock_ttl`. While held, the
//! client's [`Renewer`] keeps them alive.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::stampede::renewer::Renewer;
use crate::stampede::{Coordinator, LockRequest, Settlement, new_token};

/// One lock of a set.
struct Lock {
    key: String,
    token: String,
    ttl: Duration,
    /// Whether dropping must release it: it may be held.
    armed: bool,
    /// Its registration with the renewer, while held.
    renewal: Option<u64>,
}

/// The fetch locks of one call (see the module docs).
pub(crate) struct Leases {
    renewer: Renewer,
    locks: Vec<Lock>,
}

impl Leases {
    /// Armed leases for `keys` (each with its lock TTL), fresh tokens;
    /// nothing sent yet.
    pub(crate) fn new(renewer: &Renewer, keys: impl IntoIterator<Item = (String, Duration)>) -> Self {
        Leases {
            renewer: renewer.clone(),
            locks: keys
                .into_iter()
                .map(|(key, ttl)| Lock {
                    key,
                    token: new_token(),
                    ttl,
                    armed: true,
                    renewal: None,
                })
                .collect(),
        }
    }

    fn coordinator(&self) -> &Arc<dyn Coordinator> {
        self.renewer.coordinator()
    }

    /// How many keys the set was made for.
    pub(crate) fn len(&self) -> usize {
        self.locks.len()
    }

    /// The cache key of lock `i`.
    pub(crate) fn key(&self, i: usize) -> &str {
        &self.locks[i].key
    }

    /// Tries every lock in one call: one result per key, `true` where it
    /// was taken (those are renewed from now on). Locks not taken are
    /// disarmed. On an error every lock stays armed, since some may have
    /// been taken before the answer was lost: dropping the set releases
    /// them.
    pub(crate) async fn acquire(&mut self) -> Result<Vec<bool>> {
        let taken = match self.locks.as_slice() {
            [one] => vec![self.coordinator().try_lock(&one.key, &one.token, one.ttl).await?],
            locks => {
                let requests: Vec<LockRequest<'_>> = locks
                    .iter()
                    .map(|l| LockRequest {
                        key: &l.key,
                        token: &l.token,
                        ttl: l.ttl,
                    })
                    .collect();
                self.coordinator().try_lock_many(&requests).await?
            }
        };
        for (lock, &taken) in self.locks.iter_mut().zip(&taken) {
            lock.armed = taken;
            if taken {
                lock.renewal = Some(self.renewer.hold(&lock.key, &lock.token, lock.ttl));
            }
        }
        Ok(taken)
    }

    /// Tries the one lock of the set over the value that is there (to
    /// refresh it ahead of its expiry or replace a stale one; see
    /// [`Coordinator::try_lock_to_refresh`]): `true` when taken (it is then
    /// renewed from now on).
    pub(crate) async fn acquire_to_refresh(&mut self) -> Result<bool> {
        let coordinator = Arc::clone(self.coordinator());
        let Some(lock) = self.locks.first_mut() else {
            return Ok(false);
        };
        let taken = coordinator
            .try_lock_to_refresh(&lock.key, &lock.token, lock.ttl)
            .await?;
        lock.armed = taken;
        if taken {
            lock.renewal = Some(self.renewer.hold(&lock.key, &lock.token, lock.ttl));
        }
        Ok(taken)
    }

    /// Settles every held lock in one call: where `values[i]` is a value,
    /// it is stored for `ttls[i]` if the lock is still ours; else the lock
    /// is released and its waiters told the fetch failed. Returns, per
    /// key, whether a value was stored. On an error the locks are released
    /// before this returns (a refused value, such as one too large for the
    /// server, must not hold its key), and by the drop if this is cut short.
    pub(crate) async fn settle(mut self, values: &[Option<Arc<[u8]>>], ttls: &[Duration]) -> Result<Vec<bool>> {
        self.stop_renewing();
        let held: Vec<usize> = (0..self.locks.len()).filter(|&i| self.locks[i].armed).collect();
        let settlements: Vec<Settlement<'_>> = held
            .iter()
            .map(|&i| {
                let lock = &self.locks[i];
                match values.get(i).and_then(Option::as_deref) {
                    Some(value) => Settlement::Fill {
                        key: &lock.key,
                        token: &lock.token,
                        value,
                        ttl: ttls.get(i).copied().unwrap_or(lock.ttl),
                    },
                    None => Settlement::Abandon {
                        key: &lock.key,
                        token: &lock.token,
                    },
                }
            })
            .collect();
        let settled = match settlements.as_slice() {
            [] => Ok(Vec::new()),
            [Settlement::Fill { key, token, value, ttl }] => self
                .coordinator()
                .fill(key, token, value, *ttl)
                .await
                .map(|stored| vec![stored]),
            [Settlement::Abandon { key, token }] => self.coordinator().abandon(key, token).await.map(|()| vec![false]),
            many => self.coordinator().settle_many(many).await,
        };
        drop(settlements);
        let stored = match settled {
            Ok(stored) => stored,
            Err(error) => {
                // Refused (a value too large for the server) or of unknown
                // fate: release the locks now, so waiters take them at once.
                let armed = self.take_armed();
                release(Arc::clone(self.coordinator()), armed).await;
                return Err(error);
            }
        };
        let mut out = vec![false; self.locks.len()];
        for (&i, stored) in held.iter().zip(stored) {
            out[i] = stored;
        }
        for lock in &mut self.locks {
            lock.armed = false;
        }
        Ok(out)
    }

    fn stop_renewing(&mut self) {
        for lock in &mut self.locks {
            if let Some(id) = lock.renewal.take() {
                self.renewer.release(id);
            }
        }
    }
}

impl Leases {
    /// The locks still armed, disarmed (their releaser owns them now).
    fn take_armed(&mut self) -> Vec<(String, String)> {
        self.locks
            .iter_mut()
            .filter(|l| l.armed)
            .map(|l| {
                l.armed = false;
                (std::mem::take(&mut l.key), std::mem::take(&mut l.token))
            })
            .collect()
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.stop_renewing();
        let armed = self.take_armed();
        if armed.is_empty() {
            return;
        }
        // Without a runtime (shut down) the locks expire by themselves.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordinator = Arc::clone(self.coordinator());
        runtime.spawn(release(coordinator, armed));
    }
}

/// Releases `locks` in one call; tried once more on an error, since the
/// failure that left them (a value over Redis's `proto-max-bulk-len`) may
/// have closed the connection, which the next command re-opens. Releasing
/// is idempotent.
async fn release(coordinator: Arc<dyn Coordinator>, locks: Vec<(String, String)>) {
    let abandons: Vec<Settlement<'_>> = locks
        .iter()
        .map(|(key, token)| Settlement::Abandon { key, token })
        .collect();
    let run = || async {
        match abandons.as_slice() {
            [Settlement::Abandon { key, token }] => coordinator.abandon(key, token).await,
            many => coordinator.settle_many(many).await.map(drop),
        }
    };
    let released = match run().await {
        Err(_) => run().await,
        released => released,
    };
    if let Err(error) = released {
        tracing::warn!(target: "cacheme", %error, locks = locks.len(), "could not release fetch locks left by a cancelled or failed call");
    }
}
