//! Reading the redis provider's configuration: Beego's JSON keys or a
//! `redis://` URL, into redis-rs connection settings plus a key prefix.
//! The pieces the cluster provider reads the same way (`key`/`prefix`,
//! `host:port`, `user`/`password`, the timeouts and the value size limit)
//! are `pub(super)` here.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use url::Url;

use crate::config::{ProviderConfig, Secret, redact_address};
use crate::error::{Error, Result};

/// The prefix used when none is configured: keys are `cacheme:<key>`.
pub const DEFAULT_PREFIX: &str = "cacheme";

/// The time one command may take, plus what its size adds (see
/// [`scaled_timeout`](crate::config::scaled_timeout)), unless `timeout`
/// says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The time opening the connection may take (connecting, the handshake
/// and the first PING), unless `connectTimeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis's default `proto-max-bulk-len`: the largest argument it reads.
pub const DEFAULT_MAX_VALUE_SIZE: u64 = 512 * 1024 * 1024;

/// JSON keys the redis provider accepts. `maxIdle` is Beego's pool
/// setting: accepted so Beego configs load unchanged, and ignored because
/// the connection is multiplexed (there is no pool). `timeout` is the
/// per-command timeout (in Beego it was the pool's idle timeout).
/// `connect` is the [`ConnectMode`](crate::ConnectMode).
pub const JSON_FIELDS: &[&str] = &[
    "key",
    "conn",
    "dbNum",
    "password",
    "user",
    "maxIdle",
    "timeout",
    "connectTimeout",
    "maxValueSize",
    "connect",
];

/// URL query parameters the redis provider accepts (`connect`: the
/// [`ConnectMode`](crate::ConnectMode)).
pub const URL_FIELDS: &[&str] = &["prefix", "timeout", "connectTimeout", "maxValueSize", "connect"];

/// How long commands may take and how large a value may be: the same
/// fields for one server and for a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `timeout`: the time a command sending nothing large may take.
    pub(crate) timeout: Duration,
    /// `connectTimeout`: the time opening the connection may take.
    pub(crate) connect_timeout: Duration,
    /// `maxValueSize`: the largest argument sent; a larger one is refused
    /// before it is sent (Redis would close the connection).
    pub(crate) max_value_size: u64,
}

/// The [`Limits`] of `config` (JSON or URL, the same field names).
pub(super) fn limits(config: &ProviderConfig) -> Result<Limits> {
    Ok(Limits {
        timeout: config.timeout("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
        connect_timeout: config.timeout("connectTimeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        max_value_size: config.byte_size("maxValueSize")?.unwrap_or(DEFAULT_MAX_VALUE_SIZE),
    })
}

/// Everything needed to connect, with the password kept out of `Debug`.
pub(crate) struct Settings {
    pub(crate) info: ConnectionInfo,
    /// `host:port/db`, safe to show: no user name, no password.
    pub(crate) address: String,
    pub(crate) prefix: String,
    pub(crate) limits: Limits,
    /// No `maxValueSize` was given: ask the server for its
    /// `proto-max-bulk-len` (see `Limits::with_server_limit`).
    pub(crate) limits_from_server: bool,
}

pub(crate) fn settings(config: &ProviderConfig) -> Result<Settings> {
    match config.url() {
        Some(url) => from_url(config, url),
        None => from_json(config),
    }
}

fn from_json(config: &ProviderConfig) -> Result<Settings> {
    config.reject_unknown(JSON_FIELDS)?;
    let conn = config.string("conn")?.ok_or_else(|| {
        config.error(
            "conn",
            "missing: give the server as \"host:port\" (or Beego's \":port\")",
        )
    })?;
    let (host, port) = host_and_port(config, "conn", &conn)?;
    let db = config.unsigned("dbNum")?.unwrap_or(0);
    let db = i64::try_from(db).map_err(|_| config.error("dbNum", "too large"))?;
    let (user, password) = json_credentials(config)?;
    let prefix = config.prefix("key", DEFAULT_PREFIX)?;

    let mut redis = RedisConnectionInfo::default().set_db(db);
    if let Some(user) = &user {
        redis = redis.set_username(user);
    }
    if let Some(password) = &password {
        redis = redis.set_password(password.expose());
    }
    let info = ConnectionAddr::Tcp(host.clone(), port)
        .into_connection_info()
        .map_err(|e| config.error("conn", e.to_string()))?
        .set_redis_settings(redis);
    Ok(Settings {
        info,
        address: format!("{host}:{port}/{db}"),
        prefix,
        limits: limits(config)?,
        limits_from_server: config.raw("maxValueSize").is_none(),
    })
}

fn from_url(config: &ProviderConfig, url: &Url) -> Result<Settings> {
    config.reject_unknown(URL_FIELDS)?;
    let prefix = config.prefix("prefix", DEFAULT_PREFIX)?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config.error("host", "the URL names no host"));
    }
    if config.url_hosts().is_some_and(|hosts| hosts.len() > 1) {
        return Err(config.error("host", "redis:// names one server; use redis-cluster:// for several"));
    }
    // Hand redis-rs the URL without our own parameters; it knows the rest
    // (user, password, db, TLS).
    let mut for_driver = url.clone();
    for_driver.set_query(None);
    let info = for_driver.into_connection_info().map_err(|e| Error::Config {
        provider: config.provider().to_owned(),
        field: Some("url".to_owned()),
        reason: e.to_string(),
    })?;
    let address = format!("{}/{}", info.addr(), info.redis_settings().db());
    Ok(Settings {
        info,
        address,
        prefix,
        limits: limits(config)?,
        limits_from_server: config.raw("maxValueSize").is_none(),
    })
}

