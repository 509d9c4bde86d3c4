//! In-process coalescing of concurrent loads of one key (`singleflight`).
//!
//! The first caller of a key becomes the leader and runs the fetch; later
//! callers follow and wait for the leader's encoded value. Followers
//! survive the leader going away: if its fetch fails, panics, or its future
//! is dropped (cancelled, timed out), the leader's guard reports the flight
//! abandoned on drop and the followers compete again, one of them becoming
//! the new leader. The table entry is removed when the leader finishes or
//! goes away, so the table never outgrows the keys being loaded right now.
//!
//! Values travel between tasks as the encoded bytes the leader also wrote to
//! the cache, so stored types need not be `Clone`; when they are (see
//! [`ValueKeeping`](crate::keeping::ValueKeeping)), the leader hands its
//! decoded value along too and each follower takes a clone of it instead
//! of decoding the bytes again. A failed fetch's error
//! travels too when the store's error type can be shared (see
//! [`ErrorSharing`]): the followers of a failed flight return that error
//! instead of calling the source again, so N callers of a failing key make
//! one fetch, not N in a row.
//!
//! A follower's wait is bounded (`max_wait`) without a timer per follower:
//! one follower of a flight at a time watches it with a timer, the others
//! wait for its outcome alone. A watcher that goes away hands the watch to
//! another follower; one whose timer fires takes the flight over (see
//! [`Flights::take_over`]), which releases the stuck flight's other
//! followers to follow the new one.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::keeping::Kept;
use crate::sharing::SharedError;

/// How one flight ended, set once; while unset the flight is running.
#[derive(Debug)]
enum Phase {
    /// The leader's encoded value, its decoded value when values of the
    /// store's type can be kept, and `cached`: read from the cache (else
    /// fetched).
    Done {
        bytes: Arc<[u8]>,
        decoded: Option<Kept>,
        cached: bool,
    },
    /// The leader's fetch failed; its error, if it could be shared.
    Failed(Option<SharedError>),
    /// The leader panicked, was dropped, or was taken over: compete again.
    Abandoned,
}

/// One flight: its outcome once there is one, and the followers waiting
/// for it.
#[derive(Debug, Default)]
struct Flight {
    phase: OnceLock<Phase>,
    /// Woken when the phase is set or the watch is given up.
    event: Notify,
    /// Whether a follower watches the flight with a timer.
    watched: AtomicBool,
}

impl Flight {
    /// Sets the flight's outcome, unless it has one, and wakes its
    /// followers.
    fn land(&self, phase: Phase) {
        if self.phase.set(phase).is_ok() {
            self.event.notify_waiters();
        }
    }
}

/// How a flight ended, as a follower learns it: borrowed from the flight
/// (which the follower holds), so learning it touches no reference count
/// the other followers share.
#[derive(Debug)]
pub(crate) enum Landed<'a> {
    /// The leader's encoded value and, if values of the store's type can
    /// be kept, its decoded one (a follower takes a clone of it rather
    /// than decode); `cached`: read from the cache (a hit), else fetched
    /// from the source.
    Value {
        bytes: &'a [u8],
        decoded: Option<&'a Kept>,
        cached: bool,
    },
    /// The leader's fetch failed with this error (`None`: an error that
    /// cannot be shared; the follower fetches by itself rather than start
    /// another flight that would fail one caller after another).
    Failed(Option<&'a SharedError>),
    /// The leader went away without an outcome to share.
    Abandoned,
}

type Table = HashMap<Arc<str>, Arc<Flight>, foldhash::fast::RandomState>;

/// How many locks the table is split under: concurrent callers of
/// different keys rarely meet on one.
const SHARDS: usize = 16;

/// The table of keys being loaded right now: per key, its flight; split
/// by key hash into shards, each under its own lock.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    shards: [Mutex<Table>; SHARDS],
    hasher: foldhash::fast::RandomState,
}

/// What a caller of [`Flights::join`] is to do.
pub(crate) enum Role<'a> {
    /// Run the fetch, then report through the guard.
    Leader(LeaderGuard<'a>),
    /// Wait for the leader.
    Follower(Follower),
}

