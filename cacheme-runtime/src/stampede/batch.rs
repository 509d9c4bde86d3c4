//! The batch form of the stampede protocol's lock and fill steps, used by
//! pipelines and `get_m`: the misses of a batch try their locks in one
//! call ([`Coordinator::try_lock_many`]) and the won ones are filled or
//! abandoned in one more ([`Coordinator::settle_many`]), their locks
//! renewed meanwhile by [`Coordinator::renew_many`]. Coordinators that
//! can do either in one round trip (Redis: one script per node) override
//! them; the defaults run the single-key steps concurrently.

use std::time::Duration;

use futures_util::future::join_all;

use crate::error::Result;
use crate::stampede::Coordinator;

/// One lock attempt of a batch: `key`'s fetch lock, taken with `token`
/// for `ttl` (see [`Coordinator::try_lock`]).
#[derive(Clone, Copy, Debug)]
pub struct LockRequest<'a> {
    /// The cache key whose lock is wanted.
    pub key: &'a str,
    /// The holder's random token.
    pub token: &'a str,
    /// How long the lock lives unless renewed.
    pub ttl: Duration,
}

/// How the fetch of one locked key of a batch ended.
#[derive(Clone, Copy, Debug)]
pub enum Settlement<'a> {
    /// The fetch succeeded: as [`Coordinator::fill`].
    Fill {
        /// The cache key.
        key: &'a str,
        /// The token the lock was taken with.
        token: &'a str,
        /// The encoded value.
        value: &'a [u8],
        /// The value's TTL.
        ttl: Duration,
    },
    /// The fetch failed (or its value could not be encoded): as
    /// [`Coordinator::abandon`].
    Abandon {
        /// The cache key.
        key: &'a str,
        /// The token the lock was taken with.
        token: &'a str,
    },
}

impl<'a> Settlement<'a> {
    /// The cache key settled.
    pub fn key(&self) -> &'a str {
        match *self {
            Settlement::Fill { key, .. } | Settlement::Abandon { key, .. } => key,
        }
    }

    /// The token of the lock.
    pub fn token(&self) -> &'a str {
        match *self {
            Settlement::Fill { token, .. } | Settlement::Abandon { token, .. } => token,
        }
    }
}

/// [`Coordinator::try_lock_many`]'s default: every attempt concurrently;
/// the first error fails the whole batch.
pub(crate) async fn try_lock_each<C: Coordinator + ?Sized>(
    coordinator: &C,
    requests: &[LockRequest<'_>],
) -> Result<Vec<bool>> {
    join_all(requests.iter().map(|r| coordinator.try_lock(r.key, r.token, r.ttl)))
        .await
        .into_iter()
        .collect()
}

/// [`Coordinator::renew_many`]'s default: every renewal concurrently; the
/// first error fails the whole batch.
pub(crate) async fn renew_each<C: Coordinator + ?Sized>(
    coordinator: &C,
    requests: &[LockRequest<'_>],
) -> Result<Vec<bool>> {
    join_all(requests.iter().map(|r| coordinator.renew(r.key, r.token, r.ttl)))
        .await
        .into_iter()
        .collect()
}

/// [`Coordinator::settle_many`]'s default: every fill and abandon
/// concurrently; the first error fails the whole batch.
pub(crate) async fn settle_each<C: Coordinator + ?Sized>(
    coordinator: &C,
    settlements: &[Settlement<'_>],
) -> Result<Vec<bool>> {
    join_all(settlements.iter().map(|s| async move {
        match *s {
            Settlement::Fill { key, token, value, ttl } => coordinator.fill(key, token, value, ttl).await,
            Settlement::Abandon { key, token } => coordinator.abandon(key, token).await.map(|()| false),
        }
    }))
    .await
    .into_iter()
    .collect()
}
