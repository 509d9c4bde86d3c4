//! The memcache backend: memcached >= 1.6 over its meta protocol, with a
//! small async client of our own (tokio TCP, a connection pool per server,
//! consistent hashing over several servers).
//!
//! - Keys are `prefix:generation:key`; keys memcached cannot carry (over
//!   250 bytes, whitespace, control or non-ASCII characters) are replaced
//!   by a SHA-256 hash, never rejected (see `keys.rs`).
//! - `clear` bumps the cache's *generation*, a counter kept under
//!   `prefix:generation` that is part of every key: the old items become
//!   unreachable at once and other applications on the server keep their
//!   data (no `flush_all`). The old items are not deleted: they stay in
//!   memory until they expire or memcached's LRU evicts them.
//! - TTLs are exact to the millisecond although memcached counts seconds:
//!   the deadline rides in the item's client flags (see `expiry.rs`).
//! - Counters are plain decimal text, updated with a compare-and-swap loop
//!   (`mg ... c` then `ms ... C<cas>`): memcached's own `incr` is unsigned
//!   (it refuses "-1", clamps `decr` at 0 and wraps at 2^64), which would
//!   break the signed 64-bit counter contract. Calls on one key from one
//!   process queue behind a local lock, so only other processes make the
//!   loop retry.
//! - `set_if_absent` is `ms ... ME` (memcached's `add`); `delete_if_equals`
//!   is `mg` then `md ... C<cas>`, so a lock is only ever removed by its
//!   owner even if it changed in between.

mod config;
mod connection;
mod expiry;
mod keys;
mod ops;
mod protocol;
mod ring;

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use self::connection::{Expect, Server};
use self::protocol::{ProtocolError, Reply, Status};
use self::ring::Ring;
use crate::config::ProviderConfig;
use crate::connect::{self, ConnectMode, Failure, Lazy};
use crate::error::{Error, Op, Result};

const PROVIDER: &str = "memcache";

/// Stripes of [`Inner::counter_locks`].
const COUNTER_LOCKS: usize = 64;

/// Attempts of a compare-and-swap loop before giving up.
const CAS_ATTEMPTS: u32 = 1000;

/// The memcached backend (provider name `memcache`, URL scheme `memcache://`).
///
/// Beego JSON: `{"conn":"127.0.0.1:11211"}`; several servers as
/// `"h1:11211;h2:11211"` (Beego's separator), `"h1:11211,h2:11211"` or
/// `["h1:11211","h2:11211"]`. URL: `memcache://h1:11211[,h2:11211...][?prefix=app]`.
/// Options (JSON keys, or URL query parameters):
///
/// | option | default | meaning |
/// |---|---|---|
/// | `key` (JSON) / `prefix` (URL) | `cacheme` | first segment of every key; printable ASCII, no `:`, `{` or `}` (see `check_prefix`) |
/// | `poolSize` | 16 | connections per server in use at once |
/// | `timeout` | `500ms` | time allowed for one exchange: waiting for a pooled connection, connecting, sending and reading the reply; grows with what the exchange sends (see [`scaled_timeout`](crate::config::scaled_timeout)). Milliseconds (`250`) or with a unit (`"250ms"`, `"2s"`) |
/// | `timeoutMs` | | the same in milliseconds (older name; give one of the two) |
/// | `maxValueSize` | `1m` | the largest value sent (memcached's `-I`); a larger one is refused before it is sent. Bytes, or `"512k"`, `"2m"` |
/// | `generationRefreshMs` | 1000 | how long the namespace generation is cached in the process; 0 reads it before every operation |
/// | `connect` | `eager` | `lazy`: open even if a server is down (see [`ConnectMode`]) |
///
/// ```no_run
/// # async fn demo() -> cacheme::Result<()> {
/// use cacheme::Cache;
///
/// let beego = Cache::new("memcache", r#"{"key":"app","conn":"10.0.0.1:11211;10.0.0.2:11211"}"#).await?;
/// let same = Cache::open("memcache://10.0.0.1:11211,10.0.0.2:11211?prefix=app").await?;
/// # Ok(())
/// # }
/// ```
///
/// Every server must answer when the backend is built (an
/// [`Error::Connect`] names the one that did not), unless `connect` is
/// `lazy`: then the backend is returned at once, its calls fail fast with
/// [`Error::Backend`] until every server has answered (checked in the
/// background, with backoff), and it serves from then on. Later, a server that
/// goes away fails the calls for its keys with [`Error::Backend`] and is
/// reconnected to by the next call once it is back.
///
/// # Clearing and other processes
///
/// [`clear`](crate::Backend::clear) bumps the generation on the server; this
/// process sees the new generation at once, other processes within
/// `generationRefreshMs` (their cached generation expires). Set it to 0
/// for a `clear` that every process sees at once, at the price of one more
/// round trip per operation.
///
/// # Item size
///
/// A value larger than `maxValueSize` (1 MiB unless configured: memcached's
/// default `-I`) is refused before it is sent, with [`Error::TooLarge`]. A
/// value just under it may still exceed the server's item size, which
/// counts the key and a few dozen bytes of overhead too: the server
/// refuses it with an [`Error::Backend`] whose message says the value is
/// too large for the server's item size. Either way the connection stays
/// usable. Set `maxValueSize` to the server's `-I` when it is not 1 MiB.
///
/// # Timeouts
///
/// Every exchange with a server gets `timeout` (500 ms by default) plus the
/// time what it sends takes at 32 MiB/s, so a large legal value is not cut
/// off; a reply is not scaled (a `timeout` for values near the item size
/// on a slow link must be configured). A server that stops answering
/// (frozen, unplugged) fails the call with [`Error::Backend`] ("no reply
/// within ...") after that time, and the connection it was using is
/// closed, never reused out of step.
#[derive(Clone)]
pub struct MemcachedBackend {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    ring: Ring,
    prefix: String,
    generation_key: String,
    /// The generation and when it was read.
    generation: Mutex<Option<(u64, Instant)>>,
    generation_refresh: Duration,
    /// `maxValueSize`: larger values are refused before they are sent.
    max_value_size: u64,
    /// Striped by key: `incr_by` calls on one key in this process take
    /// turns, so their compare-and-swap loops only race other processes.
    counter_locks: Vec<tokio::sync::Mutex<()>>,
    /// Set once every server answered and the generation was read; until
    /// then (lazy mode) every call fails fast.
    ready: Lazy<()>,
}