impl Flights {
    /// Joins the flight for `key`, starting it if there is none.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut table = self.lock(key);
        if let Some(flight) = table.get(key) {
            return Role::Follower(Follower {
                flight: Arc::clone(flight),
            });
        }
        self.start(&mut table, key)
    }

    /// For a follower whose leader has not answered within its wait: the
    /// first such follower replaces the stuck flight and leads a new one
    /// (the stuck leader, if it ever finishes, no longer touches the
    /// table), and the stuck flight's other followers are released to
    /// follow the new one; later callers follow whatever flight is current.
    pub(crate) fn take_over(&self, key: &str, stuck: &Follower) -> Role<'_> {
        let mut table = self.lock(key);
        let role = match table.get(key) {
            Some(flight) if Arc::ptr_eq(flight, &stuck.flight) => self.start(&mut table, key),
            Some(flight) => Role::Follower(Follower {
                flight: Arc::clone(flight),
            }),
            None => self.start(&mut table, key),
        };
        drop(table);
        stuck.flight.land(Phase::Abandoned);
        role
    }

    fn start(&self, table: &mut Table, key: &str) -> Role<'_> {
        let key: Arc<str> = Arc::from(key);
        let flight = Arc::new(Flight::default());
        table.insert(Arc::clone(&key), Arc::clone(&flight));
        Role::Leader(LeaderGuard {
            flights: self,
            key,
            flight,
        })
    }

    /// Detaches the flight of `key`, if any, and runs `also` (dropping a
    /// local value) atomically with it: a caller arriving from now on
    /// starts a new flight instead of joining one that may have read the
    /// value before the caller's invalidation, and the detached flight can
    /// no longer keep its value locally (see [`while_current`](Self::while_current)).
    /// The detached flight's followers still get its outcome (they joined
    /// before).
    pub(crate) fn detach_with(&self, key: &str, also: impl FnOnce()) {
        let mut table = self.lock(key);
        table.remove(key);
        also();
    }

    /// Detaches every flight (see [`detach_with`](Self::detach_with)).
    pub(crate) fn detach_all_with(&self, also: impl FnOnce()) {
        // Every shard locked (always in this order) while `also` runs.
        let mut tables: Vec<_> = self.shards.iter().map(lock).collect();
        for table in &mut tables {
            table.clear();
        }
        also();
    }

    /// Runs `f` only if `guard`'s flight is still the current one of its
    /// key (not detached by an invalidation since it began), atomically
    /// with respect to [`detach_with`](Self::detach_with): an invalidation
    /// either happened before (then `f` does not run) or waits for `f`.
    pub(crate) fn while_current<R>(&self, guard: &LeaderGuard<'_>, f: impl FnOnce() -> R) -> Option<R> {
        let table = self.lock(&guard.key);
        let current = guard.is_current(&table);
        current.then(f)
    }

    /// How many keys are being loaded right now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// The shard of `key`, locked.
    fn lock(&self, key: &str) -> MutexGuard<'_, Table> {
        let hash = self.hasher.hash_one(key);
        lock(&self.shards[(hash % SHARDS as u64) as usize])
    }
}

fn lock(shard: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A table holds no invariant a panic could break mid-update.
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held by the leader; reports the outcome, or abandonment when dropped
/// without one.
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: Arc<str>,
    flight: Arc<Flight>,
}

impl LeaderGuard<'_> {
    /// Whether anyone follows the flight now: when nobody does, its
    /// decoded value need not be kept for followers (one arriving later
    /// decodes the bytes).
    pub(crate) fn followed(&self) -> bool {
        // The table's reference and this guard's; more are followers'.
        Arc::strong_count(&self.flight) > 2
    }

    /// Hands the fetched value, encoded, to the followers.
    pub(crate) fn finish(self, value: Arc<[u8]>) {
        self.finish_with(value, None);
    }

    /// Hands the fetched value to the followers: encoded, and decoded
    /// (`decoded`) if it can be kept.
    pub(crate) fn finish_with(self, value: Arc<[u8]>, decoded: Option<Kept>) {
        self.flight.land(Phase::Done {
            bytes: value,
            decoded,
            cached: false,
        });
        // Drop removes the entry; the outcome stays readable by followers.
    }

    /// Hands the value read from the cache to the followers.
    pub(crate) fn finish_read(self, value: Arc<[u8]>) {
        self.finish_read_with(value, None);
    }

    /// Hands the value read from the cache to the followers: encoded, and
    /// decoded (`decoded`) if it can be kept.
    pub(crate) fn finish_read_with(self, value: Arc<[u8]>, decoded: Option<Kept>) {
        self.flight.land(Phase::Done {
            bytes: value,
            decoded,
            cached: true,
        });
    }

    /// Tells the followers the fetch failed, with its error if it can be
    /// shared.
    pub(crate) fn fail(self, error: Option<SharedError>) {
        self.flight.land(Phase::Failed(error));
    }

    fn is_current(&self, table: &Table) -> bool {
        table
            .get(&*self.key)
            .is_some_and(|flight| Arc::ptr_eq(flight, &self.flight))
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        {
            let mut table = self.flights.lock(&self.key);
            // Unless a follower took the flight over meanwhile.
            if self.is_current(&table) {
                table.remove(&*self.key);
            }
        }
        self.flight.land(Phase::Abandoned);
    }
}

