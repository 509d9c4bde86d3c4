//! Provider configuration, from Beego-style JSON or from a URL, with field
//! accessors whose errors name the field and what was wrong.
//!
//! Both forms end up in a [`ProviderConfig`]: JSON keys and URL query
//! parameters are read by the same accessors, so a provider (built-in or
//! registered by a user) validates both the same way.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, Result};
pub use crate::redact::{REDACTED, hidden_in_url, is_shown, redact_address, redact_url};

/// The configuration handed to a provider's factory.
///
/// Built by [`Cache::new`](crate::Cache::new) (JSON) or
/// [`Cache::open`](crate::Cache::open) (URL). Its `Debug` output shows only
/// the fields known to be harmless for its provider (see [`is_shown`]);
/// every other value, and a URL's password, is [`REDACTED`].
#[derive(Clone)]
pub struct ProviderConfig {
    provider: String,
    source: Source,
}

#[derive(Clone)]
enum Source {
    Json(Map<String, Value>),
    Url(Url),
}

impl ProviderConfig {
    /// Parses Beego-style JSON (`{"conn":"127.0.0.1:6379"}`). An empty or
    /// all-blank string is an empty configuration.
    pub fn from_json(provider: &str, text: &str) -> Result<Self> {
        let fields = if text.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    return Err(Error::Config {
                        provider: provider.to_owned(),
                        field: None,
                        reason: format!("expected a JSON object, got {}", kind_of(&other)),
                    });
                }
                Err(e) => {
                    return Err(Error::Config {
                        provider: provider.to_owned(),
                        field: None,
                        reason: format!("malformed JSON: {e}"),
                    });
                }
            }
        };
        Ok(ProviderConfig {
            provider: provider.to_owned(),
            source: Source::Json(fields),
        })
    }

    /// Wraps a parsed URL whose scheme selected `provider`.
    pub fn from_url(provider: &str, url: Url) -> Self {
        ProviderConfig {
            provider: provider.to_owned(),
            source: Source::Url(url),
        }
    }

    /// The provider this configuration is for.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The URL, when the configuration came from [`Cache::open`](crate::Cache::open).
    pub fn url(&self) -> Option<&Url> {
        match &self.source {
            Source::Url(url) => Some(url),
            Source::Json(_) => None,
        }
    }

    /// The servers named by the URL's authority, as written: `["h1:7000",
    /// "h2:7001"]` for `scheme://user:pass@h1:7000,h2:7001/...` (see
    /// [`parse_url`]), `["h1:7000"]` for a single server and `["h1"]` when
    /// no port is given. `None` for a JSON configuration or a URL without a
    /// host. Splitting each entry into host and port is the provider's job.
    pub fn url_hosts(&self) -> Option<Vec<String>> {
        hosts_of(self.url()?)
    }

    /// An error about `field` of this configuration.
    pub fn error(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::config(&self.provider, field, reason)
    }

    /// The raw value of a field: a JSON value, or a URL query parameter as
    /// a JSON string.
    pub fn raw(&self, field: &str) -> Option<Value> {
        match &self.source {
            Source::Json(map) => map.get(field).cloned(),
            Source::Url(url) => url
                .query_pairs()
                .find(|(k, _)| k == field)
                .map(|(_, v)| Value::String(v.into_owned())),
        }
    }

    /// A string field. JSON numbers and booleans are refused (a string was
    /// expected); `null` counts as absent.
    pub fn string(&self, field: &str) -> Result<Option<String>> {
        match self.raw(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(field, format!("expected a string, got {}", kind_of(&other)))),
        }
    }

    /// A non-negative integer field. Beego writes numbers as strings
    /// (`"dbNum":"0"`), so a string holding a decimal integer is accepted.
    pub fn unsigned(&self, field: &str) -> Result<Option<u64>> {
        // The value is quoted only if the field is known to be harmless.
        let bad = |got: &str| {
            let got = crate::redact::shown_value(&self.provider, field, got);
            self.error(field, format!("expected a non-negative integer, got {got}"))
        };
        match self.raw(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(&n.to_string())),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(&format!("{s:?}"))),
            Some(other) => Err(bad(kind_of(&other))),
        }
    }

    /// A timeout field: a number of milliseconds (`250`, or `"250"` as
    /// Beego writes numbers), or a duration written as Go writes one, the
    /// form of Beego's `timeout` (`"250ms"`, `"1.5s"`, `"2m"`, `"1m30s"`;
    /// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`). Zero is refused: a
    /// timeout that fires at once would make every command fail.
    pub fn timeout(&self, field: &str) -> Result<Option<Duration>> {
        let bad = |got: &str| {
            let got = crate::redact::shown_value(&self.provider, field, got);
            self.error(
                field,
                format!("expected a timeout in milliseconds or with a unit (\"250ms\", \"2s\"), got {got}"),
            )
        };
        let timeout = match self.raw(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Duration::from_millis)
                .ok_or_else(|| bad(&n.to_string()))?,
            Some(Value::String(s)) => parse_duration(&s).ok_or_else(|| bad(&format!("{s:?}")))?,
            Some(other) => return Err(bad(kind_of(&other))),
        };
        if timeout.is_zero() {
            return Err(self.error(field, "must be more than zero"));
        }
        Ok(Some(timeout))
    }

    /// A size in bytes: a number, or a number with a binary unit
    /// (`"512k"`, `"1m"`, `"1MiB"`, `"2g"`; `k`/`kb`/`kib` are all 1024),
    /// as memcached's `-I` is written. Zero is refused.
    pub fn byte_size(&self, field: &str) -> Result<Option<u64>> {
        let bad = |got: &str| {
            let got = crate::redact::shown_value(&self.provider, field, got);
            self.error(
                field,
                format!("expected a size in bytes, or with a unit (\"512k\", \"1m\"), got {got}"),
            )
        };
        let size = match self.raw(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad(&n.to_string()))?,
            Some(Value::String(s)) => parse_byte_size(&s).ok_or_else(|| bad(&format!("{s:?}")))?,
            Some(other) => return Err(bad(kind_of(&other))),
        };
        if size == 0 {
            return Err(self.error(field, "must be more than zero"));
        }
        Ok(Some(size))
    }

    /// The key prefix (the namespace) in `field` (`key` in Beego JSON,
    /// `prefix` in a URL), or `default` when the field is absent, checked
    /// by [`check_prefix`]. Every provider that shares a server with other
    /// caches reads its prefix here, so no two caches' keys can overlap on
    /// any backend.
    pub fn prefix(&self, field: &str, default: &str) -> Result<String> {
        let prefix = self.string(field)?.unwrap_or_else(|| default.to_owned());
        check_prefix(&prefix).map_err(|reason| self.error(field, format!("the key prefix {prefix:?} {reason}")))?;
        Ok(prefix)
    }

    /// Refuses any field not in `known`, so a typo (`"pasword"`) is an error
    /// rather than a silently ignored setting. URL query parameters are
    /// checked the same way.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        let names: Vec<String> = match &self.source {
            Source::Json(map) => map.keys().cloned().collect(),
            Source::Url(url) => url.query_pairs().map(|(k, _)| k.into_owned()).collect(),
        };
        match names.into_iter().find(|name| !known.contains(&name.as_str())) {
            None => Ok(()),
            Some(name) => Err(self.error(
                &name,
                format!(
                    "unknown field; the {} provider accepts: {}",
                    self.provider,
                    known.join(", ")
                ),
            )),
        }
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ProviderConfig");
        out.field("provider", &self.provider);
        match &self.source {
            Source::Url(url) => out.field("url", &redact_url(url)),
            Source::Json(map) => out.field("json", &crate::redact::redact_json(&self.provider, map)),
        };
        out.finish()
    }
}

