//! [`Client`]: what typed stores run on (a cache, a codec, a logger, the
//! singleflight table), and [`Context`], how a store finds it.

use crate::clock::Clock;
use crate::testing::TestClock;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::breaker::{Breaker, DEFAULT_COOLDOWN, DEFAULT_FAILURE_THRESHOLD, Transition};
use crate::cache::Cache;
use crate::codec::Codec;
use crate::error::{Error, Op, Result};
use crate::generations::{self, Generations};
use crate::local::notices::Hearing;
use crate::local::{self, LocalTiers};
use crate::logger::{self, Event, EventKind, Logger};
use crate::memory::MemoryBackend;
use crate::observe::{self, Observer, Stats};
use crate::polling::PollingCoordinator;
use crate::singleflight::Flights;
use crate::spec::{LocalTier, STORES, StoreSpec, check_unique};
use crate::stampede::renewer::Renewer;
use crate::stampede::{Coordination, Coordinator, DEFAULT_LOCK_TTL, Heard};

/// The runtime of typed stores. Cheap to clone; clones share everything.
///
/// Building one checks every `#[cache_store]` in the program and refuses
/// two with the same name or key templates that can produce the same key
/// ([`Error::DuplicateStore`](crate::Error::DuplicateStore), naming both and
/// such a key), so the mistake is seen before any traffic is served.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use cacheme::{Cache, Client, Codec};
///
/// let memory = Client::memory()?;                         // the default backend
/// let redis_like = Client::builder()
///     .cache(Cache::open("memory://?capacity=1000").await?) // any Cache: redis://, ...
///     .codec(Codec::Json)
///     .build()?;
/// # Ok::<(), cacheme::Error>(())
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
    /// The stores' local tiers (over a remote backend).
    local: LocalTiers,
    /// Set when the backend is the memory backend: typed hits read its
    /// entries directly (and skip decoding).
    memory: Option<MemoryBackend>,
    /// This client's id in local-tier announcements.
    id: u64,
    /// Whether writes of stores without a tier here are announced too
    /// ([`ClientBuilder::announce_all_writes`]).
    announce_all: bool,
    /// Set once this client listens for local-tier announcements.
    hearing: std::sync::OnceLock<Hearing>,
    /// Set where the backend cannot list keys: stores invalidate by
    /// generation (see `store::generation`).
    generations: Option<Generations>,
    /// The backend's cross-process stampede coordinator, if it has one.
    coordinator: Option<Arc<dyn Coordinator>>,
    /// Renews the fetch locks this client holds (with a coordinator).
    renewer: Option<Renewer>,
    /// The fetch lock's TTL of stores that do not set `lock_ttl`.
    lock_ttl: Duration,
    /// The budget of one call's cache steps.
    cache_timeout: Duration,
    /// How long a get waits for another caller's fetch (`None`: the lock
    /// TTL of the store).
    max_wait: Option<Duration>,
    breaker: Breaker,
    /// Permits for fills running off the callers' path.
    fills: Arc<Semaphore>,
    /// The size of `fills`.
    max_pending_fills: u32,
    /// How many per-key fetches one batch runs at once.
    fetch_concurrency: usize,
    /// Counts events for `stats` and the metrics.
    observer: Observer,
    /// The time freshness is judged by.
    clock: Clock,
    /// Keys being refreshed ahead of their expiry by this client.
    refreshing: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Due keys waiting for their store's batch refresh.
    refresh_batches: crate::store::RefreshBatches,
}

/// The budget of a typed call's cache work, by default.
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_millis(500);

/// How many fills may run off the callers' path at once, by default.
pub const DEFAULT_MAX_PENDING_FILLS: usize = 1024;

/// How many per-key fetches one `get_m` or pipeline runs at once, unless
/// [`ClientBuilder::fetch_concurrency`] says otherwise.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 64;