/// Waits for a flight's leader.
pub(crate) struct Follower {
    flight: Arc<Flight>,
}

impl Follower {
    /// How the flight ended. Cancel safe: a follower whose wait is dropped
    /// can wait again or [`take_over`](Flights::take_over).
    pub(crate) async fn outcome(&self) -> Landed<'_> {
        self.flight.outcome().await
    }

    /// How the flight ended, or `None` when this follower watched it for
    /// `max_wait` with no outcome (then it is to
    /// [`take_over`](Flights::take_over)). One follower of a flight at a
    /// time watches with a timer; the others wait for the outcome or for
    /// the watch to be given up (the watcher's future dropped), then one
    /// of them watches on, for `max_wait` from then. Cancel safe.
    pub(crate) async fn outcome_within(&self, max_wait: Duration) -> Option<Landed<'_>> {
        let flight = &*self.flight;
        loop {
            // Made before looking, so a landing or a watch given up in
            // between still wakes it.
            let event = flight.event.notified();
            if let Some(outcome) = flight.landed() {
                return Some(outcome);
            }
            // Looked at first: most followers find it watched, and a swap
            // would write the line every follower reads.
            if !flight.watched.load(Ordering::Acquire) && !flight.watched.swap(true, Ordering::AcqRel) {
                let _watch = Watch(flight);
                return tokio::time::timeout(max_wait, flight.outcome()).await.ok();
            }
            event.await;
        }
    }
}

impl Flight {
    async fn outcome(&self) -> Landed<'_> {
        loop {
            let event = self.event.notified();
            if let Some(outcome) = self.landed() {
                return outcome;
            }
            event.await;
        }
    }

    fn landed(&self) -> Option<Landed<'_>> {
        Some(match self.phase.get()? {
            Phase::Done { bytes, decoded, cached } => Landed::Value {
                bytes,
                decoded: decoded.as_ref(),
                cached: *cached,
            },
            Phase::Failed(error) => Landed::Failed(error.as_ref()),
            Phase::Abandoned => Landed::Abandoned,
        })
    }
}

