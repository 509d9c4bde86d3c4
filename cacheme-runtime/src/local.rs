//! The local tier: decoded values of a store held in this process over a
//! remote backend (Redis, Redis Cluster, memcached, file), served without
//! a round trip and without decoding.
//!
//! One bounded map per store that has a tier (its `local(...)` option, or
//! the client's default), keyed by the storage key: a
//! [`quick_cache`](quick_cache::sync::Cache) (sharded, each shard under a
//! read-write lock; a hit is a hash and a read lock, nothing queued, no
//! background work), bounded by entries. Expiry is checked when a value is
//! read, against the time it was held and the tier's TTL (never more than
//! the store's): a value past it is never served, and is dropped when read
//! after it is no longer kept (the capacity bound evicts what is not read).
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
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache as Quick;

use crate::clock::Clock;
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

/// What a tier holds for a key: the value, when it was held (the tier's
/// TTL runs from then), and its encoded size plus its key's length (its
/// weight in a tier bounded by bytes).
#[derive(Clone)]
struct Entry {
    held: Held,
    held_at: Instant,
    bytes: u64,
}

/// What a value weighs in its tier: 1 in a tier bounded by entries alone;
/// in one bounded by bytes too, its bytes, and at least the bytes bound's
/// share per entry (`max_bytes / capacity`), so that neither bound is
/// passed.
#[derive(Clone, Copy)]
struct Weight {
    /// `None`: every value weighs 1.
    floor: Option<u64>,
}

impl quick_cache::Weighter<String, Entry> for Weight {
    fn weight(&self, _: &String, entry: &Entry) -> u64 {
        self.floor.map_or(1, |floor| entry.bytes.max(floor))
    }
}

/// One store's tier.
struct Tier {
    /// The store whose values these are.
    spec: &'static StoreSpec,
    values: Quick<String, Entry, Weight>,
    /// How long a value is served after it was held: the tier's TTL.
    serve_for: Duration,
    /// How long it is kept: `serve_for`, or for a store with `stale_for`
    /// until the end of its stale window (for the fail-safe's last resort).
    keep_for: Duration,
    /// Whether its values are kept (until their stale end) through a loss
    /// of the announcements, as a last resort of the fail-safe.
    keeps_stale: bool,
}

impl Tier {
    /// A tier of at most `bounds.capacity` values (and `bounds.max_bytes`
    /// bytes, if set).
    fn new(
        spec: &'static StoreSpec,
        bounds: LocalTier,
        serve_for: Duration,
        keep_for: Duration,
        keeps_stale: bool,
    ) -> Self {
        let capacity = usize::try_from(bounds.capacity.max(1)).unwrap_or(usize::MAX);
        // quick_cache bounds each shard by an equal share of the weight
        // and rounds the share up; give it a capacity the shard count
        // divides, so the whole tier never holds more than its bounds. Its
        // own rule for the shard count: about 4 per core, each shard at
        // least 32 values.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut shards = cores.saturating_mul(4).next_power_of_two();
        while shards > 1 && capacity / shards < 32 {
            shards /= 2;
        }
        let bound = (capacity / shards * shards).max(1);
        let (weight, weight_capacity) = match bounds.max_bytes {
            None => (Weight { floor: None }, bound as u64),
            Some(max_bytes) => {
                let max_bytes = max_bytes.max(1) / shards as u64 * shards as u64;
                // Each value weighs at least this: `bound` of them fill
                // the tier, however small they are.
                let floor = (max_bytes / bound as u64).max(1);
                (
                    Weight { floor: Some(floor) },
                    (floor * bound as u64).min(max_bytes).max(1),
                )
            }
        };
        let options = quick_cache::OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(bound)
            .weight_capacity(weight_capacity)
            .build()
            .expect("every option is set");
        let values = Quick::with_options(
            options,
            weight,
            quick_cache::DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        );
        Tier {
            spec,
            values,
            serve_for,
            keep_for,
            keeps_stale,
        }
    }

    /// Whether a value held at `held_at` is past being kept at `now`.
    fn gone(&self, held_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(held_at) >= self.keep_for
    }

    /// The entry of `key` while it is kept at `now` (dropped if it is not:
    /// unless a newer one replaced it meanwhile).
    fn kept(&self, key: &str, now: Instant) -> Option<Entry> {
        let entry = self.values.get(key)?;
        if self.gone(entry.held_at, now) {
            self.values.remove_if(key, |entry| self.gone(entry.held_at, now));
            return None;
        }
        Some(entry)
    }

    /// Drops every value no longer kept at `now`.
    fn purge(&self, now: Instant) {
        self.values.retain(|_, entry| !self.gone(entry.held_at, now));
    }
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
    /// The time the tiers' TTLs run by (the client's: a test's clock).
    clock: Clock,
}

