//! Reading the memcache provider's configuration: Beego's JSON keys or a
//! `memcache://` URL.

use std::time::Duration;

use serde_json::Value;

use crate::config::{ProviderConfig, redact_address};
use crate::error::Result;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "cacheme";

/// memcached's port when an address names none.
pub const DEFAULT_PORT: u16 = 11211;

/// Connections per server in use at once, unless `poolSize` says otherwise.
pub const DEFAULT_POOL_SIZE: u64 = 16;

/// Time allowed for one exchange with a server (waiting for a pooled
/// connection, connecting, sending and reading the reply), plus what its
/// size adds, unless `timeout` (or `timeoutMs`) says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The largest value sent, unless `maxValueSize` says otherwise:
/// memcached's default item size (`-I 1m`).
pub const DEFAULT_MAX_VALUE_SIZE: u64 = 1024 * 1024;

/// How long the namespace generation is cached in the process, unless
/// `generationRefreshMs` says otherwise.
pub const DEFAULT_GENERATION_REFRESH: Duration = Duration::from_secs(1);

/// JSON keys the provider accepts (`conn` is Beego's; `key` is the prefix,
/// as for Beego's redis).
pub const JSON_FIELDS: &[&str] = &[
    "conn",
    "key",
    "poolSize",
    "timeout",
    "timeoutMs",
    "maxValueSize",
    "generationRefreshMs",
    "connect",
];

/// URL query parameters the provider accepts.
pub const URL_FIELDS: &[&str] = &[
    "prefix",
    "poolSize",
    "timeout",
    "timeoutMs",
    "maxValueSize",
    "generationRefreshMs",
    "connect",
];

/// Everything needed to build the backend.
#[derive(Debug)]
pub(crate) struct Settings {
    /// `host:port` of each server, in configured order.
    pub(crate) servers: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) pool_size: usize,
    pub(crate) timeout: Duration,
    pub(crate) max_value_size: u64,
    pub(crate) generation_refresh: Duration,
}

pub(crate) fn settings(config: &ProviderConfig) -> Result<Settings> {
    let (servers, prefix_field) = match config.url() {
        Some(_) => {
            config.reject_unknown(URL_FIELDS)?;
            let hosts = config
                .url_hosts()
                .ok_or_else(|| config.error("host", "the URL names no host"))?;
            let servers = hosts
                .iter()
                .map(|h| match h.rsplit_once(':') {
                    Some((_, port)) if !port.ends_with(']') => address(config, "host", h),
                    _ => Ok(join(h, DEFAULT_PORT)),
                })
                .collect::<Result<Vec<_>>>()?;
            (servers, "prefix")
        }
        None => {
            config.reject_unknown(JSON_FIELDS)?;
            (conn(config)?, "key")
        }
    };
    let prefix = config.prefix(prefix_field, DEFAULT_PREFIX)?;
    let pool_size = config.unsigned("poolSize")?.unwrap_or(DEFAULT_POOL_SIZE);
    if pool_size == 0 || pool_size > 10_000 {
        return Err(config.error("poolSize", "must be between 1 and 10000"));
    }
    let timeout = match (config.timeout("timeout")?, config.unsigned("timeoutMs")?) {
        (Some(_), Some(_)) => {
            return Err(config.error("timeoutMs", "give `timeout` or `timeoutMs`, not both"));
        }
        (Some(timeout), None) => timeout,
        (None, Some(0)) => return Err(config.error("timeoutMs", "must be at least 1")),
        (None, Some(ms)) => Duration::from_millis(ms),
        (None, None) => DEFAULT_TIMEOUT,
    };
    let max_value_size = config.byte_size("maxValueSize")?.unwrap_or(DEFAULT_MAX_VALUE_SIZE);
    let generation_refresh = config
        .unsigned("generationRefreshMs")?
        .map_or(DEFAULT_GENERATION_REFRESH, Duration::from_millis);
    Ok(Settings {
        servers,
        prefix,
        pool_size: usize::try_from(pool_size).unwrap_or(usize::MAX),
        timeout,
        max_value_size,
        generation_refresh,
    })
}

/// Beego's `conn`: `"host:port"`, several separated by `;` (Beego) or `,`,
/// or a JSON array of them.
fn conn(config: &ProviderConfig) -> Result<Vec<String>> {
    let missing = || {
        config.error(
            "conn",
            "missing: give the server as \"host:port\" (several: \"h1:p1;h2:p2\")",
        )
    };
    let entries: Vec<String> = match config.raw("conn") {
        None | Some(Value::Null) => return Err(missing()),
        Some(Value::String(s)) => s.split([';', ',']).map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(config.error("conn", "expected an array of \"host:port\" strings")),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(config.error("conn", "expected \"host:port\" or an array of them")),
    };
    let servers: Vec<String> = entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| address(config, "conn", e))
        .collect::<Result<_>>()?;
    if servers.is_empty() {
        return Err(missing());
    }
    Ok(servers)
}

