//! The tier itself: its TTL (run by a test's clock), its bound, what it
//! keeps for the fail-safe, and what vouching does.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::key::KeyTemplate;
use crate::testing::TestClock;

const TEMPLATE: KeyTemplate = KeyTemplate {
    source: "t",
    parts: &[],
};

/// Store TTL 60 s, tier TTL 10 s.
static SHORT: StoreSpec = StoreSpec::new("Short", TEMPLATE, Duration::from_secs(60))
    .local(Some(LocalTier::new(100).with_ttl(Duration::from_secs(10))));

/// A tier TTL above the store's (600 s > 60 s).
static LONG: StoreSpec = StoreSpec::new("Long", TEMPLATE, Duration::from_secs(60))
    .local(Some(LocalTier::new(100).with_ttl(Duration::from_secs(600))));

/// Store TTL 60 s, kept 600 s more for the fail-safe; tier TTL 30 s.
static STALE: StoreSpec = StoreSpec::new("Stale", TEMPLATE, Duration::from_secs(60))
    .stale_for(Some(Duration::from_secs(600)))
    .local(Some(LocalTier::new(100).with_ttl(Duration::from_secs(30))));

/// No tier of its own.
static BARE: StoreSpec = StoreSpec::new("Bare", TEMPLATE, Duration::from_secs(60));

fn tiers(clock: &TestClock) -> LocalTiers {
    LocalTiers::new(&[&SHORT, &LONG, &STALE, &BARE], None, true).timed_by(Clock::driven(clock))
}

fn held(n: u32) -> Held {
    Held::undated(Arc::new(n))
}

fn value(held: Option<Held>) -> Option<u32> {
    held.and_then(|held| held.value.downcast_ref::<u32>().copied())
}

#[test]
fn a_value_is_served_within_the_tier_ttl_and_never_after() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    tiers.insert(&SHORT, "k", held(1), 8);
    assert_eq!(value(tiers.get(&SHORT, "k")), Some(1));
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(value(tiers.get(&SHORT, "k")), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(value(tiers.get(&SHORT, "k")), None, "at its TTL");
    // Read past its TTL (and not kept for a fail-safe), it was dropped.
    assert_eq!(tiers.count(&SHORT), 0);
    assert_eq!(value(tiers.get_stale(&SHORT, "k")), None);
    // Held again, its TTL runs from then.
    tiers.insert(&SHORT, "k", held(2), 8);
    clock.advance(Duration::from_secs(5));
    assert_eq!(value(tiers.get(&SHORT, "k")), Some(2));
}

#[test]
fn the_tier_ttl_never_exceeds_the_stores() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    tiers.insert(&LONG, "k", held(1), 8);
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(value(tiers.get(&LONG, "k")), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(value(tiers.get(&LONG, "k")), None);
}

#[test]
fn values_past_their_ttl_are_not_counted() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    for n in 0..5 {
        tiers.insert(&SHORT, &format!("k{n}"), held(n), 8);
    }
    assert_eq!(tiers.len(), 5);
    clock.advance(Duration::from_secs(10));
    assert_eq!(tiers.len(), 0, "nothing read them, and still they are gone");
}