impl LocalTiers {
    /// The tiers of `stores`: each store's own `local`, else `default`;
    /// none for a store with `local = false`.
    /// `vouched`: whether they may be used before any notice is heard.
    pub(crate) fn new(stores: &[&'static StoreSpec], default: Option<LocalTier>, vouched: bool) -> Self {
        let mut tiers = LocalTiers {
            stores: HashMap::default(),
            vouched: AtomicBool::new(vouched),
            epoch: AtomicU64::new(1),
            clock: Clock::default(),
        };
        for spec in stores {
            if let Some(tier) = spec.local_tier(default) {
                tiers.add(spec, tier);
            }
        }
        tiers
    }

    /// The same tiers, their TTLs run by `clock`.
    pub(crate) fn timed_by(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn add(&mut self, spec: &'static StoreSpec, tier: LocalTier) {
        let serve_for = tier
            .ttl
            .map_or(spec.ttl, |ttl| ttl.min(spec.ttl))
            .max(Duration::from_millis(1));
        // Values with a stale end are kept until it (each is served as
        // fresh only until its own freshness ends), for the fail-safe.
        let keeps_stale = spec.stale_for.is_some();
        let keep_for = match spec.stale_for {
            Some(stale_for) => spec.ttl.saturating_add(stale_for).min(crate::MAX_TTL).max(serve_for),
            None => serve_for,
        };
        let tier = Tier::new(spec, tier, serve_for, keep_for, keeps_stale);
        self.stores.insert(spec.name, tier);
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
    fn usable(&self, spec: &StoreSpec) -> Option<&Tier> {
        if !self.vouched.load(Ordering::Acquire) {
            return None;
        }
        self.stores.get(spec.name)
    }

    /// The value held for `key`, if any, within the tier's TTL and held
    /// since the tiers were last vouched for (with its dates: the caller
    /// checks them against its clock).
    pub(crate) fn get(&self, spec: &StoreSpec, key: &str) -> Option<Held> {
        let tier = self.usable(spec)?;
        let entry = tier.values.get(key)?;
        if entry.held.epoch != self.epoch.load(Ordering::Acquire) {
            return None;
        }
        let now = self.clock.now();
        if now.saturating_duration_since(entry.held_at) >= tier.serve_for {
            if tier.gone(entry.held_at, now) {
                tier.values.remove_if(key, |entry| tier.gone(entry.held_at, now));
            }
            return None;
        }
        Some(entry.held)
    }

    /// The value held for `key` whatever the tiers' state, for the
    /// fail-safe's last resort (the caller checks its stale end).
    pub(crate) fn get_stale(&self, spec: &StoreSpec, key: &str) -> Option<Held> {
        let tier = self.stores.get(spec.name)?;
        tier.kept(key, self.clock.now()).map(|entry| entry.held)
    }

    /// Holds `value` for `key`, `size` bytes encoded (call it under
    /// [`Flights::while_current`](crate::singleflight::Flights::while_current)).
    pub(crate) fn insert(&self, spec: &StoreSpec, key: &str, mut value: Held, size: usize) {
        if let Some(tier) = self.usable(spec) {
            value.epoch = self.epoch.load(Ordering::Acquire);
            let entry = Entry {
                held: value,
                held_at: self.clock.now(),
                bytes: (size as u64).saturating_add(key.len() as u64),
            };
            tier.values.insert(key.to_owned(), entry);
        }
    }

    /// How many values `spec`'s tier holds (cheap: values past the tier's
    /// TTL are counted until they are read or evicted).
    pub(crate) fn count(&self, spec: &StoreSpec) -> u64 {
        self.stores.get(spec.name).map_or(0, |tier| tier.values.len() as u64)
    }

    /// The store named `store` (every store when `None`) with how many
    /// values its tier holds, as [`count`](Self::count) counts: for the
    /// `cacheme.local.entries` gauge, after values left.
    pub(crate) fn counts<'a>(&'a self, store: Option<&'a str>) -> impl Iterator<Item = (&'static StoreSpec, u64)> + 'a {
        self.stores
            .iter()
            .filter(move |(name, _)| store.is_none_or(|store| store == **name))
            .map(|(_, tier)| (tier.spec, tier.values.len() as u64))
    }

    /// Drops what is held for `key` of `spec`.
    pub(crate) fn remove(&self, spec: &StoreSpec, key: &str) {
        if let Some(tier) = self.stores.get(spec.name) {
            tier.values.remove(key);
        }
    }

    /// Drops what is held for `keys` of the store named `store` (a notice).
    pub(crate) fn remove_named(&self, store: &str, keys: &[&str]) {
        let Some(tier) = self.stores.get(store) else {
            return;
        };
        if keys.is_empty() {
            tier.values.clear();
        }
        for key in keys {
            tier.values.remove(*key);
        }
    }

    /// Drops everything `spec`'s tier holds.
    pub(crate) fn clear_store(&self, spec: &StoreSpec) {
        if let Some(tier) = self.stores.get(spec.name) {
            tier.values.clear();
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
            tier.values.clear();
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

    /// How many values the tiers hold (values no longer kept are dropped
    /// first).
    pub(crate) fn len(&self) -> u64 {
        let now = self.clock.now();
        self.stores
            .values()
            .map(|tier| {
                tier.purge(now);
                tier.values.len() as u64
            })
            .sum()
    }
}

/// A store name's length and its first and last eight bytes: every local
/// hit looks its store's tier up by name, and hashing the whole name
/// (SipHash, then FNV-1a byte by byte) showed in a local hit's profile.
/// Store names are the program's own identifiers, not input, and the map
/// compares the names themselves: a collision costs a probe, nothing more.
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let word = |chunk: &[u8]| {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(buf)
        };
        let head = word(&bytes[..bytes.len().min(8)]);
        let tail = word(&bytes[bytes.len().saturating_sub(8)..]);
        let mixed = (self.0 ^ head ^ tail.rotate_left(29) ^ bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = mixed ^ (mixed >> 32);
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
