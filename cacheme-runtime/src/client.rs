//! [`Client`]: what typed stores run on (a cache, a codec, a logger, the
//! singleflight table), and [`Context`], how a store finds it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::codec::Codec;
use crate::error::{Error, Op, Result};
use crate::logger::{self, Event, EventKind, Logger};
use crate::singleflight::Flights;
use crate::stampede::polling::PollingCoordinator;
use crate::stampede::{Coordination, Coordinator, DEFAULT_LOCK_TTL};
use crate::store::generation::{self, Generations};
use crate::store::spec::{STORES, StoreSpec, check_unique};

/// The runtime of typed stores. Cheap to clone; clones share everything.
///
/// Building one checks every `#[cache_store]` in the program and refuses
/// two with the same name or key pattern ([`Error::DuplicateStore`](crate::Error::DuplicateStore)),
/// so the mistake is seen before any traffic is served.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use cacheme_runtime::{Cache, Client, Codec};
///
/// let memory = Client::memory()?;                         // the default backend
/// let redis_like = Client::builder()
///     .cache(Cache::open("memory://?capacity=1000").await?) // any Cache: redis://, ...
///     .codec(Codec::Json)
///     .build()?;
/// # Ok::<(), cacheme_runtime::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache,
    codec: Codec,
    logger: Option<Arc<dyn Logger>>,
    flights: Flights,
    /// Set where the backend cannot list keys: stores invalidate by
    /// generation (see `store::generation`).
    generations: Option<Generations>,
    /// The backend's cross-process stampede coordinator, if it has one.
    coordinator: Option<Arc<dyn Coordinator>>,
    /// The fetch lock's TTL of stores that do not set `lock_ttl`.
    lock_ttl: Duration,
}

/// The shortest fetch lock [`ClientBuilder::lock_ttl`] and a store's
/// `lock_ttl` accept: 100 ms. A shorter lock expires before its holder's
/// first renewal reaches the server, so other processes take it and fetch
/// the same key again.
pub const MIN_LOCK_TTL: Duration = Duration::from_millis(100);

/// The longest fetch lock accepted: one day. The holder renews its lock
/// while it fetches, so a long fetch needs no long lock; a long lock only
/// makes waiters wait longer when a holder dies.
pub const MAX_LOCK_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Builds a [`Client`].
#[derive(Default)]
#[must_use]
pub struct ClientBuilder {
    cache: Option<Cache>,
    codec: Option<Codec>,
    logger: Option<Arc<dyn Logger>>,
    generation_refresh: Option<Duration>,
    lock_ttl: Option<Duration>,
}

impl ClientBuilder {
    /// The cache (and so the backend and its key prefix) to use. Default:
    /// an in-process memory cache.
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The codec of stores that do not name one. Default: the cache's
    /// codec (bincode unless changed).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Receives HIT / MISS / FETCH and error events of every store.
    pub fn logger(mut self, logger: impl Logger) -> Self {
        self.logger = Some(Arc::new(logger));
        self
    }

    /// On backends that cannot list their keys (memcached), how long this
    /// client trusts a store generation it has read: another process's
    /// `invalidate_all` is seen within this time. Default 1 s; zero reads
    /// the generation on every call (one more backend read per call).
    pub fn generation_refresh(mut self, refresh: Duration) -> Self {
        self.generation_refresh = Some(refresh);
        self
    }

    /// How long a cross-process fetch lock lives for stores that do not set
    /// `lock_ttl` (default 10 s). The holder renews it while its fetch
    /// runs; if the holder dies, waiters take over after this long.
    ///
    /// Must lie between [`MIN_LOCK_TTL`] (100 ms) and [`MAX_LOCK_TTL`]
    /// (one day): [`build`](Self::build) refuses anything else (zero
    /// included) with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = Some(ttl);
        self
    }

    /// Builds the client, refusing duplicate stores and a `lock_ttl` (the
    /// client's or a store's) outside [`MIN_LOCK_TTL`]..=[`MAX_LOCK_TTL`].
    pub fn build(self) -> Result<Client> {
        check_unique(&STORES)?;
        if let Some(ttl) = self.lock_ttl {
            check_lock_ttl(ttl, "ClientBuilder::lock_ttl")?;
        }
        for spec in STORES.iter() {
            if let Some(ttl) = spec.lock_ttl {
                check_lock_ttl(
                    ttl,
                    &format!("the lock_ttl of {} ({}:{})", spec.name, spec.file, spec.line),
                )?;
            }
        }
        let cache = self
            .cache
            .unwrap_or_else(|| Cache::from_backend(crate::MemoryBackend::with_capacity(crate::DEFAULT_CAPACITY)));
        let generations = (!cache.backend().supports_delete_matching())
            .then(|| Generations::new(self.generation_refresh.unwrap_or(generation::DEFAULT_REFRESH)));
        let coordinator = match cache.backend().coordination() {
            Coordination::InProcess => None,
            Coordination::Polling => Some(Arc::new(PollingCoordinator::new(Arc::clone(cache.backend()))) as _),
            Coordination::Custom(coordinator) => Some(coordinator),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                generations,
                coordinator,
                lock_ttl: self.lock_ttl.unwrap_or(DEFAULT_LOCK_TTL),
                codec: self.codec.unwrap_or(cache.codec()),
                cache,
                logger: self.logger,
                flights: Flights::default(),
            }),
        })
    }
}