#[test]
fn a_store_with_stale_for_keeps_its_values_for_the_fail_safe_only() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    tiers.insert(&STALE, "k", held(1), 8);
    clock.advance(Duration::from_secs(30));
    assert_eq!(value(tiers.get(&STALE, "k")), None, "served only within the tier's TTL");
    assert_eq!(value(tiers.get_stale(&STALE, "k")), Some(1), "kept for the last resort");
    assert_eq!(tiers.len(), 1);
    // Kept until the store's TTL and stale window have passed.
    clock.advance(Duration::from_secs(629));
    assert_eq!(value(tiers.get_stale(&STALE, "k")), Some(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(value(tiers.get_stale(&STALE, "k")), None);
    assert_eq!(tiers.len(), 0);
}

#[test]
fn the_capacity_bounds_what_a_tier_holds() {
    for capacity in [1, 7, 100, 1_000, 1_001, 10_000] {
        static SPEC: StoreSpec = StoreSpec::new("Bounded", TEMPLATE, Duration::from_secs(60));
        let clock = TestClock::new();
        let tiers = LocalTiers::new(&[&SPEC], Some(LocalTier::new(capacity)), true).timed_by(Clock::driven(&clock));
        for n in 0..capacity * 5 {
            tiers.insert(&SPEC, &format!("key:{n}"), held(0), 8);
            // Some values are read, as hot keys are.
            let _ = tiers.get(&SPEC, "key:0");
        }
        let held = tiers.len();
        assert!(held <= capacity, "capacity {capacity}: holds {held}");
        assert!(held >= capacity / 2, "capacity {capacity}: holds only {held}");
        assert_eq!(tiers.count(&SPEC), held);
    }
}

#[test]
fn a_byte_bound_holds_both_bounds() {
    static SPEC: StoreSpec = StoreSpec::new("Weighed", TEMPLATE, Duration::from_secs(60));
    const CAPACITY: u64 = 1_000;
    const MAX_BYTES: u64 = 64_000;
    // (value size, how many the bytes allow, how many the capacity allows)
    for size in [0, 10, 100, 1_000] {
        let clock = TestClock::new();
        let bounds = LocalTier::new(CAPACITY).with_max_bytes(MAX_BYTES);
        let tiers = LocalTiers::new(&[&SPEC], Some(bounds), true).timed_by(Clock::driven(&clock));
        let mut bytes_of_held = 0;
        for n in 0..CAPACITY * 5 {
            let key = format!("key:{n:05}");
            tiers.insert(&SPEC, &key, held(0), size);
            bytes_of_held = (size + key.len()) as u64;
        }
        let held = tiers.len();
        assert!(held <= CAPACITY, "values of {size} bytes: holds {held}");
        assert!(
            held * bytes_of_held <= MAX_BYTES,
            "values of {size} bytes: holds {held}, {} bytes",
            held * bytes_of_held
        );
        // Full, not starved: within quick_cache's per-shard rounding of
        // whichever bound binds.
        let allowed = CAPACITY.min(MAX_BYTES / bytes_of_held);
        assert!(
            held >= allowed / 2,
            "values of {size} bytes: holds only {held} of {allowed}"
        );
    }
}

#[test]
fn a_value_heavier_than_a_shard_is_not_held() {
    static SPEC: StoreSpec = StoreSpec::new("Heavy", TEMPLATE, Duration::from_secs(60));
    let clock = TestClock::new();
    let bounds = LocalTier::new(100).with_max_bytes(1_000);
    let tiers = LocalTiers::new(&[&SPEC], Some(bounds), true).timed_by(Clock::driven(&clock));
    tiers.insert(&SPEC, "light", held(1), 5);
    tiers.insert(&SPEC, "heavy", held(2), 5_000);
    assert_eq!(value(tiers.get(&SPEC, "light")), Some(1));
    assert_eq!(value(tiers.get(&SPEC, "heavy")), None);
}

#[test]
fn a_store_without_a_tier_holds_nothing() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    assert!(!tiers.has(&BARE));
    tiers.insert(&BARE, "k", held(1), 8);
    assert_eq!(value(tiers.get(&BARE, "k")), None);
    assert_eq!(tiers.count(&BARE), 0);
}

#[test]
fn removing_drops_keys_and_stores() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    for key in ["a", "b", "c"] {
        tiers.insert(&SHORT, key, held(1), 8);
        tiers.insert(&LONG, key, held(1), 8);
    }
    tiers.remove(&SHORT, "a");
    assert_eq!(value(tiers.get(&SHORT, "a")), None);
    tiers.remove_named("Short", &["b"]);
    assert_eq!(value(tiers.get(&SHORT, "b")), None);
    assert_eq!(value(tiers.get(&SHORT, "c")), Some(1));
    tiers.remove_named("Short", &[]);
    assert_eq!(tiers.count(&SHORT), 0);
    assert_eq!(tiers.count(&LONG), 3, "another store's tier is untouched");
    tiers.clear_store(&LONG);
    assert_eq!(tiers.len(), 0);
}

#[test]
fn unvouched_tiers_serve_nothing_and_keep_only_the_fail_safes_values() {
    let clock = TestClock::new();
    let tiers = tiers(&clock);
    tiers.insert(&SHORT, "k", held(1), 8);
    tiers.insert(&STALE, "k", held(2), 8);
    tiers.vouch(false);
    assert_eq!(value(tiers.get(&SHORT, "k")), None);
    assert_eq!(value(tiers.get(&STALE, "k")), None);
    tiers.insert(&SHORT, "k", held(3), 8);
    assert_eq!(tiers.count(&SHORT), 0, "nothing enters an unvouched tier");
    assert_eq!(value(tiers.get_stale(&STALE, "k")), Some(2));
    tiers.vouch(true);
    assert_eq!(value(tiers.get(&SHORT, "k")), None);
    assert_eq!(
        value(tiers.get(&STALE, "k")),
        None,
        "held before the tiers were last vouched for: never served as fresh"
    );
    tiers.insert(&STALE, "k", held(4), 8);
    assert_eq!(value(tiers.get(&STALE, "k")), Some(4));
}

#[test]
fn store_names_hash_apart_and_equal() {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let hash = |name: &str| BuildHasherDefault::<NameHasher>::default().hash_one(name);
    assert_eq!(hash("BookStore"), hash(&String::from("BookStore")));
    let names = [
        "A",
        "B",
        "AB",
        "BookStore",
        "BookStoreV2",
        "AuthorStore",
        "a-very-long-store-name-1",
        "a-very-long-store-name-2",
    ];
    let distinct: std::collections::HashSet<u64> = names.iter().map(|name| hash(name)).collect();
    assert_eq!(distinct.len(), names.len());
}