/// One in how many hits served in process (local tier hits, memory
/// backend hits) have their duration recorded in the
/// `cacheme.operation.duration` histogram, by default (feature `metrics`;
/// see [`ClientBuilder::in_process_hit_sampling`]).
pub const DEFAULT_IN_PROCESS_HIT_SAMPLING: u32 = 64;

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
    cache_timeout: Option<Duration>,
    max_wait: Option<Duration>,
    fetch_timeout: Option<Duration>,
    breaker: Option<(u32, Duration)>,
    max_pending_fills: Option<usize>,
    fetch_concurrency: Option<usize>,
    local: Option<LocalTier>,
    announce_all: bool,
    metrics: Option<bool>,
    hit_sampling: Option<u32>,
    clock: Option<TestClock>,
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

    /// Receives the events of every store (HIT / MISS / FETCH, waits,
    /// errors: see [`EventKind`]): a type implementing [`Logger`], an
    /// `Arc` of one, or a closure `|event: &Event<'_>| ...`.
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

    /// The budget of the cache work of one typed call (reading the key,
    /// taking the fetch lock; default 500 ms). A step that does not answer
    /// in time is abandoned and the caller is served from the source, as
    /// when the backend fails; the value's write then happens off the
    /// caller's path. Waiting for another caller's fetch is not cache
    /// work: [`max_wait`](Self::max_wait) bounds it. Like every time
    /// setting of the builder but `lock_ttl`, it is clamped to between
    /// 1 ms and one day.
    pub fn cache_timeout(mut self, budget: Duration) -> Self {
        self.cache_timeout = Some(budget);
        self
    }

    /// How long a get waits for another caller's fetch of the same key, in
    /// this process or in another (default: 30 s, or twice the store's lock
    /// TTL if that is longer). A fetch that is alive renews its lock, so
    /// this bounds only a holder that hangs. Past it the waiter fetches by
    /// itself, still one fetch per key in its process; waiters of a fleet
    /// spread out over a random part of a wait round rather than fetch at
    /// one instant.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// A hard limit on how long a fetch keeps its key's lock (default:
    /// none). A fetch still running past it stops renewing the lock and
    /// releases it, so waiters compete again; the fetch itself goes on and
    /// its caller still gets its result.
    pub fn fetch_timeout(mut self, limit: Duration) -> Self {
        self.fetch_timeout = Some(limit);
        self
    }

    /// The circuit breaker: after `failures` consecutive backend failures
    /// or timeouts (default 5), stores skip the cache for `cooldown`
    /// (default 5 s) and serve the source, still one fetch per key in the
    /// process; then one call probes the cache, and its success closes the
    /// breaker. Opening and closing are reported once each (`DEGRADED`,
    /// `RECOVERED`). `failures = 0` disables the breaker.
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker = Some((failures, cooldown));
        self
    }

    /// How many fetched values may be waiting to be written off the
    /// callers' path (default 1024). Past it, writes are dropped and
    /// reported (`FILL_DROPPED`); their locks expire by themselves.
    pub fn max_pending_fills(mut self, fills: usize) -> Self {
        self.max_pending_fills = Some(fills);
        self
    }

    /// How many per-key fetches one batch (a `get_m`, a pipeline) runs at
    /// once: its missed keys of stores without `fetch_many` are fetched
    /// this many at a time (default [`DEFAULT_FETCH_CONCURRENCY`], 64), so
    /// a `get_m` of 100,000 cold keys never sends 100,000 queries to the
    /// source at once. A store's `fetch_many` is called once per batch,
    /// whatever this says. Zero counts as one.
    pub fn fetch_concurrency(mut self, fetches: usize) -> Self {
        self.fetch_concurrency = Some(fetches);
        self
    }

    /// A local tier for every store that does not declare its own
    /// (`local(...)` on the store): decoded values held in this process
    /// over a remote backend, served without a round trip (see the
    /// `cache_store` docs for coherence across processes). A store
    /// declared with `local = false` is left out: it never has a tier, so
    /// each of its gets reads the backend. Stores whose
    /// value type is not `Clone + Send + Sync + 'static` are left without
    /// (each of their hits decodes; nothing is subscribed to or announced
    /// for them). Ignored on the memory backend, which already serves
    /// decoded values.
    ///
    /// Announcements are sent for the stores that have a tier in the
    /// writing process: give every process that writes (fills, `update`,
    /// `invalidate`) the same default, declare the tier on the store with
    /// `local(...)`, or have writers without a tier announce anyway
    /// ([`announce_all_writes`](Self::announce_all_writes)), so that no
    /// process writes unannounced.
    ///
    /// ```
    /// use cacheme::{Client, LocalTier};
    /// use std::time::Duration;
    ///
    /// let client = Client::builder()
    ///     .local(LocalTier::new(10_000).with_ttl(Duration::from_secs(30)))
    ///     .build()?;
    /// # Ok::<(), cacheme::Error>(())
    /// ```
    pub fn local(mut self, tier: LocalTier) -> Self {
        self.local = Some(tier);
        self
    }

    /// Announce this client's writes of every store (fills, `update`,
    /// `invalidate`, `invalidate_all`) to the other processes' local
    /// tiers, also of stores that have no tier in this client (default:
    /// only of stores with a tier here). For a process that writes but
    /// does not keep a tier (an admin task, a worker that only updates)
    /// while others read through one set with [`local`](Self::local):
    /// without announcements, their tiers would see its writes only when
    /// their TTL ends. Costs one `PUBLISH` (`SPUBLISH` on a cluster) per
    /// write; nothing on backends without a push channel.
    ///
    /// ```
    /// use cacheme::Client;
    ///
    /// let writer = Client::builder().announce_all_writes(true).build()?;
    /// # Ok::<(), cacheme::Error>(())
    /// ```
    pub fn announce_all_writes(mut self, on: bool) -> Self {
        self.announce_all = on;
        self
    }

    /// Whether this client records metrics through the `metrics` facade
    /// (default: yes; see `docs/observability.md`). Only with feature
    /// `metrics`; without it nothing is recorded. [`Client::stats`] counts
    /// either way.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, record: bool) -> Self {
        self.metrics = Some(record);
        self
    }

    /// Times one in `one_in` of the hits served in process (default
    /// [`DEFAULT_IN_PROCESS_HIT_SAMPLING`]; `1` times every call, `0`
    /// counts as `1`). Only with feature `metrics`.
    ///
    /// A hit from the local tier or the memory backend takes a few hundred
    /// nanoseconds, less than one histogram sample costs a recorder such as
    /// Prometheus's, so recording every one would make metrics the larger
    /// part of a hit. Of these hits `cacheme.operation.duration` receives
    /// each store's first, then one in `one_in` on each thread: its
    /// quantiles stay representative, its count is of samples. Every other
    /// call (misses, waits, remote hits, writes) is timed, and the counters
    /// (`cacheme.gets`, `cacheme.hits`) count every call and key.
    ///
    /// ```
    /// // Every call timed, whatever it costs.
    /// let client = cacheme::Client::builder().in_process_hit_sampling(1).build()?;
    /// # Ok::<(), cacheme::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    pub fn in_process_hit_sampling(mut self, one_in: u32) -> Self {
        self.hit_sampling = Some(one_in);
        self
    }

    /// Judges how old values are by `clock`, a clock the test drives,
    /// rather than the system's (see [`TestClock`]): the freshness of
    /// stores with `stale_for` or `refresh_after`, the expiry of the
    /// default memory backend and the TTL of the local tiers. A memory backend given with
    /// [`cache`](Self::cache) takes its own clock
    /// ([`MemoryBackend::with_clock`](crate::MemoryBackend::with_clock)).
    ///
    /// ```
    /// use cacheme::Client;
    /// use cacheme::testing::TestClock;
    ///
    /// let clock = TestClock::new();
    /// let client = Client::builder().clock(&clock).build()?;
    /// # Ok::<(), cacheme::Error>(())
    /// ```
    pub fn clock(mut self, clock: &TestClock) -> Self {
        self.clock = Some(clock.clone());
        self
    }

    /// Builds the client, refusing duplicate or overlapping stores and a
    /// `lock_ttl` (the client's or a store's) outside
    /// [`MIN_LOCK_TTL`]..=[`MAX_LOCK_TTL`].
    pub fn build(self) -> Result<Client> {
        check_unique(&STORES)?;
        for spec in STORES.iter() {
            if let Some(ttl) = spec.lock_ttl {
                check_lock_ttl(
                    ttl,
                    &format!("the lock_ttl of {} ({}:{})", spec.name, spec.file, spec.line),
                )?;
            }
        }
        self.assemble(&STORES)
    }

    /// The client, without checking the program's stores. Unit tests of
    /// this crate use it: their binary links the store registry twice
    /// (through the test support), which `STORES` refuses to read.
    #[cfg(test)]
    pub(crate) fn build_for_unit_tests(self) -> Result<Client> {
        self.assemble(&[])
    }

    fn assemble(self, stores: &[&'static StoreSpec]) -> Result<Client> {
        if let Some(ttl) = self.lock_ttl {
            check_lock_ttl(ttl, "ClientBuilder::lock_ttl")?;
        }
        let clock = self.clock.as_ref().map(Clock::driven).unwrap_or_default();
        let cache = self.cache.unwrap_or_else(|| {
            let memory = crate::MemoryBackend::with_capacity(crate::DEFAULT_CAPACITY);
            Cache::from_backend(match &self.clock {
                Some(clock) => memory.with_clock(clock),
                None => memory,
            })
        });
        // A client that records no metrics times no backend commands
        // either.
        let cache = match self.metrics {
            Some(false) => cache.without_metrics(),
            _ => cache,
        };
        let generations = (!cache.backend().supports_delete_matching())
            .then(|| Generations::new(self.generation_refresh.unwrap_or(generations::DEFAULT_REFRESH)));
        let coordinator = match cache.backend().coordination() {
            Coordination::InProcess => None,
            Coordination::Polling => Some(Arc::new(PollingCoordinator::new(Arc::clone(cache.backend()))) as _),
            Coordination::Custom(coordinator) => Some(coordinator),
        };
        // Time settings are clamped to [1 ms, one day]: no deadline of the
        // miss path can overflow, and a zero budget cannot skip the cache.
        let bounded = |d: Duration| d.clamp(Duration::from_millis(1), MAX_LOCK_TTL);
        let (failures, cooldown) = self.breaker.unwrap_or((DEFAULT_FAILURE_THRESHOLD, DEFAULT_COOLDOWN));
        let cooldown = bounded(cooldown);
        let cache_timeout = bounded(self.cache_timeout.unwrap_or(DEFAULT_CACHE_TIMEOUT));
        let max_wait = self.max_wait.map(bounded);
        let fetch_timeout = self.fetch_timeout.map(bounded);
        let max_pending_fills = u32::try_from(self.max_pending_fills.unwrap_or(DEFAULT_MAX_PENDING_FILLS))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        let renewer = coordinator
            .as_ref()
            .map(|c| Renewer::new(Arc::clone(c), fetch_timeout, cache_timeout));
        let memory = cache
            .backend()
            .as_any()
            .and_then(|backend| backend.downcast_ref::<MemoryBackend>())
            .cloned();
        // The memory backend serves decoded values itself: no tier over it.
        let local = match memory {
            Some(_) => LocalTiers::new(&[], None, true),
            None => LocalTiers::new(stores, self.local, false).timed_by(clock.clone()),
        };
        let observer = Observer::new(
            cache.provider(),
            self.metrics.unwrap_or(true),
            self.hit_sampling.unwrap_or(DEFAULT_IN_PROCESS_HIT_SAMPLING),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                observer,
                generations,
                coordinator,
                renewer,
                lock_ttl: self.lock_ttl.unwrap_or(DEFAULT_LOCK_TTL),
                cache_timeout,
                max_wait,
                breaker: Breaker::new(failures, cooldown),
                fills: Arc::new(Semaphore::new(max_pending_fills as usize)),
                max_pending_fills,
                fetch_concurrency: self.fetch_concurrency.unwrap_or(DEFAULT_FETCH_CONCURRENCY).max(1),
                codec: self.codec.unwrap_or(cache.codec()),
                cache,
                logger: self.logger,
                flights: Flights::default(),
                local,
                memory,
                id: local::sender_id(),
                announce_all: self.announce_all,
                hearing: std::sync::OnceLock::new(),
                clock,
                refreshing: std::sync::Mutex::default(),
                refresh_batches: crate::store::RefreshBatches::default(),
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

    /// The cache underneath (also usable directly, untyped). Untyped
    /// writes through it (`put`, `delete`, `clear`) bypass the stores:
    /// they neither drop values from this process's local tiers nor
    /// announce to other processes'; change a store's keys through the
    /// store (`update`, `invalidate`, `invalidate_all`).
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// The codec of stores that do not name one.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// How many keys have a flight in this process right now: a fetch
    /// shared by concurrent callers (every store), or a backend read
    /// shared under `singleflight` or a local tier.
    /// Zero whenever no get is in progress: waiters that leave (timeout,
    /// cancellation) leave nothing behind.
    pub fn inflight(&self) -> usize {
        self.inner.flights.len()
    }

    /// How many values the stores' local tiers hold now (values past
    /// their tier's TTL are dropped first). Zero without local tiers, and
    /// on the memory backend.
    ///
    /// ```
    /// # async fn run() -> cacheme::Result<()> {
    /// use cacheme::{Client, LocalTier};
    ///
    /// // The memory backend needs no tier: it serves decoded values itself.
    /// let client = Client::builder().local(LocalTier::new(1_000)).build()?;
    /// assert_eq!(client.local_entries(), 0);
    /// assert!(!client.local_tiers_serving());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_entries(&self) -> u64 {
        self.inner.local.len()
    }

    /// Whether the stores' local tiers serve values now. On Redis and
    /// Redis Cluster they start once this client hears the other
    /// processes' announcements (shortly after its first get of a store
    /// with a tier), and stop, emptied, while it cannot (its push
    /// connection was lost, or its heartbeat on it went unanswered for
    /// 2 s: a frozen node) until it hears them again. Other remote
    /// backends serve from the tiers from the first get on. Always false
    /// without local tiers, and on the memory backend.
    pub fn local_tiers_serving(&self) -> bool {
        !self.inner.local.is_empty() && self.inner.local.vouched()
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

    /// The memory backend, when it is this client's.
    pub(crate) fn memory_backend(&self) -> Option<&MemoryBackend> {
        self.inner.memory.as_ref()
    }

    /// The local tiers, once they may be used: on a backend that announces
    /// changes, this starts listening (the tiers stay unused until every
    /// store's announcements are heard).
    pub(crate) fn local(&self) -> &LocalTiers {
        let local = &self.inner.local;
        if !local.is_empty() && self.inner.hearing.get().is_none() {
            self.start_hearing();
        }
        local
    }

    fn start_hearing(&self) {
        let mut started = false;
        let hearing = self.inner.hearing.get_or_init(|| {
            started = true;
            Hearing::new(self.inner.local.names().collect())
        });
        if !started {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let hear: crate::stampede::Hearing = Arc::new(move |heard| {
            if let Some(inner) = weak.upgrade()
                && let Some(hearing) = inner.hearing.get()
            {
                let store = match &heard {
                    Heard::Announcement { store, .. } => Some(*store),
                    Heard::Listening { .. } | Heard::Lost => None,
                };
                local::hear(&inner.local, &inner.flights, hearing, inner.id, heard);
                report_local_entries(&inner.observer, &inner.local, store);
            }
        });
        let listening = self
            .inner
            .coordinator
            .as_ref()
            .is_some_and(|c| c.listen(hearing.stores(), hear));
        if !listening {
            // Nothing to hear: the tiers' TTL bounds staleness.
            self.inner.local.vouch(true);
        }
    }

    /// Drops what this process holds of `key` (its flight, its local
    /// value): a get that starts after this never sees an older value.
    pub(crate) fn forget(&self, spec: &StoreSpec, key: &str) {
        let local = &self.inner.local;
        self.inner.flights.detach_with(key, || local.remove(spec, key));
        report_local_entries(&self.inner.observer, local, Some(spec.name));
    }

    /// [`forget`](Self::forget) for every key of `spec`.
    pub(crate) fn forget_store(&self, spec: &StoreSpec) {
        let local = &self.inner.local;
        self.inner.flights.detach_all_with(|| local.clear_store(spec));
        report_local_entries(&self.inner.observer, local, Some(spec.name));
    }

    /// Tells the other processes that `keys` of `spec` changed (all of
    /// them when `keys` is empty), if the store has a local tier (or the
    /// client announces every write); a failure is logged.
    pub(crate) async fn announce(&self, spec: &StoreSpec, keys: &[&str]) {
        let announces = self.inner.announce_all || self.inner.local.has(spec);
        let (Some(coordinator), true) = (self.coordinator(), announces) else {
            return;
        };
        for payload in local::notices::announcements(self.inner.id, keys) {
            if let Err(error) = coordinator.announce(spec.name, &payload).await {
                self.log(
                    EventKind::BackendError,
                    spec,
                    keys.first().copied().unwrap_or(""),
                    Some(&error),
                );
                return;
            }
        }
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

    /// The renewer of this client's fetch locks (with a coordinator).
    /// The time freshness is judged by.
    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Marks `key` as being refreshed by this client; `false` if it
    /// already is (one background refresh per key at a time).
    pub(crate) fn start_refresh(&self, key: &str) -> bool {
        let mut refreshing = self.inner.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        refreshing.insert(key.to_owned())
    }

    /// The pending batch refresh of the store named `store`.
    pub(crate) fn refresh_batch<T: std::any::Any + Send + Sync + Default>(&self, store: &'static str) -> Arc<T> {
        self.inner.refresh_batches.of(store)
    }

    /// Whether this client is refreshing `key` in the background.
    pub(crate) fn is_refreshing(&self, key: &str) -> bool {
        let refreshing = self.inner.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        refreshing.contains(key)
    }

    /// Ends the refresh of `key` started by [`start_refresh`](Self::start_refresh).
    pub(crate) fn end_refresh(&self, key: &str) {
        let mut refreshing = self.inner.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        refreshing.remove(key);
    }

    pub(crate) fn renewer(&self) -> Option<&Renewer> {
        self.inner.renewer.as_ref()
    }

    pub(crate) fn lock_ttl(&self) -> Duration {
        self.inner.lock_ttl
    }

    pub(crate) fn cache_timeout(&self) -> Duration {
        self.inner.cache_timeout
    }

    pub(crate) fn max_wait(&self) -> Option<Duration> {
        self.inner.max_wait
    }

    pub(crate) fn fills(&self) -> &Arc<Semaphore> {
        &self.inner.fills
    }

    /// Waits until every write this client runs off its callers' path (the
    /// fills of fetched values, the releases of failed fetches' locks) has
    /// completed: before a graceful shutdown, or in a test that counts what
    /// the backend received.
    ///
    /// A caller waits for its own fill one `cache_timeout` at most; a slow
    /// backend finishes the rest in the background. Each such write is
    /// bounded by the backend's own command timeouts, so this returns.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let client = cacheme::Client::memory()?;
    /// client.flush().await;
    /// # Ok::<(), cacheme::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn flush(&self) {
        // Every permit free means no write in flight.
        if let Ok(all) = self.inner.fills.acquire_many(self.inner.max_pending_fills).await {
            drop(all);
        }
        if let Some(renewer) = &self.inner.renewer {
            renewer.quiesce().await;
        }
    }

    /// Whether the circuit breaker is open: stores skip the cache and
    /// serve the source (see [`ClientBuilder::breaker`]).
    pub fn is_degraded(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Whether this call may use the cache (the breaker is closed, or this
    /// call is its probe).
    pub(crate) fn cache_admits(&self) -> bool {
        let admits = self.inner.breaker.admits();
        if !admits {
            observe::note_outcome(observe::Outcome::Degraded);
        }
        admits
    }

    /// The cache answered a step of a call.
    pub(crate) fn cache_answered(&self, spec: &StoreSpec, key: &str) {
        if self.inner.breaker.success() == Some(Transition::Closed) {
            self.log(EventKind::Recovered, spec, key, None);
        }
    }

    /// A cache step failed or timed out: reported while the breaker is
    /// closed, and once when it opens; quiet while it stays open.
    pub(crate) fn cache_failed(&self, spec: &StoreSpec, key: &str, error: &Error) {
        let was_open = self.inner.breaker.is_open();
        match self.inner.breaker.failure() {
            Some(Transition::Opened) => self.log(EventKind::Degraded, spec, key, Some(error)),
            _ if !was_open => self.log(EventKind::BackendError, spec, key, Some(error)),
            _ => tracing::debug!(target: "cacheme", store = spec.name, key, %error, "BACKEND_ERROR while degraded"),
        }
    }

    /// How many per-key fetches one batch runs at once.
    pub(crate) fn fetch_concurrency(&self) -> usize {
        self.inner.fetch_concurrency
    }

    pub(crate) fn generations(&self) -> Option<&Generations> {
        self.inner.generations.as_ref()
    }

    /// The funnel of every event of typed stores: counted for
    /// [`stats`](Self::stats) and the metrics, noted as the outcome of the
    /// call in progress, sent to `tracing` and the logger.
    pub(crate) fn log(&self, kind: EventKind, spec: &StoreSpec, key: &str, error: Option<&crate::Error>) {
        self.log_timed(kind, spec, key, error, None);
    }

    /// [`log`](Self::log) for an event with a duration (FETCH, WAIT).
    pub(crate) fn log_timed(
        &self,
        kind: EventKind,
        spec: &StoreSpec,
        key: &str,
        error: Option<&crate::Error>,
        duration: Option<Duration>,
    ) {
        self.inner.observer.record(kind, spec, error, duration);
        logger::emit(
            self.inner.logger.as_deref(),
            Event {
                kind,
                store: spec.name,
                key,
                error,
                duration,
            },
        );
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.inner.observer
    }

    /// The counters of every store this client has served (hits, misses,
    /// fetches, waits, errors, ...), for programs without a metrics stack.
    /// They count the same events as the metrics of feature `metrics`;
    /// see `docs/observability.md`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let client = cacheme::Client::memory()?;
    /// let stats = client.stats();
    /// assert!(stats.store("BookStore").is_none()); // no call yet
    /// println!("hit ratio: {:?}", stats.total().hit_ratio());
    /// # Ok::<(), cacheme::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.observer.stats(false)
    }

    /// The counters, as [`stats`](Self::stats), then set to zero: a call
    /// per reporting interval gives each interval's counts.
    pub fn reset_stats(&self) -> Stats {
        self.inner.observer.stats(true)
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
/// use cacheme::{Client, Context};
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

/// Reports how many values the local tier of the store named `store`
/// (of every store when `None`) holds now, after values left it (the
/// `cacheme.local.entries` gauge; values entering report themselves).
fn report_local_entries(observer: &Observer, local: &LocalTiers, store: Option<&str>) {
    if !observer.metered() {
        return;
    }
    for (spec, entries) in local.counts(store) {
        observer.local_entries(spec, entries);
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