/// The JSON `user` and `password`; empty strings count as absent (Beego
/// writes `"password":""` for "none").
pub(super) fn json_credentials(config: &ProviderConfig) -> Result<(Option<String>, Option<Secret>)> {
    let password = config.string("password")?.map(Secret::new).filter(|p| !p.is_empty());
    let user = config.string("user")?.filter(|u| !u.is_empty());
    Ok((user, password))
}

/// Beego's `conn`: `"host:port"`, or `":port"` for the local host; an IPv6
/// host may be written in brackets (`"[::1]:6379"`). Errors name `field`.
pub(super) fn host_and_port(config: &ProviderConfig, field: &str, conn: &str) -> Result<(String, u16)> {
    let (host, port) = conn
        .rsplit_once(':')
        .ok_or_else(|| config.error(field, format!("expected \"host:port\", got {:?}", redact_address(conn))))?;
    let port: u16 = port.parse().map_err(|_| {
        config.error(
            field,
            format!(
                "{:?} is not a port number (in {:?})",
                redact_address(port),
                redact_address(conn)
            ),
        )
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_url;

    #[test]
    fn timeouts_and_the_value_limit_come_from_json_or_the_url() {
        let defaults = settings(&ProviderConfig::from_json("redis", r#"{"conn":":6379"}"#).unwrap()).unwrap();
        assert_eq!(
            defaults.limits,
            Limits {
                timeout: DEFAULT_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_value_size: DEFAULT_MAX_VALUE_SIZE,
            }
        );
        let json = ProviderConfig::from_json(
            "redis",
            r#"{"conn":":6379","timeout":"250ms","connectTimeout":1500,"maxValueSize":"64m"}"#,
        )
        .unwrap();
        let url = ProviderConfig::from_url(
            "redis",
            parse_url("redis://127.0.0.1:6379/0?timeout=250&connectTimeout=1.5s&maxValueSize=67108864").unwrap(),
        );
        for config in [json, url] {
            assert_eq!(
                settings(&config).unwrap().limits,
                Limits {
                    timeout: Duration::from_millis(250),
                    connect_timeout: Duration::from_millis(1500),
                    max_value_size: 64 << 20,
                }
            );
        }
        for bad in [
            r#"{"conn":":1","timeout":"0"}"#,
            r#"{"conn":":1","timeout":"fast"}"#,
            r#"{"conn":":1","connectTimeout":"1d"}"#,
            r#"{"conn":":1","maxValueSize":"big"}"#,
        ] {
            let err = settings(&ProviderConfig::from_json("redis", bad).unwrap())
                .err()
                .unwrap();
            assert!(matches!(err, Error::Config { field: Some(_), .. }), "{bad}: {err}");
        }
    }
}