/// A follower's watch of a flight; given up when dropped, waking the
/// other followers if the flight is still running, so one of them
/// watches on.
struct Watch<'a>(&'a Flight);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.0.watched.store(false, Ordering::Release);
        if self.0.phase.get().is_none() {
            self.0.event.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_value_and_the_table_empties() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(follower) = flights.join("k") else {
            panic!("second caller follows")
        };
        assert_eq!(flights.len(), 1);
        leader.finish(Arc::from(&b"v"[..]));
        assert_eq!(flights.len(), 0);
        assert!(matches!(follower.outcome().await, Landed::Value { bytes, cached: false, .. } if bytes == b"v"));
    }

    #[test]
    fn an_invalidate_all_detaches_the_flights_of_every_shard() {
        let flights = Flights::default();
        let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
        let leaders: Vec<_> = keys
            .iter()
            .map(|key| match flights.join(key) {
                Role::Leader(guard) => guard,
                Role::Follower(_) => panic!("a new key leads"),
            })
            .collect();
        assert_eq!(flights.len(), keys.len());
        assert!(keys.iter().all(|key| matches!(flights.join(key), Role::Follower(_))));
        let mut ran = false;
        flights.detach_all_with(|| ran = true);
        assert!(ran);
        assert_eq!(flights.len(), 0);
        assert!(
            leaders
                .iter()
                .all(|guard| flights.while_current(guard, || ()).is_none()),
            "no detached flight is current"
        );
        let again: Vec<_> = keys.iter().map(|key| flights.join(key)).collect();
        assert!(
            again.iter().all(|role| matches!(role, Role::Leader(_))),
            "callers after it lead anew"
        );
        drop(leaders);
        assert_eq!(flights.len(), keys.len(), "old leaders leave the new flights in place");
        drop(again);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(follower) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(matches!(follower.outcome().await, Landed::Abandoned));
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k"), Role::Leader(_)), "the next caller leads");
    }

    #[tokio::test]
    async fn a_failed_leader_shares_its_error() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(follower) = flights.join("k") else {
            panic!()
        };
        let sharing = crate::sharing::ErrorSharing::<String>::by_clone();
        leader.fail(sharing.share(&"down".to_owned()));
        let Landed::Failed(Some(error)) = follower.outcome().await else {
            panic!("the follower hears the failure")
        };
        assert_eq!(sharing.restore(error).as_deref(), Some("down"));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_detached_flight_is_not_joined_and_keeps_nothing() {
        let flights = Flights::default();
        let Role::Leader(old) = flights.join("k") else { panic!() };
        let Role::Follower(early) = flights.join("k") else {
            panic!()
        };
        assert_eq!(flights.while_current(&old, || 1), Some(1));
        let mut dropped = false;
        flights.detach_with("k", || dropped = true);
        assert!(dropped);
        assert_eq!(
            flights.while_current(&old, || 1),
            None,
            "a detached flight keeps nothing"
        );
        let Role::Leader(new) = flights.join("k") else {
            panic!("a caller after the invalidation starts a new flight")
        };
        old.finish_read(Arc::from(&b"old"[..]));
        assert!(
            matches!(early.outcome().await, Landed::Value { bytes, cached: true, .. } if bytes == b"old"),
            "who joined before still gets the old flight's value"
        );
        assert_eq!(flights.len(), 1, "the old leader leaves the new flight alone");
        drop(new);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn followers_get_the_leaders_decoded_value() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        assert!(!leader.followed(), "nobody follows yet");
        let Role::Follower(follower) = flights.join("k") else {
            panic!()
        };
        assert!(leader.followed());
        let keeping = crate::keeping::ValueKeeping::<String>::by_clone();
        leader.finish_read_with(Arc::from(&b"bytes"[..]), keeping.keep(&"v".to_owned()));
        let Landed::Value {
            decoded: Some(kept),
            cached: true,
            ..
        } = follower.outcome().await
        else {
            panic!("the follower gets the decoded value")
        };
        assert_eq!(keeping.take(kept).as_deref(), Some("v"));
    }

    /// Waits until `follower`'s flight is watched by one of its followers.
    async fn watched(follower: &Follower) {
        while !follower.flight.watched.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_follower_watches_and_a_dropped_watch_is_taken_on() {
        let flights = Flights::default();
        let Role::Leader(_stuck) = flights.join("k") else {
            panic!()
        };
        let (Role::Follower(first), Role::Follower(second)) = (flights.join("k"), flights.join("k")) else {
            panic!()
        };
        let max_wait = Duration::from_secs(10);
        let watching = tokio::spawn(async move { first.outcome_within(max_wait).await.is_none() });
        let probe = Follower {
            flight: Arc::clone(&second.flight),
        };
        watched(&probe).await;
        // The second follower waits without a timer while the first watches.
        let waiting = tokio::spawn(async move { second.outcome_within(max_wait).await.is_none() });
        tokio::task::yield_now().await;
        watching.abort();
        assert!(watching.await.unwrap_err().is_cancelled());
        // The watch given up, the second follower watches on and times out
        // (the paused clock runs ahead when every task is idle).
        let waited = tokio::time::timeout(max_wait * 3, waiting)
            .await
            .expect("the second follower was never told the watch was given up");
        assert!(waited.unwrap(), "the second follower watched and timed out");
        assert!(!probe.flight.watched.load(Ordering::Acquire), "its watch ended with it");
    }

    #[tokio::test]
    async fn taking_a_flight_over_releases_its_other_followers() {
        let flights = Flights::default();
        let Role::Leader(_stuck) = flights.join("k") else {
            panic!()
        };
        let (Role::Follower(first), Role::Follower(second)) = (flights.join("k"), flights.join("k")) else {
            panic!()
        };
        let Role::Leader(new) = flights.take_over("k", &first) else {
            panic!()
        };
        assert!(
            matches!(second.outcome().now_or_never(), Some(Landed::Abandoned)),
            "released at once to follow the new flight"
        );
        let Role::Follower(rejoined) = flights.join("k") else {
            panic!()
        };
        new.finish(Arc::from(&b"v"[..]));
        assert!(matches!(rejoined.outcome().await, Landed::Value { .. }));
    }

    #[tokio::test]
    async fn a_stuck_flight_is_taken_over_once() {
        let flights = Flights::default();
        let Role::Leader(stuck) = flights.join("k") else {
            panic!()
        };
        let (Role::Follower(first), Role::Follower(second)) = (flights.join("k"), flights.join("k")) else {
            panic!()
        };
        let Role::Leader(new) = flights.take_over("k", &first) else {
            panic!("the first to give up leads a new flight")
        };
        let Role::Follower(later) = flights.take_over("k", &second) else {
            panic!("the next one follows the new flight")
        };
        drop(stuck);
        assert_eq!(flights.len(), 1, "the stuck leader leaves the new flight alone");
        new.finish(Arc::from(&b"v"[..]));
        assert!(matches!(later.outcome().await, Landed::Value { .. }));
        assert_eq!(flights.len(), 0);
    }
}