/// The longest key prefix accepted: room for a memcached key (250 bytes)
/// after it.
pub const MAX_PREFIX: usize = 100;

/// The character that ends a key prefix in every stored key
/// (`prefix:key`).
pub const PREFIX_SEPARATOR: char = ':';

/// Why `prefix` cannot name a cache's namespace, if it cannot.
///
/// A key `k` of prefix `p` is stored as `p:k`. A prefix may therefore not
/// contain `:`: otherwise the cache `app` would read key `k` of the cache
/// `app:sessions` as its own key `sessions:k`, and its `clear()` would
/// delete it. Without `:`, a prefix ends at the first `:` of a stored key,
/// so two different prefixes never share a key. Also refused: the empty
/// prefix (`clear()` would match every key), more than [`MAX_PREFIX`]
/// bytes, anything but printable ASCII without spaces (memcached's key
/// rules, so one prefix works on every backend), and `{` or `}` (a Redis
/// Cluster hash tag inside the prefix would put every key of the cache in
/// one slot).
pub fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty: clear() removes every key under the prefix".to_owned());
    }
    if prefix.len() > MAX_PREFIX {
        return Err(format!("must be at most {MAX_PREFIX} bytes, got {}", prefix.len()));
    }
    if let Some(c) = prefix.chars().find(|&c| c == PREFIX_SEPARATOR) {
        return Err(format!(
            "must not contain {c:?}: it separates the prefix from the key, so a prefix holding it \
             would overlap another cache's namespace (use '-', '_' or '.' instead)"
        ));
    }
    if let Some(c) = prefix.chars().find(|&c| !c.is_ascii_graphic() || c == '{' || c == '}') {
        return Err(format!(
            "must be printable ASCII without spaces, '{{' or '}}', found {c:?}"
        ));
    }
    Ok(())
}

