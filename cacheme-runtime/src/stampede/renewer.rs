//! One renewer per client: every fetch lock held by this process is
//! renewed by a single background task, in one
//! [`renew_many`](super::Coordinator::renew_many) call per round (one
//! command per node on Redis), instead of a renewal loop per fetch.
//!
//! A lock is renewed every third of its TTL while its fetch runs. Past the
//! client's `fetch_timeout` (if set) it is no longer renewed but released,
//! so waiters compete again while the slow fetch goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stampede::{Coordinator, LockRequest};

/// A held lock, as the renewer sees it.
struct Held {
    key: String,
    token: String,
    ttl: Duration,
    /// When to renew it next.
    due: Instant,
    /// Past this, release it instead (the client's `fetch_timeout`).
    expires: Option<Instant>,
}

#[derive(Default)]
struct Table {
    held: HashMap<u64, Held>,
    next_id: u64,
    task: Option<JoinHandle<()>>,
    /// When the renewer will look at the table next (`None`: it is looking
    /// now). A lock due later needs no wake-up: a batch of 100,000 locks
    /// must not wake it (and make it scan the table) 100,000 times.
    next_wake: Option<Instant>,
}

/// The renewer of one client (see the module docs). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Renewer {
    coordinator: Arc<dyn Coordinator>,
    table: Arc<Mutex<Table>>,
    wake: Arc<Notify>,
    /// Held while a renewal round is on the wire.
    round: Arc<tokio::sync::Mutex<()>>,
    fetch_timeout: Option<Duration>,
    /// How long one renewal round may take.
    budget: Duration,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer").field("held", &self.held()).finish()
    }
}

impl Renewer {
    pub(crate) fn new(coordinator: Arc<dyn Coordinator>, fetch_timeout: Option<Duration>, budget: Duration) -> Self {
        Renewer {
            coordinator,
            table: Arc::default(),
            wake: Arc::default(),
            round: Arc::default(),
            fetch_timeout,
            budget,
        }
    }

    pub(crate) fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Entries are independent: a panic cannot leave the map torn.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many locks are being renewed now.
    pub(crate) fn held(&self) -> usize {
        self.table().held.len()
    }

    /// Starts renewing `key`'s lock held with `token`; returns the handle
    /// to [`release`](Self::release) it with.
    pub(crate) fn hold(&self, key: &str, token: &str, ttl: Duration) -> u64 {
        let now = Instant::now();
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        let held = Held {
            key: key.to_owned(),
            token: token.to_owned(),
            ttl,
            due: now + (ttl / 3).max(Duration::from_millis(1)),
            expires: self.fetch_timeout.map(|limit| now + limit),
        };
        let first = held.expires.map_or(held.due, |at| at.min(held.due));
        let wake = table.next_wake.is_some_and(|at| first < at);
        table.held.insert(id, held);
        if table.task.as_ref().is_none_or(JoinHandle::is_finished)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let renewer = self.clone();
            table.next_wake = None;
            table.task = Some(runtime.spawn(async move { renewer.run().await }));
        }
        drop(table);
        if wake {
            self.wake.notify_one();
        }
        id
    }

    /// Waits for a renewal round on the wire to end.
    pub(crate) async fn quiesce(&self) {
        drop(self.round.lock().await);
    }

    /// Stops renewing a lock (its fetch ended; the lease settles it).
    pub(crate) fn release(&self, id: u64) {
        self.table().held.remove(&id);
    }

    async fn run(self) {
        loop {
            let (due, expired, next) = {
                let mut table = self.table();
                if table.held.is_empty() {
                    table.task = None;
                    table.next_wake = None;
                    return;
                }
                let now = Instant::now();
                let mut due = Vec::new();
                let mut expired = Vec::new();
                let mut next = now + Duration::from_secs(3600);
                table.held.retain(|_, held| {
                    if held.expires.is_some_and(|at| at <= now) {
                        expired.push((held.key.clone(), held.token.clone()));
                        return false;
                    }
                    if held.due <= now {
                        due.push((held.key.clone(), held.token.clone(), held.ttl));
                        held.due = now + (held.ttl / 3).max(Duration::from_millis(1));
                    }
                    next = next.min(held.due);
                    if let Some(at) = held.expires {
                        next = next.min(at);
                    }
                    true
                });
                // Set under the lock: a lock held from now on that is due
                // before `next` wakes the renewer (see `hold`).
                table.next_wake = (due.is_empty() && expired.is_empty()).then_some(next);
                (due, expired, next)
            };
            let round = self.round.lock().await;
            for (key, token) in &expired {
                tracing::warn!(target: "cacheme", key, "fetch ran past fetch_timeout; its lock is released");
                let release = self.coordinator.abandon(key, token);
                let _ = tokio::time::timeout(self.budget, release).await;
            }
            if !due.is_empty() {
                let requests: Vec<LockRequest<'_>> = due
                    .iter()
                    .map(|(key, token, ttl)| LockRequest { key, token, ttl: *ttl })
                    .collect();
                match tokio::time::timeout(self.budget, self.coordinator.renew_many(&requests)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(target: "cacheme", %error, "could not renew fetch locks"),
                    Err(_) => tracing::warn!(target: "cacheme", "renewing fetch locks timed out"),
                }
                drop(round);
                continue;
            }
            drop(round);
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}
