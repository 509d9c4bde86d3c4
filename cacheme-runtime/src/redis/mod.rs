//! The redis backend, on one server (`redis`) or on a Redis Cluster
//! (`redis-cluster`): a multiplexed connection that reconnects by itself,
//! keys under a configured prefix.
//!
//! - Every key is stored as `prefix:key`, and a prefix may not contain `:`
//!   ([`check_prefix`](crate::config::check_prefix)), so two caches with
//!   different prefixes never share a key; `clear` removes exactly the keys
//!   under `prefix:` with `SCAN MATCH` + `UNLINK` in batches (never
//!   `FLUSHDB`/`FLUSHALL`), so other applications sharing the server keep
//!   their data. In a cluster it does so on every master.
//! - `SELECT` is sent only when the database is not 0 (redis-rs sends it
//!   once per connection), so proxies that refuse `SELECT` work with db 0.
//! - TTLs are sent in milliseconds (`PX`), rounded up: 1.5 s stays 1.5 s and
//!   a sub-millisecond TTL becomes 1 ms, never zero and never a default.
//! - On one server the connection is redis-rs's `ConnectionManager`: one
//!   multiplexed connection shared by all clones; when the server goes away,
//!   the call that sees it fails with [`Error::Backend`] and the manager
//!   reconnects in the background, so the same client serves again once the
//!   server is back. The cluster connection is described in [`cluster`].
//! - `connect=lazy` ([`ConnectMode::Lazy`]) opens the backend while its
//!   server is unreachable: calls fail fast until a background task has
//!   made the connection (see [`connect`](crate::connect)). A password the
//!   server refuses is never retried as "unreachable": it fails the open.
//! - `rediss://` (TLS) needs the `redis-tls` feature: rustls with the ring
//!   provider, trusting the system's root certificates. The ring provider is
//!   installed as rustls's process default unless the application installed
//!   one first. `rediss://host:port/#insecure` skips certificate
//!   verification: for tests against self-signed certificates only.
//!
//! Both deployments share every command but `clear` (see
//! [`connection`]); only connecting and `clear` know which one they run on.

mod batch;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod config;
mod connection;
mod lock_batches;
mod lua;
mod names;
mod notify;
mod stampede;
mod steps;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Cmd, RedisError, RedisResult};

use self::connection::{Bounded, Connection, Limits, Link};
use self::notify::{Notifier, PushConnection};
use self::stampede::RedisCoordinator;

use crate::backend::{Backend, BoxFuture, KeyFilter, KeyVisitor, MAX_KEYS_PER_COMMAND, Ttl};
use crate::config::ProviderConfig;
use crate::connect::{self, Attempt, ConnectMode, Failure, Lazy};
use crate::error::{Error, Op, Result};
use crate::stampede::Coordination;

const PROVIDER: &str = "redis";

/// Keys removed per `UNLINK` (and asked for per `SCAN`) by `clear`.
const CLEAR_BATCH: usize = 1000;