/// Parses the URL given to [`Cache::open`](crate::Cache::open), also when its
/// authority lists several servers (`redis-cluster://h1:7000,h2:7001`),
/// which the URL standard does not allow: the host list is kept as one
/// opaque host (its `%`, `:`, `[` and `]` percent-encoded) and read back by
/// [`ProviderConfig::url_hosts`]. Any other URL parses as usual.
pub fn parse_url(text: &str) -> Result<Url, url::ParseError> {
    Url::parse(&escape_host_list(text).unwrap_or_else(|| text.to_owned()))
}

/// `text` with the host list of its authority escaped, or `None` when the
/// authority names at most one host.
fn escape_host_list(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The user info ends at the last `@` (as the URL standard reads it).
    let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
    let (user_info, hosts) = authority.split_at(hosts_start);
    if !hosts.contains(',') {
        return None;
    }
    let mut escaped = String::with_capacity(hosts.len() + 16);
    for c in hosts.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            ':' => escaped.push_str("%3A"),
            '[' => escaped.push_str("%5B"),
            ']' => escaped.push_str("%5D"),
            c => escaped.push(c),
        }
    }
    Some(format!("{scheme}://{user_info}{escaped}{tail}"))
}

/// The servers named by `url`'s authority: see [`ProviderConfig::url_hosts`].
pub(crate) fn hosts_of(url: &Url) -> Option<Vec<String>> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    if url.port().is_none() && host.contains(',') {
        let list = percent_encoding::percent_decode_str(host).decode_utf8_lossy();
        return Some(list.split(',').map(|h| h.trim().to_owned()).collect());
    }
    Some(match url.port() {
        Some(port) => vec![format!("{host}:{port}")],
        None => vec![host.to_owned()],
    })
}

/// Bytes per second a transfer is assumed to reach at worst when a
/// command's timeout grows with what it sends: a quarter of a 1 Gbit/s
/// link, so a value that is legal for the server is never cut off by a
/// timeout sized for small commands.
pub const TRANSFER_RATE: u64 = 32 * 1024 * 1024;

/// The time allowed for a command that sends `bytes`: `base`, plus the
/// time `bytes` take at [`TRANSFER_RATE`] (for example 500 ms + 6.25 s for
/// a 200 MiB value).
pub fn scaled_timeout(base: Duration, bytes: usize) -> Duration {
    let micros = (bytes as u128) * 1_000_000 / u128::from(TRANSFER_RATE);
    base.saturating_add(Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)))
}

/// `"250ms"`, `"1.5s"`, `"1m30s"` (Go's `time.ParseDuration` form) or a
/// bare number of milliseconds (`"250"`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_millis);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let number: f64 = number.parse().ok()?;
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(number * seconds_per_unit).ok()?)?;
        rest = tail;
    }
    Some(total)
}

