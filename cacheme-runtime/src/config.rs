//! Provider configuration, from Beego-style JSON or from a URL, with field
//! accessors whose errors name the field and what was wrong.
//!
//! Both forms end up in a [`ProviderConfig`]: JSON keys and URL query
//! parameters are read by the same accessors, so a provider (built-in or
//! registered by a user) validates both the same way.

use std::fmt;

use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, Result};

/// The configuration handed to a provider's factory.
///
/// Built by [`Cache::new`](crate::Cache::new) (JSON) or
/// [`Cache::open`](crate::Cache::open) (URL). Its `Debug` output never
/// shows a password.
#[derive(Clone)]
pub struct ProviderConfig {
    provider: String,
    source: Source,
    /// Every `host:port` of a URL whose authority lists several.
    hosts: Option<Vec<String>>,
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
            hosts: None,
        })
    }

    /// Wraps a parsed URL whose scheme selected `provider`.
    pub fn from_url(provider: &str, url: Url) -> Self {
        ProviderConfig {
            provider: provider.to_owned(),
            source: Source::Url(url),
            hosts: None,
        }
    }

    /// Records the host list of a URL written with several hosts
    /// (`memcache://h1:11211,h2:11211`); see [`split_host_list`].
    pub fn with_host_list(mut self, hosts: Vec<String>) -> Self {
        self.hosts = Some(hosts);
        self
    }

    /// Every `host:port` of a URL whose authority lists several, in order;
    /// `None` for JSON and for a URL with one host (use
    /// [`url`](Self::url) then).
    pub fn host_list(&self) -> Option<&[String]> {
        self.hosts.as_deref()
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
        let bad = |got: &str| self.error(field, format!("expected a non-negative integer, got {got}"));
        match self.raw(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(&n.to_string())),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(&format!("{s:?}"))),
            Some(other) => Err(bad(kind_of(&other))),
        }
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
            Source::Url(url) => {
                out.field("url", &redact_url(url));
                if let Some(hosts) = &self.hosts {
                    out.field("hosts", hosts);
                }
                &mut out
            }
            Source::Json(map) => {
                let mut shown = map.clone();
                for (key, value) in shown.iter_mut() {
                    if is_secret_field(key) {
                        *value = Value::String(REDACTED.to_owned());
                    }
                }
                out.field("json", &Value::Object(shown).to_string())
            }
        };
        out.finish()
    }
}

/// Splits a URL whose authority lists several hosts separated by commas
/// (`memcache://h1:1,h2:2/?prefix=a`, which no URL parser accepts) into the
/// same URL naming only the first host, and the list of all of them.
/// `None` when the authority names at most one host.
pub fn split_host_list(url: &str) -> Option<(String, Vec<String>)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    if !hosts.contains(',') {
        return None;
    }
    let list: Vec<String> = hosts
        .split(',')
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    let first = list.first()?;
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Some((format!("{scheme}://{userinfo}{first}{tail}"), list))
}

/// What is shown in place of a secret.
pub const REDACTED: &str = "<redacted>";

fn is_secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("password") || lower.contains("secret") || lower == "pass" || lower == "token"
}

/// The URL as text with its password (if any) replaced by [`REDACTED`].
pub fn redact_url(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only fails for URLs that cannot have a password, which this one has.
    let _ = shown.set_password(Some(REDACTED));
    shown.to_string()
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
        assert_eq!(split_host_list("memcache://127.0.0.1:1"), None);
        assert_eq!(split_host_list("memcache://a:1/x?y=1,2"), None);
        let (url, hosts) = split_host_list("memcache://u:p@a:1, b:2,c/?prefix=x").unwrap();
        assert_eq!(url, "memcache://u:p@a:1/?prefix=x");
        assert_eq!(hosts, ["a:1", "b:2", "c"]);
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
