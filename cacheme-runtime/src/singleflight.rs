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
//! the cache, so stored types need not be `Clone`. A failed fetch's error
//! travels too when the store's error type can be shared (see
//! [`ErrorSharing`]): the followers of a failed flight return that error
//! instead of calling the source again, so N callers of a failing key make
//! one fetch, not N in a row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::sharing::SharedError;

/// The state of one flight, as seen by its followers.
#[derive(Clone, Debug)]
enum Phase {
    Running,
    /// The leader's encoded value; `cached`: read from the cache (else
    /// fetched).
    Done {
        bytes: Arc<[u8]>,
        cached: bool,
    },
    /// The leader's fetch failed; its error, if it could be shared.
    Failed(Option<SharedError>),
    /// The leader panicked or was dropped: compete again.
    Abandoned,
}

/// How a flight ended, as a follower learns it.
#[derive(Debug)]
pub(crate) enum Landed {
    /// The leader's encoded value; `cached`: read from the cache (a hit),
    /// else fetched from the source.
    Value { bytes: Arc<[u8]>, cached: bool },
    /// The leader's fetch failed with this error (`None`: an error that
    /// cannot be shared; the follower fetches by itself rather than start
    /// another flight that would fail one caller after another).
    Failed(Option<SharedError>),
    /// The leader went away without an outcome to share.
    Abandoned,
}

/// The table of keys being loaded right now: per key, its flight's id
/// and channel.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    table: Mutex<HashMap<String, (u64, watch::Receiver<Phase>)>>,
    next_id: std::sync::atomic::AtomicU64,
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
        let mut table = self.lock();
        if let Some((id, rx)) = table.get(key) {
            return Role::Follower(Follower {
                id: *id,
                rx: rx.clone(),
            });
        }
        self.start(&mut table, key)
    }

    /// For a follower whose leader has not answered within its wait: the
    /// first such follower replaces the stuck flight and leads a new one
    /// (the stuck leader, if it ever finishes, no longer touches the
    /// table); the others follow whatever flight is current.
    pub(crate) fn take_over(&self, key: &str, stuck: &Follower) -> Role<'_> {
        let mut table = self.lock();
        match table.get(key) {
            Some((id, _)) if *id == stuck.id => self.start(&mut table, key),
            Some((id, rx)) => Role::Follower(Follower {
                id: *id,
                rx: rx.clone(),
            }),
            None => self.start(&mut table, key),
        }
    }

    fn start(&self, table: &mut HashMap<String, (u64, watch::Receiver<Phase>)>, key: &str) -> Role<'_> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(Phase::Running);
        table.insert(key.to_owned(), (id, rx));
        Role::Leader(LeaderGuard {
            flights: self,
            key: key.to_owned(),
            id,
            tx,
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
        let mut table = self.lock();
        table.remove(key);
        also();
    }

    /// Detaches every flight (see [`detach_with`](Self::detach_with)).
    pub(crate) fn detach_all_with(&self, also: impl FnOnce()) {
        let mut table = self.lock();
        table.clear();
        also();
    }

    /// Runs `f` only if `guard`'s flight is still the current one of its
    /// key (not detached by an invalidation since it began), atomically
    /// with respect to [`detach_with`](Self::detach_with): an invalidation
    /// either happened before (then `f` does not run) or waits for `f`.
    pub(crate) fn while_current<R>(&self, guard: &LeaderGuard<'_>, f: impl FnOnce() -> R) -> Option<R> {
        let table = self.lock();
        let current = table.get(&guard.key).is_some_and(|(id, _)| *id == guard.id);
        current.then(f)
    }

    /// How many keys are being loaded right now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, watch::Receiver<Phase>)>> {
        // The table holds no invariant a panic could break mid-update.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held by the leader; reports the outcome, or abandonment when dropped
/// without one.
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: String,
    id: u64,
    tx: watch::Sender<Phase>,
}

impl LeaderGuard<'_> {
    /// Hands the fetched value, encoded, to the followers.
    pub(crate) fn finish(self, value: Arc<[u8]>) {
        self.tx.send_replace(Phase::Done {
            bytes: value,
            cached: false,
        });
        // Drop removes the entry; the Done phase stays readable by followers.
    }

    /// Hands the value read from the cache to the followers.
    pub(crate) fn finish_read(self, value: Arc<[u8]>) {
        self.tx.send_replace(Phase::Done {
            bytes: value,
            cached: true,
        });
    }

    /// Tells the followers the fetch failed, with its error if it can be
    /// shared.
    pub(crate) fn fail(self, error: Option<SharedError>) {
        self.tx.send_replace(Phase::Failed(error));
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        {
            let mut table = self.flights.lock();
            // Unless a follower took the flight over meanwhile.
            if table.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                table.remove(&self.key);
            }
        }
        self.tx.send_if_modified(|phase| match phase {
            Phase::Running => {
                *phase = Phase::Abandoned;
                true
            }
            _ => false,
        });
    }
}

/// Waits for a flight's leader.
pub(crate) struct Follower {
    id: u64,
    rx: watch::Receiver<Phase>,
}

impl Follower {
    /// How the flight ended. Cancel safe: a follower whose wait is dropped
    /// (a timeout) can wait again or [`take_over`](Flights::take_over).
    pub(crate) async fn outcome(&mut self) -> Landed {
        match self.rx.wait_for(|phase| !matches!(phase, Phase::Running)).await {
            Ok(phase) => match &*phase {
                Phase::Done { bytes, cached } => Landed::Value {
                    bytes: bytes.clone(),
                    cached: *cached,
                },
                Phase::Failed(error) => Landed::Failed(error.clone()),
                Phase::Running | Phase::Abandoned => Landed::Abandoned,
            },
            Err(_) => Landed::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_value_and_the_table_empties() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(mut follower) = flights.join("k") else {
            panic!("second caller follows")
        };
        assert_eq!(flights.len(), 1);
        leader.finish(Arc::from(&b"v"[..]));
        assert_eq!(flights.len(), 0);
        assert!(matches!(follower.outcome().await, Landed::Value { bytes, cached: false } if &*bytes == b"v"));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(mut follower) = flights.join("k") else {
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
        let Role::Follower(mut follower) = flights.join("k") else {
            panic!()
        };
        let sharing = crate::sharing::ErrorSharing::<String>::by_clone();
        leader.fail(sharing.share(&"down".to_owned()));
        let Landed::Failed(Some(error)) = follower.outcome().await else {
            panic!("the follower hears the failure")
        };
        assert_eq!(sharing.restore(&error).as_deref(), Some("down"));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_detached_flight_is_not_joined_and_keeps_nothing() {
        let flights = Flights::default();
        let Role::Leader(old) = flights.join("k") else { panic!() };
        let Role::Follower(mut early) = flights.join("k") else {
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
            matches!(early.outcome().await, Landed::Value { bytes, cached: true } if &*bytes == b"old"),
            "who joined before still gets the old flight's value"
        );
        assert_eq!(flights.len(), 1, "the old leader leaves the new flight alone");
        drop(new);
        assert_eq!(flights.len(), 0);
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
        let Role::Follower(mut later) = flights.take_over("k", &second) else {
            panic!("the next one follows the new flight")
        };
        drop(stuck);
        assert_eq!(flights.len(), 1, "the stuck leader leaves the new flight alone");
        new.finish(Arc::from(&b"v"[..]));
        assert!(matches!(later.outcome().await, Landed::Value { .. }));
        assert_eq!(flights.len(), 0);
    }
}
