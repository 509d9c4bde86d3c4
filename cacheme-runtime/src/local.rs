//! The local tier: decoded values of a store held in this process over a
//! remote backend (Redis, Redis Cluster, memcached, file), served without
//! a round trip and without decoding.
//!
//! One bounded moka cache per store that has a tier (its `local(...)`
//! option, or the client's default), keyed by the storage key, with a TTL
//! of the tier's (never more than the store's).
//!
//! Coherence, in the process: values enter the tier only from a flight
//! that is still current (see [`Flights::while_current`](crate::singleflight::Flights::while_current)),
//! and `invalidate`, `update` and `invalidate_all` detach the flights and
//! drop the values under the same lock, so a get that starts after they
//! returned never sees an older value. Across processes: every write of a
//! store with a tier is announced to the other processes (on Redis and
//! Redis Cluster, a pub/sub message per store carrying the keys, see
//! [`notices`]); a process drops what it hears. While it cannot hear (not
//! yet subscribed, or its push connection was lost) the tier is neither
//! read nor filled, and it is emptied when hearing resumes: a missed notice
//! never leaves a value served. Backends without a push channel (memcached,
//! file) bound staleness by the tier's TTL alone.

pub(crate) mod notices;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache as Moka;

use crate::keeping::Kept;
use crate::singleflight::Flights;
use crate::spec::{LocalTier, StoreSpec};
use crate::stampede::Heard;

/// A value held in a tier, with the dates it was stored with (stores with
/// `stale_for`, `refresh_after`, `none_ttl` or `ttl_from`; `u64::MAX`
/// for others): it is served only while fresh, and reported due for a
/// refresh past `due`.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) value: Kept,
    /// When it is due for refresh-ahead, in ms since the Unix epoch.
    pub(crate) due: u64,
    /// When it stops being fresh, in ms since the Unix epoch.
    pub(crate) until: u64,
    /// When it stops being servable by the fail-safe (`stale_for`), in ms
    /// since the Unix epoch.
    pub(crate) stale_until: u64,
    /// The tiers' epoch when it was held: a value held before the tiers
    /// last stopped being vouched for is never served as fresh.
    pub(crate) epoch: u64,
}

impl Held {
    /// A value without dates: served for the tier's TTL.
    pub(crate) fn undated(value: Kept) -> Self {
        Held {
            value,
            due: u64::MAX,
            until: u64::MAX,
            stale_until: 0,
            epoch: 0,
        }
    }
}

/// One store's tier.
struct Tier {
    values: Moka<String, Held>,
    /// Whether its values are kept (until their stale end) through a loss
    /// of the announcements, as a last resort of the fail-safe.
    keeps_stale: bool,
}

/// The local tiers of one client's stores.
pub(crate) struct LocalTiers {
    /// Per store (by name: unique in a program, checked when the client
    /// is built), its values.
    stores: HashMap<&'static str, Tier, BuildHasherDefault<NameHasher>>,
    /// Whether the tiers may be used: the backend announces no changes
    /// (the TTL is the bound), or this process is hearing the
    /// announcements.
    vouched: AtomicBool,
    /// Bumped whenever the tiers stop being vouched for.
    epoch: AtomicU64,
}