/// `"1048576"`, `"512k"`, `"1m"`, `"1MiB"`, `"2g"`: binary units.
fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// A secret string (a password) whose `Debug` and `Display` print
/// [`REDACTED`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for handing to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_may_be_written_as_strings_like_beego_does() {
        let cfg = ProviderConfig::from_json("redis", r#"{"dbNum":"3","n":4}"#).unwrap();
        assert_eq!(cfg.unsigned("dbNum").unwrap(), Some(3));
        assert_eq!(cfg.unsigned("n").unwrap(), Some(4));
        assert_eq!(cfg.unsigned("absent").unwrap(), None);
    }

    #[test]
    fn timeouts_are_milliseconds_or_go_durations() {
        let cfg = ProviderConfig::from_json(
            "redis",
            r#"{"a":250,"b":"250","c":"250ms","d":"1.5s","e":"1m30s","f":"180s","g":"0","h":"soon","i":"5 parsecs","j":-1,"k":"2x"}"#,
        )
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(cfg.timeout("a").unwrap(), Some(ms(250)));
        assert_eq!(cfg.timeout("b").unwrap(), Some(ms(250)));
        assert_eq!(cfg.timeout("c").unwrap(), Some(ms(250)));
        assert_eq!(cfg.timeout("d").unwrap(), Some(ms(1500)));
        assert_eq!(cfg.timeout("e").unwrap(), Some(ms(90_000)));
        assert_eq!(cfg.timeout("f").unwrap(), Some(ms(180_000)));
        assert_eq!(cfg.timeout("absent").unwrap(), None);
        for bad in ["g", "h", "i", "j", "k"] {
            let err = cfg.timeout(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("(field \"{bad}\")")), "{err}");
        }
        let url = ProviderConfig::from_url("redis", Url::parse("redis://h?timeout=250ms&other=2s").unwrap());
        assert_eq!(url.timeout("timeout").unwrap(), Some(ms(250)));
        assert_eq!(url.timeout("other").unwrap(), Some(ms(2000)));
    }

    #[test]
    fn sizes_take_binary_units() {
        let cfg = ProviderConfig::from_json(
            "memcache",
            r#"{"a":1024,"b":"512k","c":"1m","d":"1MiB","e":"2g","f":"0","g":"1t"}"#,
        )
        .unwrap();
        assert_eq!(cfg.byte_size("a").unwrap(), Some(1024));
        assert_eq!(cfg.byte_size("b").unwrap(), Some(512 * 1024));
        assert_eq!(cfg.byte_size("c").unwrap(), Some(1 << 20));
        assert_eq!(cfg.byte_size("d").unwrap(), Some(1 << 20));
        assert_eq!(cfg.byte_size("e").unwrap(), Some(2 << 30));
        assert!(cfg.byte_size("f").is_err() && cfg.byte_size("g").is_err());
    }

    #[test]
    fn timeouts_grow_with_what_a_command_sends() {
        let base = Duration::from_millis(500);
        assert_eq!(scaled_timeout(base, 0), base);
        assert_eq!(scaled_timeout(base, 200 << 20), base + Duration::from_millis(6250));
        assert!(scaled_timeout(base, usize::MAX) > Duration::from_secs(3600));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cfg = ProviderConfig::from_json("memory", r#"{"interval":"soon","conn":5}"#).unwrap();
        let err = cfg.unsigned("interval").unwrap_err().to_string();
        assert!(err.contains("\"interval\"") && err.contains("\"soon\""), "{err}");
        let err = cfg.string("conn").unwrap_err().to_string();
        assert!(err.contains("\"conn\"") && err.contains("a number"), "{err}");
    }

    #[test]
    fn url_query_parameters_are_fields() {
        let url = Url::parse("memory://?capacity=10&interval=x").unwrap();
        let cfg = ProviderConfig::from_url("memory", url);
        assert_eq!(cfg.unsigned("capacity").unwrap(), Some(10));
        assert!(cfg.unsigned("interval").is_err());
        assert!(cfg.reject_unknown(&["capacity"]).is_err());
        assert!(cfg.reject_unknown(&["capacity", "interval"]).is_ok());
    }

    #[test]
    fn urls_may_list_several_hosts() {
        let url = parse_url("redis-cluster://u:p%40ss@127.0.0.1:7000,[::1]:7001,h:7002/0?prefix=a").unwrap();
        assert_eq!(url.password(), Some("p%40ss"));
        assert_eq!(url.query(), Some("prefix=a"));
        assert_eq!(url.path(), "/0");
        let cfg = ProviderConfig::from_url("redis-cluster", url);
        assert_eq!(cfg.url_hosts().unwrap(), ["127.0.0.1:7000", "[::1]:7001", "h:7002"]);
        let single = ProviderConfig::from_url("x", parse_url("x://h:1?y=2").unwrap());
        assert_eq!(single.url_hosts().unwrap(), ["h:1"]);
        let no_port = ProviderConfig::from_url("x", parse_url("x://h").unwrap());
        assert_eq!(no_port.url_hosts().unwrap(), ["h"]);
        let no_host = ProviderConfig::from_url("x", parse_url("x:///path").unwrap());
        assert_eq!(no_host.url_hosts(), None);
        assert_eq!(parse_url("x://a:1,b:2#frag").unwrap().fragment(), Some("frag"));
        assert!(
            parse_url("x://a:1,b:2:3").is_ok(),
            "entries are checked by the provider"
        );
    }

    #[test]
    fn prefixes_never_overlap() {
        for good in ["cacheme", "my-app.v2", "a*b", "app_sessions", &"p".repeat(MAX_PREFIX)] {
            assert!(check_prefix(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "app:sessions",
            "a:",
            ":",
            "a b",
            "ключ",
            "a\n",
            "{tag}",
            "a}",
            &"p".repeat(MAX_PREFIX + 1),
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        let cfg = ProviderConfig::from_json("redis", r#"{"key":"app:sessions"}"#).unwrap();
        let err = cfg.prefix("key", "cacheme").unwrap_err().to_string();
        assert!(err.contains("(field \"key\")") && err.contains("':'"), "{err}");
        let cfg = ProviderConfig::from_json("redis", "{}").unwrap();
        assert_eq!(cfg.prefix("key", "cacheme").unwrap(), "cacheme");
    }

    #[test]
    fn debug_shows_only_harmless_fields() {
        for spelling in [
            "password",
            "pasword",
            "passwd",
            "pwd",
            "requirepass",
            "auth",
            "apiKey",
            "token",
            "secret",
        ] {
            let json = format!(r#"{{"conn":"127.0.0.1:1","key":"app","{spelling}":"hunter2"}}"#);
            for provider in ["redis", "redis-cluster", "memcache", "memory", "file", "mine"] {
                let cfg = ProviderConfig::from_json(provider, &json).unwrap();
                let shown = format!("{cfg:?}");
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(shown.contains(spelling), "{shown}");
                let err = cfg.unsigned(spelling).unwrap_err().to_string();
                assert!(!err.contains("hunter2"), "{err}");
            }
            let cfg = ProviderConfig::from_json("redis", &json).unwrap();
            assert!(format!("{cfg:?}").contains("127.0.0.1:1"), "{cfg:?}");
            let url = parse_url(&format!("redis://u:hunter1@h:1/0?prefix=app&{spelling}=hunter2")).unwrap();
            let shown = format!("{:?}", ProviderConfig::from_url("redis", url));
            assert!(!shown.contains("hunter") && shown.contains("prefix=app"), "{shown}");
        }
        let cfg = ProviderConfig::from_json("redis", r#"{"conn":"u:hunter2@h:1"}"#).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"), "{cfg:?}");
    }

    #[test]
    fn debug_hides_passwords_in_json_and_urls() {
        let cfg = ProviderConfig::from_json("redis", r#"{"password":"hunter2"}"#).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let url = Url::parse("redis://user:hunter2@127.0.0.1:1/0").unwrap();
        let cfg = ProviderConfig::from_url("redis", url);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2") && shown.contains("user"), "{shown}");
        assert_eq!(
            format!("{:?} {}", Secret::new("hunter2"), Secret::new("hunter2")),
            "<redacted> <redacted>"
        );
    }
}