impl MemcachedBackend {
    /// Connects with the given configuration (see the type docs).
    pub async fn from_config(config: ProviderConfig) -> Result<Self> {
        let settings = config::settings(&config)?;
        let mode = ConnectMode::from_config(&config)?;
        let servers: Vec<Server> = settings
            .servers
            .iter()
            .map(|addr| Server::new(addr.clone(), settings.pool_size, settings.timeout))
            .collect();
        let ready = Lazy::new(PROVIDER, settings.servers.join(","));
        let inner = Inner {
            ring: Ring::new(&settings.servers),
            servers,
            generation_key: keys::generation_key(&settings.prefix),
            prefix: settings.prefix,
            generation: Mutex::new(None),
            generation_refresh: settings.generation_refresh,
            max_value_size: settings.max_value_size,
            counter_locks: (0..COUNTER_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            ready: ready.clone(),
        };
        let backend = MemcachedBackend { inner: Arc::new(inner) };
        // The attempt must not keep the backend alive: the background task
        // ends when the backend is dropped.
        let weak = Arc::downgrade(&backend.inner);
        ready
            .connect(mode, connect::attempt(move || handshake(weak.clone())))
            .await?;
        if ready.get().is_some() {
            tracing::debug!(provider = PROVIDER, servers = ?settings.servers, prefix = %backend.inner.prefix, "connected");
        }
        Ok(backend)
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The servers, as `host:port`, in configured order.
    pub fn servers(&self) -> Vec<&str> {
        self.inner.servers.iter().map(Server::addr).collect()
    }

    /// The memcached key that holds `key` now (after reading the current
    /// generation if the cached one is stale): `prefix:generation:key`, or
    /// `prefix:generation:#<sha256>` for a key memcached cannot carry.
    pub async fn memcached_key(&self, key: &str) -> Result<String> {
        self.wire_key(key).await.map_err(fail(Op::Get, Some(key)))
    }

    /// Refuses a value over `maxValueSize` before anything is sent, with
    /// [`Error::TooLarge`].
    fn check_size(&self, op: Op, key: &str, value: &[u8]) -> Result<()> {
        let limit = self.inner.max_value_size;
        if value.len() as u64 > limit {
            return Err(Error::TooLarge {
                provider: PROVIDER,
                op,
                key: Some(key.to_owned()),
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }

    fn server_for(&self, wire: &str) -> &Server {
        &self.inner.servers[self.inner.ring.server_for(wire)]
    }

    /// One request to the server of `wire`, one reply.
    async fn request(&self, wire: &str, request: &[u8]) -> Result<Reply, ProtocolError> {
        let mut replies = self.server_for(wire).exchange(request, Expect::Replies(1)).await?;
        replies.pop().ok_or(ProtocolError::Closed)
    }

    async fn wire_key(&self, key: &str) -> Result<String, ProtocolError> {
        let generation = self.generation().await?;
        Ok(keys::data_key(&self.inner.prefix, generation, key))
    }

    /// Fails fast while a lazily opened backend has not reached its servers.
    fn check_ready(&self) -> Result<(), ProtocolError> {
        match self.inner.ready.get() {
            Some(()) => Ok(()),
            None => Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                self.inner.ready.not_connected(),
            ))),
        }
    }

    /// The current generation: the cached one if fresh, else read from the
    /// server (and created there if missing, e.g. after a restart).
    async fn generation(&self) -> Result<u64, ProtocolError> {
        self.check_ready()?;
        self.read_generation().await
    }

    /// [`generation`](Self::generation), connected or not.
    async fn read_generation(&self) -> Result<u64, ProtocolError> {
        let cached = *self.inner.generation.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, read_at)) = cached
            && read_at.elapsed() < self.inner.generation_refresh
        {
            return Ok(generation);
        }
        let key = &self.inner.generation_key;
        for _ in 0..CAS_ATTEMPTS {
            let mut request = Vec::new();
            protocol::mg(&mut request, key, "v");
            let reply = self.request(key, &request).await?;
            match reply.status {
                Status::Value => return Ok(self.remember_generation(parse_generation(key, reply.value)?)),
                Status::Miss => {
                    // Start from the clock, not 0, so a counter lost to an
                    // eviction or restart does not bring back old items.
                    self.create_generation().await?;
                }
                _ => return Err(unexpected(&reply)),
            }
        }
        Err(ProtocolError::Contention(CAS_ATTEMPTS))
    }