/// Refuses a fetch lock TTL outside [`MIN_LOCK_TTL`]..=[`MAX_LOCK_TTL`];
/// `what` names where it was set.
fn check_lock_ttl(ttl: Duration, what: &str) -> Result<()> {
    if (MIN_LOCK_TTL..=MAX_LOCK_TTL).contains(&ttl) {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        op: Op::Lock,
        reason: format!("{what} is {ttl:?}; a fetch lock must live between {MIN_LOCK_TTL:?} and {MAX_LOCK_TTL:?}"),
    })
}

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client on a fresh in-process memory cache.
    pub fn memory() -> Result<Client> {
        Client::builder().build()
    }

    /// A client on the cache at `url` (see [`Cache::open`]).
    pub async fn open(url: &str) -> Result<Client> {
        Client::builder().cache(Cache::open(url).await?).build()
    }

    /// The cache underneath (also usable directly, untyped).
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// The codec of stores that do not name one.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// How many keys are being fetched under `singleflight` right now.
    /// Zero whenever no get is in progress: waiters that leave (timeout,
    /// cancellation) leave nothing behind.
    pub fn inflight(&self) -> usize {
        self.inner.flights.len()
    }

    /// Every store declared in the program.
    pub fn stores() -> &'static [&'static StoreSpec] {
        &STORES
    }

    /// Whether `other` is a clone of this client.
    pub(crate) fn same(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    /// How many gets wait, right now, for another process's fetch (the
    /// coordinator's table of waiters). Zero whenever none waits: waiters
    /// that leave (timeout, cancellation) leave nothing behind.
    pub fn waiting(&self) -> usize {
        self.inner.coordinator.as_ref().map_or(0, |c| c.waiting())
    }

    pub(crate) fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        self.inner.coordinator.as_ref()
    }

    pub(crate) fn lock_ttl(&self) -> Duration {
        self.inner.lock_ttl
    }

    pub(crate) fn generations(&self) -> Option<&Generations> {
        self.inner.generations.as_ref()
    }

    pub(crate) fn log(&self, kind: EventKind, spec: &StoreSpec, key: &str, error: Option<&crate::Error>) {
        logger::emit(
            self.inner.logger.as_deref(),
            Event {
                kind,
                store: spec.name,
                key,
                error,
            },
        );
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("cache", &self.inner.cache)
            .field("codec", &self.inner.codec)
            .field("logger", &self.inner.logger.is_some())
            .finish()
    }
}

/// How a store finds its [`Client`] from the fetcher's context (the first
/// parameter of a `#[cache_store]` function).
///
/// ```
/// use cacheme_runtime::{Client, Context};
///
/// struct App {
///     cache: Client,
///     // db: Pool, ...
/// }
///
/// impl Context for App {
///     fn cacheme(&self) -> &Client {
///         &self.cache
///     }
/// }
/// ```
pub trait Context {
    /// The client the stores of this context use.
    fn cacheme(&self) -> &Client;
}

impl Context for Client {
    fn cacheme(&self) -> &Client {
        self
    }
}

impl<T: Context + ?Sized> Context for Arc<T> {
    fn cacheme(&self) -> &Client {
        (**self).cacheme()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ttls_are_checked_against_both_bounds_naming_where_they_were_set() {
        for ttl in [MIN_LOCK_TTL, Duration::from_secs(10), MAX_LOCK_TTL] {
            check_lock_ttl(ttl, "x").unwrap();
        }
        for ttl in [
            Duration::ZERO,
            Duration::from_millis(99),
            MAX_LOCK_TTL * 2,
            Duration::MAX,
        ] {
            let error = check_lock_ttl(ttl, "the lock_ttl of BookStore (src/lib.rs:3)").unwrap_err();
            assert!(matches!(error, Error::InvalidArgument { op: Op::Lock, .. }), "{error}");
            assert!(error.to_string().contains("BookStore (src/lib.rs:3)"), "{error}");
        }
    }
}
