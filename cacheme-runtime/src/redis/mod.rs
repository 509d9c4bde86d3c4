//! The redis backend (one node): a multiplexed connection that reconnects by
//! itself, keys under a configured prefix.
//!
//! - Every key is stored as `prefix:key`; `clear` removes exactly the keys
//!   under `prefix:` with `SCAN MATCH` + `UNLINK` in batches (never
//!   `FLUSHDB`/`FLUSHALL`), so other applications sharing the server keep
//!   their data.
//! - `SELECT` is sent only when the database is not 0 (redis-rs sends it
//!   once per connection), so proxies that refuse `SELECT` work with db 0.
//! - TTLs are sent in milliseconds (`PX`), rounded up: 1.5 s stays 1.5 s and
//!   a sub-millisecond TTL becomes 1 ms, never zero and never a default.
//! - The connection is redis-rs's `ConnectionManager`: one multiplexed
//!   connection shared by all clones; when the server goes away, the call
//!   that sees it fails with [`Error::Backend`] and the manager reconnects in
//!   the background, so the same client serves again once the server is
//!   back.
//! - `rediss://` (TLS) needs the `redis-tls` feature: rustls with the ring
//!   provider, trusting the system's root certificates. The ring provider is
//!   installed as rustls's process default unless the application installed
//!   one first. `rediss://host:port/#insecure` skips certificate
//!   verification: for tests against self-signed certificates only.

mod config;

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisError, Script};

use crate::backend::{Backend, BoxFuture, KeyFilter, Ttl};
use crate::config::ProviderConfig;
use crate::error::{Error, Op, Result};

const PROVIDER: &str = "redis";

/// Keys removed per `UNLINK` (and asked for per `SCAN`) by `clear`.
const CLEAR_BATCH: usize = 1000;

/// The redis backend (provider name `redis`, URL scheme `redis://`).
///
/// Beego JSON: `{"key":"app","conn":"127.0.0.1:6379","dbNum":"0","password":"...","user":"..."}`
/// where `key` is the key prefix (default `cacheme`) and `conn`
/// may be Beego's host-less `":6379"`. URL:
/// `redis://[user][:password@]host:port[/db][?prefix=app]`, or `rediss://`
/// with the `redis-tls` feature (`rediss://...#insecure` skips certificate
/// verification, for tests only).
#[derive(Clone)]
pub struct RedisBackend {
    connection: ConnectionManager,
    /// `prefix:`; prepended to every key.
    key_prefix: String,
    /// `host:port/db`, with no credentials.
    address: String,
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
        let connect_error = |source: RedisError| Error::Connect {
            provider: PROVIDER,
            address: settings.address.clone(),
            source: source.into(),
        };
        let client = redis::Client::open(settings.info.clone()).map_err(connect_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut connection = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(connect_error)?;
        // The handshake does not prove we may run commands (a server with
        // `requirepass` accepts the connection, then refuses everything):
        // one PING turns a missing or wrong password into a connect error.
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(connect_error)?;
        tracing::debug!(provider = PROVIDER, address = %settings.address, prefix = %settings.prefix, "connected");
        Ok(RedisBackend {
            connection,
            key_prefix: format!("{}:", settings.prefix),
            address: settings.address,
        })
    }

    /// The configured key prefix (without the trailing `:`).
    pub fn prefix(&self) -> &str {
        &self.key_prefix[..self.key_prefix.len() - 1]
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
            .map_err(|e| Error::backend(PROVIDER, op, key, e))
    }

    /// `SCAN MATCH prefix:glob` in pages of [`CLEAR_BATCH`], `UNLINK`ing the
    /// keys `filter` accepts page by page; returns how many were removed.
    async fn scan_unlink(&self, glob: &str, filter: &KeyFilter<'_>, op: Op) -> Result<u64> {
        let pattern = format!("{}{glob}", glob_escape(&self.key_prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(CLEAR_BATCH),
                    op,
                    None,
                )
                .await?;
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
            .field("address", &self.address)
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}

impl Backend for RedisBackend {
    fn provider(&self) -> &'static str {
        PROVIDER
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
            let mut cmd = redis::cmd("MGET");
            for key in keys {
                cmd.arg(self.full_key(key));
            }
            self.query(&cmd, Op::GetMany, None).await
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
                        provider: PROVIDER,
                        key: key.to_owned(),
                    },
                    Some(detail) if detail.contains("overflow") => Error::Overflow {
                        provider: PROVIDER,
                        key: key.to_owned(),
                        delta: delta.into(),
                    },
                    _ => Error::backend(PROVIDER, Op::Incr, Some(key), e),
                })
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.scan_unlink("*", &|_| true, Op::Clear).await?;
            Ok(())
        })
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
        static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
            Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            )
        });
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let removed: u64 = SCRIPT
                .key(self.full_key(key))
                .arg(expected)
                .invoke_async(&mut connection)
                .await
                .map_err(|e| Error::backend(PROVIDER, Op::DeleteIfEquals, Some(key), e))?;
            Ok(removed > 0)
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
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