impl LocalTiers {
    /// The tiers of `stores`: each store's own `local`, else `default`.
    /// `vouched`: whether they may be used before any notice is heard.
    pub(crate) fn new(stores: &[&'static StoreSpec], default: Option<LocalTier>, vouched: bool) -> Self {
        let mut tiers = LocalTiers {
            stores: HashMap::default(),
            vouched: AtomicBool::new(vouched),
            epoch: AtomicU64::new(1),
        };
        for spec in stores {
            if let Some(tier) = spec.local.or(default) {
                tiers.add(spec, tier);
            }
        }
        tiers
    }

    fn add(&mut self, spec: &'static StoreSpec, tier: LocalTier) {
        let ttl = tier
            .ttl
            .map_or(spec.ttl, |ttl| ttl.min(spec.ttl))
            .max(Duration::from_millis(1));
        // Values with a stale end are kept until it (each is served as
        // fresh only until its own freshness ends), for the fail-safe.
        let keeps_stale = spec.stale_for.is_some();
        let ttl = match spec.stale_for {
            Some(stale_for) => spec.ttl.saturating_add(stale_for).min(crate::MAX_TTL),
            None => ttl,
        };
        let values = Moka::builder()
            .max_capacity(tier.capacity.max(1))
            .time_to_live(ttl)
            .build();
        self.stores.insert(spec.name, Tier { values, keeps_stale });
    }

    /// Whether no store has a tier.
    pub(crate) fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Whether `spec` has a tier.
    pub(crate) fn has(&self, spec: &StoreSpec) -> bool {
        self.stores.contains_key(spec.name)
    }

    /// The tier of `spec`, if it has one and it may be used now.
    fn usable(&self, spec: &StoreSpec) -> Option<&Moka<String, Held>> {
        if !self.vouched.load(Ordering::Acquire) {
            return None;
        }
        self.stores.get(spec.name).map(|tier| &tier.values)
    }

    /// The value held for `key`, if any (with its dates: the caller
    /// checks them against its clock), and held since the tiers were
    /// last vouched for.
    pub(crate) fn get(&self, spec: &StoreSpec, key: &str) -> Option<Held> {
        let held = self.usable(spec)?.get(key)?;
        (held.epoch == self.epoch.load(Ordering::Acquire)).then_some(held)
    }

    /// The value held for `key` whatever the tiers' state, for the
    /// fail-safe's last resort (the caller checks its stale end).
    pub(crate) fn get_stale(&self, spec: &StoreSpec, key: &str) -> Option<Held> {
        self.stores.get(spec.name)?.values.get(key)
    }

    /// Holds `value` for `key` (call it under
    /// [`Flights::while_current`](crate::singleflight::Flights::while_current)).
    pub(crate) fn insert(&self, spec: &StoreSpec, key: &str, mut value: Held) {
        if let Some(tier) = self.usable(spec) {
            value.epoch = self.epoch.load(Ordering::Acquire);
            tier.insert(key.to_owned(), value);
        }
    }

    /// How many values `spec`'s tier holds, as moka last counted them
    /// (cheap; evictions and expiries are counted as moka catches up).
    pub(crate) fn count(&self, spec: &StoreSpec) -> u64 {
        self.stores.get(spec.name).map_or(0, |tier| tier.values.entry_count())
    }

    /// Drops what is held for `key` of `spec`.
    pub(crate) fn remove(&self, spec: &StoreSpec, key: &str) {
        if let Some(tier) = self.stores.get(spec.name) {
            tier.values.invalidate(key);
        }
    }

    /// Drops what is held for `keys` of the store named `store` (a notice).
    pub(crate) fn remove_named(&self, store: &str, keys: &[&str]) {
        let Some(tier) = self.stores.get(store) else {
            return;
        };
        if keys.is_empty() {
            tier.values.invalidate_all();
        }
        for key in keys {
            tier.values.invalidate(*key);
        }
    }

    /// Drops everything `spec`'s tier holds.
    pub(crate) fn clear_store(&self, spec: &StoreSpec) {
        if let Some(tier) = self.stores.get(spec.name) {
            tier.values.invalidate_all();
        }
    }

    /// Stops using the tiers and empties them (notices can no longer be
    /// heard), or starts using them again, empty (notices are heard again;
    /// whatever was missed meanwhile is gone with the values).
    pub(crate) fn vouch(&self, vouched: bool) {
        self.vouched.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // Values of stores with `stale_for` stay, no longer served as
        // fresh (their epoch has passed), as the fail-safe's last resort.
        for tier in self.stores.values().filter(|tier| !tier.keeps_stale) {
            tier.values.invalidate_all();
        }
        if vouched {
            self.vouched.store(true, Ordering::Release);
        }
    }

    /// Whether the tiers are in use now.
    pub(crate) fn vouched(&self) -> bool {
        self.vouched.load(Ordering::Acquire)
    }

    /// The names of the stores with a tier.
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stores.keys().copied()
    }

    /// How many values the tiers hold (after moka's pending evictions and
    /// expiries are applied).
    pub(crate) fn len(&self) -> u64 {
        self.stores
            .values()
            .map(|tier| {
                tier.values.run_pending_tasks();
                tier.values.entry_count()
            })
            .sum()
    }
}

/// FNV-1a over a store's name: every local hit looks its store's tier up
/// by name, and SipHash (the default, which resists keys chosen to
/// collide) showed in a local hit's profile. Store names are the
/// program's own identifiers, not input, so collisions are no concern.
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl std::fmt::Debug for LocalTiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTiers")
            .field("stores", &self.stores.len())
            .field("vouched", &self.vouched())
            .finish()
    }
}

/// What a process does with what its coordinator hears: drops the keys
/// another process announced (detaching their flights, see
/// [`Flights::detach_with`]); stops using the tiers when the connection is
/// lost and starts again, empty, once every store is heard again.
pub(crate) fn hear(tiers: &LocalTiers, flights: &Flights, hearing: &notices::Hearing, me: u64, heard: Heard<'_>) {
    match heard {
        Heard::Announcement { store, payload } => {
            let Some((sender, keys)) = notices::parse(payload) else {
                return;
            };
            if sender == me {
                return;
            }
            if keys.is_empty() {
                flights.detach_all_with(|| tiers.remove_named(store, &[]));
            }
            for key in keys {
                flights.detach_with(key, || tiers.remove_named(store, &[key]));
            }
        }
        Heard::Listening { store } => {
            if hearing.heard(store) {
                tiers.vouch(true);
            }
        }
        Heard::Lost => {
            hearing.lost();
            tiers.vouch(false);
        }
    }
}

/// A random id for this client's announcements.
pub(crate) fn sender_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}