/// `host:port`, `host` (port 11211), `:port` (127.0.0.1, as Beego allows)
/// or `[v6]:port`, normalized to what `TcpStream::connect` takes.
fn address(config: &ProviderConfig, field: &str, entry: &str) -> Result<String> {
    let entry = entry.trim();
    let shown = redact_address(entry);
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port = port.parse().map_err(|_| {
                config.error(
                    field,
                    format!("{:?} is not a port number (in {shown:?})", redact_address(port)),
                )
            })?;
            (host, port)
        }
        _ => (entry, DEFAULT_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
        return Err(config.error(field, format!("{shown:?} is not a \"host:port\" address")));
    }
    Ok(join(if host.is_empty() { "127.0.0.1" } else { host }, port))
}

fn join(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<Settings> {
        settings(&ProviderConfig::from_json("memcache", text).unwrap())
    }

    #[test]
    fn beego_conn_forms() {
        assert_eq!(
            json(r#"{"conn":"127.0.0.1:11211"}"#).unwrap().servers,
            ["127.0.0.1:11211"]
        );
        assert_eq!(json(r#"{"conn":":1234"}"#).unwrap().servers, ["127.0.0.1:1234"]);
        assert_eq!(json(r#"{"conn":"cache-host"}"#).unwrap().servers, ["cache-host:11211"]);
        assert_eq!(json(r#"{"conn":"[::1]:99"}"#).unwrap().servers, ["[::1]:99"]);
        let three = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        assert_eq!(
            json(r#"{"conn":"127.0.0.1:1;127.0.0.1:2; 127.0.0.1:3"}"#)
                .unwrap()
                .servers,
            three
        );
        assert_eq!(
            json(r#"{"conn":"127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"}"#)
                .unwrap()
                .servers,
            three
        );
        assert_eq!(
            json(r#"{"conn":["127.0.0.1:1","127.0.0.1:2","127.0.0.1:3"]}"#)
                .unwrap()
                .servers,
            three
        );
    }

    #[test]
    fn defaults_and_options() {
        let s = json(r#"{"conn":":1"}"#).unwrap();
        assert_eq!(s.prefix, DEFAULT_PREFIX);
        assert_eq!((s.pool_size, s.timeout), (16, DEFAULT_TIMEOUT));
        assert_eq!(s.generation_refresh, DEFAULT_GENERATION_REFRESH);
        let s = json(r#"{"conn":":1","key":"app","poolSize":"4","timeoutMs":250,"generationRefreshMs":0}"#).unwrap();
        assert_eq!(s.prefix, "app");
        assert_eq!((s.pool_size, s.timeout), (4, Duration::from_millis(250)));
        assert_eq!(s.generation_refresh, Duration::ZERO);
        assert_eq!(s.max_value_size, DEFAULT_MAX_VALUE_SIZE);
        let s = json(r#"{"conn":":1","timeout":"1.5s","maxValueSize":"2m"}"#).unwrap();
        assert_eq!((s.timeout, s.max_value_size), (Duration::from_millis(1500), 2 << 20));
        let url = ProviderConfig::from_url(
            "memcache",
            crate::config::parse_url("memcache://h:1?timeout=250&maxValueSize=4194304").unwrap(),
        );
        let s = settings(&url).unwrap();
        assert_eq!((s.timeout, s.max_value_size), (Duration::from_millis(250), 4 << 20));
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            (r#"{}"#, "conn"),
            (r#"{"conn":""}"#, "conn"),
            (r#"{"conn":5}"#, "conn"),
            (r#"{"conn":[5]}"#, "conn"),
            (r#"{"conn":"h:port"}"#, "conn"),
            (r#"{"conn":"h:99999"}"#, "conn"),
            (r#"{"conn":":1","key":"a:b"}"#, "key"),
            (r#"{"conn":":1","key":""}"#, "key"),
            (r#"{"conn":":1","poolSize":0}"#, "poolSize"),
            (r#"{"conn":":1","timeoutMs":0}"#, "timeoutMs"),
            (r#"{"conn":":1","timeout":"0ms"}"#, "timeout"),
            (r#"{"conn":":1","timeout":"soon"}"#, "timeout"),
            (r#"{"conn":":1","timeout":"1s","timeoutMs":5}"#, "timeoutMs"),
            (r#"{"conn":":1","maxValueSize":"1x"}"#, "maxValueSize"),
            (r#"{"conn":":1","prefix":"x"}"#, "prefix"),
        ] {
            let err = json(text).unwrap_err().to_string();
            assert!(err.contains(&format!("(field \"{field}\")")), "{text}: {err}");
        }
    }
}
