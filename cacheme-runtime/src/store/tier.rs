//! A store's local tier as the read paths use it: whether a value it holds
//! may be served now (its dates against the client's clock), and holding
//! what a flight read or fetched, unless an invalidation came first. One
//! copy for `get`, `get_m` and pipelines.

use std::sync::Arc;

use crate::client::Client;
use crate::dated::{self, Age};
use crate::keeping::Kept;
use crate::local::Held;
use crate::singleflight::LeaderGuard;
use crate::spec::StoreSpec;

/// How old `held` is by the client's clock: `None` once it is no longer
/// fresh (its key is then read again, and judged there). Values without
/// dates are fresh for as long as the tier holds them.
pub(crate) fn age_of(client: &Client, held: &Held) -> Option<Age> {
    if held.until == u64::MAX {
        return Some(Age::Fresh);
    }
    let now = client.clock().unix_ms();
    if now >= held.until {
        None
    } else if now >= held.due {
        Some(Age::Due)
    } else {
        Some(Age::Fresh)
    }
}

/// Holds the value a flight read or fetched (stored as `bytes`; `kept`
/// makes its decoded copy) in `spec`'s local tier, if the store has one
/// and the flight is still current (no invalidation of `key` since it
/// began); with its dates, if the store dates its values. Gives the
/// decoded copy it made, for the flight's followers.
pub(crate) fn keep(
    client: &Client,
    spec: &StoreSpec,
    flight: &LeaderGuard<'_>,
    key: &str,
    bytes: &[u8],
    kept: impl FnOnce() -> Option<Kept>,
) -> Option<Kept> {
    let local = client.local();
    if !local.has(spec) {
        return None;
    }
    let kept = kept()?;
    let held = match dated::open(bytes).filter(|_| spec.dated()) {
        Some((dates, _)) => Held {
            value: Arc::clone(&kept),
            due: dates.due_at(spec),
            until: dates.fresh_until,
            stale_until: dates.stale_until,
            epoch: 0,
        },
        None => Held::undated(Arc::clone(&kept)),
    };
    client
        .flights()
        .while_current(flight, || local.insert(spec, key, held, bytes.len()));
    client.observer().local_entries(spec, local.count(spec));
    Some(kept)
}