/// The redis backend (provider name `redis`, URL scheme `redis://`).
///
/// Beego JSON: `{"key":"app","conn":"127.0.0.1:6379","dbNum":"0","password":"...","user":"..."}`
/// where `key` is the key prefix (default `cacheme`) and `conn`
/// may be Beego's host-less `":6379"`. URL:
/// `redis://[user][:password@]host:port[/db][?prefix=app][&connect=lazy]`
/// (`connect`: see [`ConnectMode`]; also a JSON field).
///
/// The same type serves a Redis Cluster, built by
/// [`from_cluster_config`](RedisBackend::from_cluster_config) (provider
/// `redis-cluster`, feature `redis-cluster`).
///
/// `rediss://` needs the `redis-tls` feature (`rediss://...#insecure` skips
/// certificate verification, for tests only).
///
/// # Timeouts and value sizes
///
/// Fields of both forms (JSON keys, URL query parameters):
///
/// | field | default | meaning |
/// |---|---|---|
/// | `timeout` | `500ms` | one command, plus the time what it sends takes at 32 MiB/s ([`scaled_timeout`](crate::config::scaled_timeout)); milliseconds (`250`) or a Go-style duration (`"250ms"`, `"2s"`) |
/// | `connectTimeout` | `2s` | opening the client: connecting, the handshake, redis-rs's retries and the first PING |
/// | `maxValueSize` | the server's `proto-max-bulk-len`, else 512 MiB | the largest argument sent; a larger value is refused before it is sent with [`Error::TooLarge`] |
///
/// A command that runs out of time fails with [`Error::Backend`] ("no reply
/// within ..."); the connection stays usable (its late reply is dropped).
/// A reply is given `timeout` whatever its size: reading values whose
/// transfer takes longer needs a larger `timeout`. On a cluster each
/// attempt of a command is bounded by `timeout` too, and the value limit is
/// not asked from the nodes.
///
/// On one server, a lost connection is reconnected by the next command,
/// with no backoff: while the server refuses connections each command
/// fails at once (a typed get is then served by its source without waiting
/// for its `cache_timeout`, and the client's breaker soon skips the cache),
/// and the first command after the server is back succeeds.
#[derive(Clone)]
pub struct RedisBackend {
    connection: Connection,
    /// `redis` or `redis-cluster`, for errors and logs.
    provider: &'static str,
    /// `prefix:`; prepended to every key.
    key_prefix: String,
    /// `host:port/db` (one server) or `host:port,host:port` (a cluster's
    /// seed nodes), with no credentials.
    address: String,
    /// Stampede notifications: one pub/sub connection, made on first use.
    notifier: Notifier,
    /// Which node serves which slot, for batches (cluster only; read on
    /// first use).
    #[cfg(feature = "redis-cluster")]
    slots: cluster::slots::Slots,
}

