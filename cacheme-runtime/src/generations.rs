//! The generation counters a client has read, and when: the per-client
//! cache behind `invalidate_all` by generation (see `store::generation`,
//! which builds the keys and counters).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// How long a client trusts a generation it has read, by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// The generations a client has read, and when.
#[derive(Debug)]
pub(crate) struct Generations {
    refresh: Duration,
    seen: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Generations {
    pub(crate) fn new(refresh: Duration) -> Self {
        Generations {
            refresh,
            seen: Mutex::default(),
        }
    }

    /// The current generation of `counter`: the cached one if fresh, else
    /// read from the backend (an absent counter is generation 0).
    pub(crate) async fn current(&self, backend: &dyn Backend, counter: &str) -> Result<u64> {
        let not_a_generation = || Error::NotAnInteger {
            provider: backend.provider(),
            key: counter.to_owned(),
        };
        if let Some(&(generation, read_at)) = self.lock().get(counter)
            && read_at.elapsed() < self.refresh
        {
            return Ok(generation);
        }
        let generation = match backend.get(counter).await? {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(not_a_generation)?,
        };
        self.remember(counter, generation);
        Ok(generation)
    }

    /// Moves `counter` to a new generation; this client sees it at once.
    pub(crate) async fn bump(&self, backend: &dyn Backend, counter: &str) -> Result<u64> {
        let generation = backend.incr_by(counter, 1).await?;
        let generation = u64::try_from(generation).map_err(|_| Error::NotAnInteger {
            provider: backend.provider(),
            key: counter.to_owned(),
        })?;
        self.remember(counter, generation);
        Ok(generation)
    }

    fn remember(&self, counter: &str, generation: u64) {
        self.lock().insert(counter.to_owned(), (generation, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