    async fn create_generation(&self) -> Result<(), ProtocolError> {
        let key = &self.inner.generation_key;
        let start = expiry::now_ms().max(1).to_string();
        let mut request = Vec::new();
        protocol::ms(&mut request, key, start.as_bytes(), "T0 ME");
        let reply = self.request(key, &request).await?;
        match reply.status {
            Status::Done | Status::NotStored => Ok(()),
            _ => Err(unexpected(&reply)),
        }
    }

    fn remember_generation(&self, generation: u64) -> u64 {
        *self.inner.generation.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, Instant::now()));
        generation
    }

    /// Reads the items of `wires` on one server in one round trip: quiet
    /// `mg`s tagged with their position, closed by `mn`.
    async fn read_batch(&self, server: usize, wires: &[(usize, &str)]) -> Result<Vec<(usize, Reply)>, ProtocolError> {
        let mut request = Vec::with_capacity(wires.len() * 64);
        for (position, wire) in wires {
            protocol::mg(&mut request, wire, &format!("v f t q O{position}"));
        }
        protocol::mn(&mut request);
        let replies = self.inner.servers[server].exchange(&request, Expect::UntilNoop).await?;
        replies
            .into_iter()
            .map(|reply| match (reply.status, reply.opaque) {
                (Status::Value, Some(position)) => Ok((position as usize, reply)),
                _ => Err(unexpected(&reply)),
            })
            .collect()
    }
}

/// One connection attempt: every server answers a no-op in the meta
/// protocol, and the generation is read (created if missing). A server
/// that answers but does not speak the meta protocol is refused for good
/// (it will not learn it); the rest may be retried.
async fn handshake(inner: Weak<Inner>) -> Result<(), Failure> {
    let Some(inner) = inner.upgrade() else {
        return Err(Failure {
            retry: false,
            error: "the cache was dropped".into(),
        });
    };
    let backend = MemcachedBackend { inner };
    for server in &backend.inner.servers {
        let mut ping = Vec::new();
        protocol::mn(&mut ping);
        server
            .exchange(&ping, Expect::Replies(1))
            .await
            .map_err(|e| match e {
                ProtocolError::Server(reply) => Failure {
                    retry: false,
                    error: format!(
                        "{}: the server replied {reply:?}: it does not speak the meta protocol (memcached 1.6 or later is needed)",
                        server.addr()
                    )
                    .into(),
                },
                other => Failure {
                    retry: true,
                    error: format!("{}: {other}", server.addr()).into(),
                },
            })?;
    }
    backend.read_generation().await.map_err(|e| Failure {
        retry: true,
        error: format!("{}: {e}", backend.server_for(&backend.inner.generation_key).addr()).into(),
    })?;
    Ok(())
}

fn parse_generation(key: &str, value: Option<Vec<u8>>) -> Result<u64, ProtocolError> {
    let bytes = value.unwrap_or_default();
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            ProtocolError::Corrupt(format!(
                "the generation counter {key:?} holds {:?}, not a number",
                String::from_utf8_lossy(&bytes)
            ))
        })
}

fn unexpected(reply: &Reply) -> ProtocolError {
    ProtocolError::Unexpected(format!("{:?}", reply.status))
}

fn fail(op: Op, key: Option<&str>) -> impl FnOnce(ProtocolError) -> Error + '_ {
    move |e| Error::backend(PROVIDER, op, key, e)
}

fn is_live(reply: &Reply, now_ms: i64) -> bool {
    expiry::is_live(reply.flags, reply.ttl, now_ms)
}

impl fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("servers", &self.servers())
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}
