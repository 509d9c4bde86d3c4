//! Refresh-ahead (`refresh_after`): a hit on a value past its due date
//! refreshes its key in the background, once per key in the process (a
//! [`Refreshing`] mark) and once in the fleet (the key's lock, taken over
//! the value), through the per-key fetcher or, for a store with
//! `fetch_many`, a batch ([`refresh_batch`](super::refresh_batch)).

use std::sync::Arc;

use super::fresh::{FetchPolicy, Gate, Settle, settle_lease, settle_unleased};
use crate::backend::BoxFuture;
use crate::client::Client;
use crate::dated::Age;
use crate::logger::EventKind;
use crate::spec::StoreSpec;
use crate::stampede::lease::Leases;
use crate::stampede::probe::{Probe, probe};
use crate::stampede::waiter;

/// Starts a background refresh of `key` (a hit older than the store's
/// `refresh_after`), unless this client already refreshes it or the
/// policy cannot fetch in the background. Across processes the key's
/// fetch lock decides: if another process holds it, nothing is fetched.
pub(crate) fn refresh_ahead<V, E>(client: &Client, spec: &'static StoreSpec, key: &str, policy: FetchPolicy<'_, V, E>) {
    let Some(background) = policy.background_fetch() else {
        return;
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let Some(refreshing) = Refreshing::start(client, key) else {
        return;
    };
    let owner = client.clone();
    let at = key.to_owned();
    let gate: Gate = Box::pin(async move {
        // Another refresh may have landed since this caller's read (and
        // ended, so this one could start): then there is nothing to do.
        let still_due = |owner: Client, at: String| async move {
            let deadline = tokio::time::Instant::now() + owner.cache_timeout();
            match probe(&owner, spec, &at, deadline).await {
                Probe::Found(bytes) => super::age(&owner, spec, &bytes) == Age::Due,
                Probe::Missing | Probe::Failed => false,
            }
        };
        let settle = match owner.renewer() {
            Some(renewer) => {
                let mut leases = Leases::new(renewer, [(at.clone(), waiter::lock_ttl(&owner, spec))]);
                match tokio::time::timeout(owner.cache_timeout(), leases.acquire_to_refresh()).await {
                    // With the lock held, no other refresh can land.
                    Ok(Ok(true)) if still_due(owner.clone(), at.clone()).await => {
                        settle_lease(&owner, spec, leases, None)
                    }
                    _ => return None,
                }
            }
            None if still_due(owner.clone(), at.clone()).await => settle_unleased(&owner, spec, &at, None),
            None => return None,
        };
        owner.log(EventKind::Refresh, spec, &at, None);
        // A refresh that failed is not tried again by this process for
        // the store's throttle: the value is still fresh, and a failing
        // source is not asked on every hit.
        Some(Box::new(move |fetched: Option<Arc<[u8]>>| {
            let failed = fetched.is_none();
            let settled = settle(fetched);
            Box::pin(async move {
                settled.await;
                if failed {
                    tokio::time::sleep(spec.throttle()).await;
                }
                drop(refreshing);
            }) as BoxFuture<'static, ()>
        }) as Settle)
    });
    match policy.batch_refresh_fetch() {
        Some(batch) => batch().start(client, spec, key, gate),
        None => drop(background().start(client, spec, key, gate)),
    }
}

/// A key this client refreshes (ahead of its expiry, or after answering
/// with its stale value); dropped when the refresh ends.
pub(crate) struct Refreshing {
    client: Client,
    key: String,
}

impl Refreshing {
    /// Marks `key` as refreshed by this client; `None` if it already is.
    pub(crate) fn start(client: &Client, key: &str) -> Option<Self> {
        client.start_refresh(key).then(|| Refreshing {
            client: client.clone(),
            key: key.to_owned(),
        })
    }
}

/// `settle`, then the end of `refreshing`.
pub(crate) fn ending(settle: Settle, refreshing: Option<Refreshing>) -> Settle {
    Box::new(move |fetched: Option<Arc<[u8]>>| {
        let settled = settle(fetched);
        Box::pin(async move {
            settled.await;
            drop(refreshing);
        })
    })
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.client.end_refresh(&self.key);
    }
}
