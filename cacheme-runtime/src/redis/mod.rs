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
use redis::{Cmd, RedisError, RedisResult};

use self::connection::Connection;
use self::notify::{Notifier, PushConnection};
use self::stampede::RedisCoordinator;

use crate::backend::{Backend, BoxFuture, KeyFilter, KeyVisitor, MAX_KEYS_PER_COMMAND, Ttl};
use crate::config::ProviderConfig;
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
/// `redis://[user][:password@]host:port[/db][?prefix=app]`.
///
/// The same type serves a Redis Cluster, built by
/// [`from_cluster_config`](RedisBackend::from_cluster_config) (provider
/// `redis-cluster`, feature `redis-cluster`).
///
/// `rediss://` needs the `redis-tls` feature (`rediss://...#insecure` skips
/// certificate verification, for tests only).
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
    /// unreachable server is an [`Error::Connect`] naming the address.
    pub async fn from_config(config: ProviderConfig) -> Result<Self> {
        let settings = config::settings(&config)?;
        #[cfg(feature = "redis-tls")]
        if matches!(settings.info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // redis-rs builds a rustls `ClientConfig` with the process-wide
            // provider, which panics when none is installed. An error here
            // means one already is (the application's or ours): keep it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let info = settings.info;
        let manager_config = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
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
                let config = manager_config()
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
        RedisBackend::connect(PROVIDER, settings.address, &settings.prefix, notifier, async move {
            let client = redis::Client::open(info)?;
            let manager = ConnectionManager::new_with_config(client, manager_config()).await?;
            Ok(Connection::Node(manager))
        })
        .await
    }

    /// The backend over the connection `connecting` makes, once a PING went
    /// through: the handshake does not prove we may run commands (a server
    /// with `requirepass` accepts the connection, then refuses everything),
    /// so a missing or wrong password becomes a connect error here. Any
    /// failure is an [`Error::Connect`] naming `address`.
    async fn connect(
        provider: &'static str,
        address: String,
        prefix: &str,
        notifier: Notifier,
        connecting: impl Future<Output = RedisResult<Connection>>,
    ) -> Result<Self> {
        let checked = async {
            let mut connection = connecting.await?;
            let _: String = redis::cmd("PING").query_async(&mut connection).await?;
            Ok::<_, RedisError>(connection)
        };
        let connection = match checked.await {
            Ok(connection) => connection,
            Err(source) => {
                return Err(Error::Connect {
                    provider,
                    address,
                    source: source.into(),
                });
            }
        };
        tracing::debug!(provider, address = %address, prefix = %prefix, "connected");
        Ok(RedisBackend {
            connection,
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

    /// Whether this backend runs on a Redis Cluster.
    fn is_cluster(&self) -> bool {
        match self.connection {
            Connection::Node(_) => false,
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(_) => true,
        }
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

    /// Removes the keys under `prefix:glob` that `filter` accepts, from the
    /// one server or from every master of a cluster; returns how many.
    async fn scan_unlink(&self, glob: &str, filter: &KeyFilter<'_>, op: Op) -> Result<u64> {
        match &self.connection {
            Connection::Node(_) => {
                self.scan_node(glob, filter, op, |scan| async move {
                    let mut connection = self.connection.clone();
                    scan.query_async(&mut connection).await
                })
                .await
            }
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => self.scan_cluster(cluster, glob, filter, op).await,
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

    fn set_cmd(&self, key: &str, value: &[u8], ttl: Ttl) -> Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.full_key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl_millis(ttl));
        }
        cmd
    }
}

/// A TTL in whole milliseconds, rounded up and never zero.
fn ttl_millis(ttl: Duration) -> u64 {
    let millis = ttl.as_nanos().div_ceil(1_000_000).max(1);
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
            self.query(redis::cmd("GET").arg(self.full_key(key)), Op::Get, Some(key))
                .await
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
        Box::pin(async move { self.query(&self.set_cmd(key, value, ttl), Op::Set, Some(key)).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let removed: u64 = self
                .query(redis::cmd("DEL").arg(self.full_key(key)), Op::Delete, Some(key))
                .await?;
            Ok(removed > 0)
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let found: u64 = self
                .query(redis::cmd("EXISTS").arg(self.full_key(key)), Op::Exists, Some(key))
                .await?;
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

    fn supports_delete_matching(&self) -> bool {
        true
    }

    fn delete_matching<'a>(&'a self, glob: &'a str, filter: &'a KeyFilter<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.scan_unlink(glob, filter, Op::DeleteMatching))
    }

    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut cmd = self.set_cmd(key, value, ttl);
            cmd.arg("NX");
            let reply: Option<String> = self.query(&cmd, Op::SetIfAbsent, Some(key)).await?;
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
            let reports: Vec<String> = match &self.connection {
                Connection::Node(_) => vec![
                    self.query(redis::cmd("INFO").arg("memory"), Op::MemoryUsed, None)
                        .await?,
                ],
                #[cfg(feature = "redis-cluster")]
                Connection::Cluster(cluster) => self.info_of_masters(cluster, "memory").await?,
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