impl RedisBackend {
    /// Connects with the given configuration (see the type docs). An
    /// unreachable server is an [`Error::Connect`] naming the address,
    /// unless the configuration says `connect=lazy` (see [`ConnectMode`]).
    pub async fn from_config(config: ProviderConfig) -> Result<Self> {
        let settings = config::settings(&config)?;
        let mode = ConnectMode::from_config(&config)?;
        #[cfg(feature = "redis-tls")]
        if matches!(settings.info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // redis-rs builds a rustls `ClientConfig` with the process-wide
            // provider, which panics when none is installed. An error here
            // means one already is (the application's or ours): keep it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let info = settings.info;
        let limits = settings.limits;
        // Each connection attempt within `connectTimeout` (and opening,
        // retries included, within it too: see `Limits::connecting`).
        // `response` is redis-rs's own bound on a reply: none for the data
        // connection, whose commands `Connection` bounds by their size.
        let manager_config = move |response: Option<Duration>| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(limits.connect_timeout))
                .set_response_timeout(response)
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500))
        };
        // Notifications arrive as RESP3 pushes on a connection of their own
        // that resubscribes after a reconnect.
        let push_info = info.clone().set_redis_settings(
            info.redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3),
        );
        let (pushes_in, pushes) = tokio::sync::mpsc::unbounded_channel();
        let notifier = Notifier::new(
            Box::new(move || {
                let config = manager_config(Some(limits.timeout))
                    .set_push_sender(pushes_in.clone())
                    .set_automatic_resubscription();
                let info = push_info.clone();
                Box::pin(async move {
                    let client = redis::Client::open(info)?;
                    Ok(PushConnection::Node(
                        ConnectionManager::new_with_config(client, config).await?,
                    ))
                })
            }),
            pushes,
        );
        let db = info.redis_settings().db();
        let limits_from_server = settings.limits_from_server;
        let connecting = checked(move || {
            let info = info.clone();
            async move {
                let client = redis::Client::open(info.clone())?;
                // No reconnection retries on the data connection: while the
                // server is down, a call waiting on the manager's backoff
                // spent its whole time limit (a typed get its
                // `cache_timeout`) for nothing. A call that finds the
                // connection broken starts one attempt; a refused one
                // fails the call at once (its caller is served from the
                // source) after one more try (see `connection`'s module
                // docs), and the breaker stops the attempts after a few.
                let config = manager_config(None).set_number_of_retries(0);
                // One plain connection first: it fails at once when the
                // server is down or refuses the password, where the manager
                // would retry (its retries are for reconnecting later). On
                // db 0, so `SELECT` stays once per connection of the manager.
                let probe_info = info.clone().set_redis_settings(info.redis_settings().clone().set_db(0));
                let probe = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(limits.connect_timeout))
                    .set_response_timeout(Some(limits.connect_timeout));
                let mut probe = limits
                    .connecting(redis::Client::open(probe_info)?.get_multiplexed_async_connection_with_config(&probe))
                    .await?;
                let _: String = limits.bounded(0, redis::cmd("PING").query_async(&mut probe)).await?;
                drop(probe);
                let mut manager = limits
                    .connecting(ConnectionManager::new_with_config(client, config))
                    .await?;
                let limits = match limits_from_server {
                    true => limits.with_server_limit(&mut manager).await,
                    false => limits,
                };
                Ok(Link::Node(Bounded::new(manager, limits)))
            }
        });
        let opening = Opening {
            provider: PROVIDER,
            limits,
            address: settings.address,
            mode,
            db,
        };
        RedisBackend::connect(opening, &settings.prefix, notifier, connecting).await
    }

    /// The backend over the connection `connecting` makes (see
    /// [`checked`]), made now or, in lazy mode, possibly in the background
    /// (see [`connect`](crate::connect)). A failure of the first attempt is
    /// an [`Error::Connect`] naming the address, in lazy mode only when the
    /// server answered and refused.
    async fn connect(opening: Opening, prefix: &str, notifier: Notifier, connecting: Attempt<Link>) -> Result<Self> {
        let Opening {
            provider,
            limits,
            address,
            mode,
            db,
        } = opening;
        let lazy = Lazy::new(provider, address.clone());
        lazy.connect(mode, connecting).await?;
        if lazy.get().is_some() {
            tracing::debug!(provider, address = %address, prefix = %prefix, "connected");
        }
        Ok(RedisBackend {
            connection: Connection::new(lazy, db, limits),
            provider,
            key_prefix: format!("{prefix}:"),
            address,
            notifier,
            #[cfg(feature = "redis-cluster")]
            slots: cluster::slots::Slots::default(),
        })
    }

    /// The configured key prefix (without the trailing `:`).
    pub fn prefix(&self) -> &str {
        &self.key_prefix[..self.key_prefix.len() - 1]
    }

    /// Whether this backend runs on a Redis Cluster (known before it is
    /// connected).
    fn is_cluster(&self) -> bool {
        self.provider != PROVIDER
    }

    /// The connection's link, or the error of a lazily opened backend that
    /// is not connected yet.
    fn link(&self, op: Op) -> Result<&Link> {
        self.connection
            .link()
            .map_err(|e| Error::backend(self.provider, op, None, e))
    }

    /// How many pub/sub channels this backend's notification connection is
    /// subscribed to right now (zero when no get waits for another
    /// process's fetch).
    pub async fn subscribed_channels(&self) -> usize {
        self.notifier.subscribed().await
    }

    fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.key_prefix.len() + key.len());
        full.push_str(&self.key_prefix);
        full.push_str(key);
        full
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd, op: Op, key: Option<&str>) -> Result<T> {
        let mut connection = self.connection.clone();
        cmd.query_async(&mut connection)
            .await
            .map_err(|e| Error::backend(self.provider, op, key, e))
    }

    /// `cmd`, a command on one key (its first argument; `key` unprefixed,
    /// for errors): what every single-key command sends (GET, SET, DEL,
    /// EXISTS, the lock's SET NX), straight to the connection that serves the key
    /// ([`Link::direct`]; a replica may answer when `read`), with the
    /// limits, errors and decoding of [`query`](Self::query).
    pub(super) async fn direct<T: redis::FromRedisValue>(&self, cmd: Cmd, read: bool, op: Op, key: &str) -> Result<T> {
        let failed = |e: RedisError| Error::backend(self.provider, op, Some(key), e);
        let reply = async { self.connection.link()?.direct(cmd, read).await }
            .await
            .map_err(failed)?;
        redis::from_redis_value(reply).map_err(|e| failed(e.into()))
    }

    /// Removes the keys under `prefix:glob` that `filter` accepts, from the
    /// one server or from every master of a cluster; returns how many.
    async fn scan_unlink(&self, glob: &str, filter: &KeyFilter<'_>, op: Op) -> Result<u64> {
        match self.link(op)? {
            Link::Node(_) => {
                self.scan_node(glob, filter, op, |scan| async move {
                    let mut connection = self.connection.clone();
                    scan.query_async(&mut connection).await
                })
                .await
            }
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => self.scan_cluster(cluster, glob, filter, op).await,
        }
    }

    /// One node's part of [`scan_unlink`](Self::scan_unlink): `SCAN MATCH
    /// prefix:glob` pages of [`CLEAR_BATCH`], each sent by `scan` (which
    /// picks the node), and one `UNLINK` of what each page found that
    /// `filter` accepts, until the node's cursor comes back to 0. Never holds
    /// more than one page of keys.
    async fn scan_node<F, Fut>(&self, glob: &str, filter: &KeyFilter<'_>, op: Op, mut scan: F) -> Result<u64>
    where
        F: FnMut(Cmd) -> Fut,
        Fut: Future<Output = RedisResult<(u64, Vec<Vec<u8>>)>>,
    {
        let pattern = format!("{}{glob}", glob_escape(&self.key_prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(CLEAR_BATCH);
            let (next, keys) = scan(cmd)
                .await
                .map_err(|e| Error::backend(self.provider, op, None, e))?;
            let doomed: Vec<&Vec<u8>> = keys
                .iter()
                .filter(|full| {
                    let relative = &full[self.key_prefix.len().min(full.len())..];
                    std::str::from_utf8(relative).is_ok_and(filter)
                })
                .collect();
            if !doomed.is_empty() {
                let n: u64 = self.query(redis::cmd("UNLINK").arg(&doomed), op, None).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Refuses a value over `maxValueSize` before anything is sent (Redis
    /// would close the connection on it), with [`Error::TooLarge`].
    fn check_size(&self, op: Op, key: &str, value: &[u8]) -> Result<()> {
        let limit = self.connection.limits().max_value_size;
        if value.len() as u64 > limit {
            return Err(Error::TooLarge {
                provider: self.provider,
                op,
                key: Some(key.to_owned()),
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }

    fn set_cmd(&self, key: &str, value: &[u8], ttl: Ttl) -> Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(Prefixed(&self.key_prefix, key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl_millis(ttl));
        }
        cmd
    }
}

/// Where and how a backend connects: what [`RedisBackend::connect`] needs
/// besides the connection itself.
struct Opening {
    provider: &'static str,
    /// The configured command limits.
    limits: Limits,
    /// Where, without credentials.
    address: String,
    mode: ConnectMode,
    /// The database (0 on a cluster).
    db: i64,
}

/// One connection attempt: the link `connecting` makes, once a PING went
/// through. The handshake does not prove we may run commands (a server with
/// `requirepass` accepts the connection, then refuses everything), so a
/// missing or wrong password fails the attempt here, as one that must not
/// be retried (see [`unreachable`]).
fn checked<F, Fut>(connecting: F) -> Attempt<Link>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RedisResult<Link>> + Send + 'static,
{
    connect::attempt(move || {
        let connecting = connecting();
        async move {
            let checked = async {
                let mut link = connecting.await?;
                let _: String = redis::cmd("PING").query_async(&mut link).await?;
                Ok::<_, RedisError>(link)
            };
            checked.await.map_err(|error| Failure {
                retry: unreachable(&error),
                error: error.into(),
            })
        }
    })
}

/// Whether a failed connection attempt means the server could not be
/// reached, or is not ready yet (loading, a cluster without all its slots
/// served), rather than that it answered and refused (a wrong password, a
/// database it does not have, a bad TLS setting).
fn unreachable(error: &RedisError) -> bool {
    // redis-rs's cluster client reports a node's refusal inside an I/O
    // error ("Failed to create initial connections - Io: Password
    // authentication failed - AuthenticationFailed"): look at the words.
    let text = error.to_string();
    let refused = ["AuthenticationFailed", "NOAUTH", "WRONGPASS", "NOPERM"]
        .iter()
        .any(|word| text.contains(word));
    !refused
        && (matches!(
            error.kind(),
            redis::ErrorKind::Io | redis::ErrorKind::ClusterConnectionNotFound
        ) || matches!(error.retry_method(), redis::RetryMethod::WaitAndRetry))
}

/// A TTL in whole milliseconds, rounded up and never zero, clamped to
/// [`MAX_TTL`](crate::MAX_TTL) (Redis refuses a `PX` that overflows its
/// clock). Every `PX` cacheme sends, values and locks, goes through here.
fn ttl_millis(ttl: Duration) -> u64 {
    let millis = crate::backend::clamp_ttl(ttl).as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// A numeric field (`name:value` line) of an `INFO` report.
fn info_field(report: &str, name: &str) -> Option<u64> {
    report.lines().find_map(|line| {
        let (field, value) = line.trim_end().split_once(':')?;
        (field == name).then(|| value.parse().ok()).flatten()
    })
}

/// `SCAN MATCH` treats `*?[]\` specially; escape them so a prefix like
/// `a*` matches only keys that start with `a*:`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A cache key with the backend's prefix, written straight into a
/// command's argument: the same bytes as [`RedisBackend::full_key`],
/// without a `String` per command.
struct Prefixed<'a>(&'a str, &'a str);

impl redis::ToRedisArgs for Prefixed<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // Writing into a command's buffer cannot fail.
        let _ = arg.write_all(self.0.as_bytes());
        let _ = arg.write_all(self.1.as_bytes());
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("provider", &self.provider)
            .field("address", &self.address)
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}

impl Backend for RedisBackend {
    fn provider(&self) -> &'static str {
        self.provider
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let mut get = redis::cmd("GET");
            get.arg(Prefixed(&self.key_prefix, key));
            self.direct(get, true, Op::Get, key).await
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            #[cfg(feature = "redis-cluster")]
            if self.is_cluster() {
                let keys = keys.iter().map(|key| self.full_key(key)).collect();
                return self.run_batch(&batch::GetBatch { backend: self, keys }).await;
            }
            // One MGET per MAX_KEYS_PER_COMMAND keys, all in one pipeline:
            // one round trip, and the server serves other clients between
            // the MGETs of a big batch.
            let mut pipe = redis::pipe();
            for chunk in keys.chunks(MAX_KEYS_PER_COMMAND) {
                let mget = pipe.cmd("MGET");
                for key in chunk {
                    mget.arg(self.full_key(key));
                }
            }
            let mut connection = self.connection.clone();
            let chunks: Vec<Vec<Option<Vec<u8>>>> = pipe
                .query_async(&mut connection)
                .await
                .map_err(|e| Error::backend(self.provider, Op::GetMany, None, e))?;
            Ok(chunks.into_iter().flatten().collect())
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.check_size(Op::Set, key, value)?;
            self.direct(self.set_cmd(key, value, ttl), false, Op::Set, key).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut del = redis::cmd("DEL");
            del.arg(Prefixed(&self.key_prefix, key));
            let removed: u64 = self.direct(del, false, Op::Delete, key).await?;
            Ok(removed > 0)
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut exists = redis::cmd("EXISTS");
            exists.arg(Prefixed(&self.key_prefix, key));
            let found: u64 = self.direct(exists, true, Op::Exists, key).await?;
            Ok(found > 0)
        })
    }

    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            redis::cmd("INCRBY")
                .arg(self.full_key(key))
                .arg(delta)
                .query_async(&mut connection)
                .await
                .map_err(|e| match e.detail() {
                    Some(detail) if detail.contains("not an integer") => Error::NotAnInteger {
                        provider: self.provider,
                        key: key.to_owned(),
                    },
                    Some(detail) if detail.contains("overflow") => Error::Overflow {
                        provider: self.provider,
                        key: key.to_owned(),
                        delta: delta.into(),
                    },
                    _ => Error::backend(self.provider, Op::Incr, Some(key), e),
                })
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.scan_unlink("*", &|_| true, Op::Clear).await?;
            Ok(())
        })
    }

    fn coordination(&self) -> Coordination {
        Coordination::Custom(Arc::new(RedisCoordinator { backend: self.clone() }))
    }

    fn read_timeout(&self) -> Option<Duration> {
        Some(self.connection.limits().timeout)
    }

    fn supports_delete_matching(&self) -> bool {
        true
    }

    fn delete_matching<'a>(&'a self, glob: &'a str, filter: &'a KeyFilter<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.scan_unlink(glob, filter, Op::DeleteMatching))
    }

    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.check_size(Op::SetIfAbsent, key, value)?;
            let mut cmd = self.set_cmd(key, value, ttl);
            cmd.arg("NX");
            let reply: Option<String> = self.direct(cmd, false, Op::SetIfAbsent, key).await?;
            Ok(reply.is_some())
        })
    }

    fn delete_if_equals<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        static SCRIPT: lua::Script = lua::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let mut call = SCRIPT.call();
            call.key(self.full_key(key)).arg(expected);
            let removed: u64 = call
                .invoke(&mut connection)
                .await
                .map_err(|e| Error::backend(self.provider, Op::DeleteIfEquals, Some(key), e))?;
            Ok(removed > 0)
        })
    }

    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Ttl>>> {
        Box::pin(async move {
            let millis: i64 = self
                .query(redis::cmd("PTTL").arg(self.full_key(key)), Op::Ttl, Some(key))
                .await?;
            // -2: no such key; -1: no expiry.
            Ok(match millis {
                -2 => None,
                ms if ms < 0 => Some(None),
                ms => Some(Some(Duration::from_millis(ms.unsigned_abs()))),
            })
        })
    }

    /// `SCAN MATCH prefix:glob` page by page (on every master of a
    /// cluster), through the same walk as `clear`, deleting nothing.
    fn scan_keys<'a>(&'a self, glob: &'a str, visit: &'a mut KeyVisitor<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            // The walk takes a shared `Fn` filter; a filter that visits and
            // keeps every key turns it into a read-only scan.
            let visit = std::sync::Mutex::new((visit, 0u64));
            let filter = |key: &str| {
                let mut guard = visit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (visit, visited) = &mut *guard;
                visit(key);
                *visited += 1;
                false
            };
            self.scan_unlink(glob, &filter, Op::ScanKeys).await?;
            let (_, visited) = visit.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(visited)
        })
    }

    /// `INFO memory`'s `used_memory`, summed over a cluster's masters.
    fn memory_used(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let reports: Vec<String> = match self.link(Op::MemoryUsed)? {
                Link::Node(_) => vec![
                    self.query(redis::cmd("INFO").arg("memory"), Op::MemoryUsed, None)
                        .await?,
                ],
                #[cfg(feature = "redis-cluster")]
                Link::Cluster(cluster) => self.info_of_masters(cluster, "memory").await?,
            };
            reports.iter().try_fold(0u64, |sum, report| {
                let used = info_field(report, "used_memory").ok_or_else(|| {
                    Error::backend(
                        self.provider,
                        Op::MemoryUsed,
                        None,
                        "INFO memory has no used_memory field",
                    )
                })?;
                Ok(sum.saturating_add(used))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_millis(Duration::ZERO), 1);
    }

    #[test]
    fn ttls_beyond_max_ttl_are_clamped_to_it() {
        let max = u64::try_from(crate::MAX_TTL.as_millis()).unwrap();
        for huge in [Duration::MAX, Duration::from_secs(u64::MAX), crate::MAX_TTL * 2] {
            assert_eq!(ttl_millis(huge), max, "{huge:?}");
        }
    }

    #[test]
    fn info_fields_are_read_by_name() {
        let report = "# Memory\r\nused_memory:1049384\r\nused_memory_human:1.00M\r\n";
        assert_eq!(info_field(report, "used_memory"), Some(1_049_384));
        assert_eq!(info_field(report, "used_memory_rss"), None);
        assert_eq!(info_field(report, "used_memory_human"), None, "not a number");
    }

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
