//! Reading the redis provider's configuration: Beego's JSON keys or a
//! `redis://` URL, into redis-rs connection settings plus a key prefix.
//! The pieces the cluster provider reads the same way (`key`/`prefix`,
//! `host:port`, `user`/`password`) are `pub(super)` here.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use url::Url;

use crate::config::{ProviderConfig, Secret, redact_address};
use crate::error::{Error, Result};

/// The prefix used when none is configured: keys are `cacheme:<key>`.
pub const DEFAULT_PREFIX: &str = "cacheme";

/// JSON keys the redis provider accepts. `maxIdle` and `timeout` are
/// Beego's pool settings: accepted so Beego configs load unchanged, and
/// ignored because the connection is multiplexed (there is no pool).
/// `connect` is the [`ConnectMode`](crate::ConnectMode).
pub const JSON_FIELDS: &[&str] = &[
    "key", "conn", "dbNum", "password", "user", "maxIdle", "timeout", "connect",
];

/// URL query parameters the redis provider accepts (`connect`: the
/// [`ConnectMode`](crate::ConnectMode)).
pub const URL_FIELDS: &[&str] = &["prefix", "connect"];

/// Everything needed to connect, with the password kept out of `Debug`.
pub(crate) struct Settings {
    pub(crate) info: ConnectionInfo,
    /// `host:port/db`, safe to show: no user name, no password.
    pub(crate) address: String,
    pub(crate) prefix: String,
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
    Ok(Settings { info, address, prefix })
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
