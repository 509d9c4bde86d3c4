//! What may be shown of a configuration: an allow-list, used by every log
//! line, error, `Debug` output and CLI message that shows a configuration
//! or a URL.
//!
//! A field's value is shown only when the field is on its provider's list
//! of fields known to hold no secret (addresses, key prefixes, sizes,
//! timeouts). Every other value is replaced by [`REDACTED`]: a password
//! under any spelling (`password`, `pasword`, `passwd`, `pwd`,
//! `requirepass`, `auth`, `apiKey`, `token`, ...), and every field of a
//! provider registered by the application, whose fields this crate cannot
//! know. The password of a URL's user info is always replaced.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::Value;
use url::Url;

/// What is shown in place of a secret.
pub const REDACTED: &str = "<redacted>";

const REDIS_FIELDS: &[&str] = &[
    "key",
    "prefix",
    "conn",
    "dbNum",
    "user",
    "maxIdle",
    "timeout",
    "connectTimeout",
    "maxValueSize",
];

/// The fields known to be harmless, by provider (and URL scheme).
const SHOWN: &[(&str, &[&str])] = &[
    ("memory", &["capacity", "interval"]),
    (
        "file",
        &[
            "CachePath",
            "FileSuffix",
            "DirectoryLevel",
            "EmbedExpiry",
            "interval",
            "timeout",
        ],
    ),
    ("redis", REDIS_FIELDS),
    ("rediss", REDIS_FIELDS),
    ("redis-cluster", REDIS_FIELDS),
    (
        "memcache",
        &[
            "conn",
            "key",
            "prefix",
            "poolSize",
            "timeout",
            "timeoutMs",
            "maxValueSize",
            "generationRefreshMs",
        ],
    ),
];

/// URL fragments known to be harmless (redis-rs's `rediss://...#insecure`).
const SHOWN_FRAGMENTS: &[&str] = &["insecure"];

/// Whether the value of `field` of a `provider` configuration may be shown.
pub fn is_shown(provider: &str, field: &str) -> bool {
    SHOWN
        .iter()
        .any(|(name, fields)| *name == provider && fields.contains(&field))
}

/// `value` of field `field`, as it may be shown: itself (its user info
/// removed, see [`redact_address`]) when the field is harmless, else
/// [`REDACTED`].
pub fn shown_value<'a>(provider: &str, field: &str, value: &'a str) -> Cow<'a, str> {
    if is_shown(provider, field) {
        redact_address(value)
    } else {
        Cow::Borrowed(REDACTED)
    }
}

/// An address as it may be shown: anything up to its last `@` (user info,
/// maybe a password, written where a `host:port` was expected) replaced by
/// [`REDACTED`].
pub fn redact_address(text: &str) -> Cow<'_, str> {
    match text.rfind('@') {
        Some(at) => Cow::Owned(format!("{REDACTED}{}", &text[at..])),
        None => Cow::Borrowed(text),
    }
}

/// A Beego JSON configuration as it may be shown: every value of a field
/// not known to be harmless replaced by [`REDACTED`].
pub(crate) fn redact_json(provider: &str, fields: &serde_json::Map<String, Value>) -> String {
    let shown: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, value)| {
            let value = if is_shown(provider, name) {
                strip_user_info(value)
            } else {
                Value::String(REDACTED.to_owned())
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(shown).to_string()
}

fn strip_user_info(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact_address(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(strip_user_info).collect()),
        other => other.clone(),
    }
}

/// The URL as text that may be shown: its user-info password, the value of
/// every query parameter not known to be harmless for the URL's scheme and
/// any fragment other than `#insecure` replaced by [`REDACTED`] (written
/// as is, not percent-encoded). A host list
/// (`redis-cluster://h1:7000,h2:7001`) is shown as written.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}:", url.scheme());
    if url.has_authority() {
        out.push_str("//");
        if !url.username().is_empty() || url.password().is_some() {
            out.push_str(url.username());
            if url.password().is_some() {
                out.push(':');
                out.push_str(REDACTED);
            }
            out.push('@');
        }
        if let Some(hosts) = crate::config::hosts_of(url) {
            out.push_str(&hosts.join(","));
        }
    }
    if url.has_authority() {
        out.push_str(url.path());
    } else {
        // `redis:user:pass@host` parses as a path: it may hold user info.
        out.push_str(&redact_address(url.path()));
    }
    if let Some(query) = url.query() {
        out.push('?');
        let shown: Vec<Cow<'_, str>> = query
            .split('&')
            .map(|pair| match query_pair(url, pair) {
                QueryPair::Shown => Cow::Borrowed(pair),
                QueryPair::Hidden { name, .. } => Cow::Owned(format!("{name}={REDACTED}")),
                QueryPair::Bare => Cow::Borrowed(REDACTED),
            })
            .collect();
        out.push_str(&shown.join("&"));
    }
    if let Some(fragment) = url.fragment() {
        out.push('#');
        out.push_str(if SHOWN_FRAGMENTS.contains(&fragment) {
            fragment
        } else {
            REDACTED
        });
    }
    out
}

/// Every text [`redact_url`] hides in `url`, as written and
/// percent-decoded: for scrubbing messages that might quote them.
pub fn hidden_in_url(url: &Url) -> Vec<String> {
    let mut hidden = Vec::new();
    let mut add = |raw: &str| {
        let decoded = percent_decode_str(&raw.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        let plain = percent_decode_str(raw).decode_utf8_lossy().into_owned();
        for text in [raw.to_owned(), decoded, plain] {
            if !text.is_empty() && !hidden.contains(&text) {
                hidden.push(text);
            }
        }
    };
    if let Some(password) = url.password() {
        add(password);
    }
    if let Some(at) = url.path().rfind('@').filter(|_| !url.has_authority()) {
        add(&url.path()[..at]);
    }
    for pair in url.query().unwrap_or_default().split('&') {
        match query_pair(url, pair) {
            QueryPair::Shown => {}
            QueryPair::Hidden { value, .. } => add(value),
            QueryPair::Bare => add(pair),
        }
    }
    if let Some(fragment) = url.fragment().filter(|f| !SHOWN_FRAGMENTS.contains(f)) {
        add(fragment);
    }
    hidden
}

enum QueryPair<'a> {
    /// A harmless field, or an empty pair.
    Shown,
    /// `name=value` of a field not known to be harmless.
    Hidden { name: &'a str, value: &'a str },
    /// Text without `=` (it might be a secret itself).
    Bare,
}

fn query_pair<'a>(url: &Url, pair: &'a str) -> QueryPair<'a> {
    if pair.is_empty() {
        return QueryPair::Shown;
    }
    let Some((name, value)) = pair.split_once('=') else {
        return QueryPair::Bare;
    };
    let decoded = percent_decode_str(&name.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned();
    if is_shown(url.scheme(), &decoded) {
        QueryPair::Shown
    } else {
        QueryPair::Hidden { name, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_url;

    /// Password spellings a deny-list would miss.
    const SPELLINGS: &[&str] = &[
        "password",
        "pasword",
        "passwd",
        "pwd",
        "pass",
        "requirepass",
        "auth",
        "apiKey",
        "api_key",
        "token",
        "secret",
        "credentials",
    ];

    #[test]
    fn urls_show_only_harmless_query_parameters() {
        for spelling in SPELLINGS {
            for scheme in ["redis", "rediss", "redis-cluster", "memcache", "memory", "mine"] {
                let text = format!("{scheme}://u:hunter1@h:1/0?prefix=app&{spelling}=hunter2#hunter3");
                let url = parse_url(&text).unwrap();
                let shown = redact_url(&url);
                assert!(!shown.contains("hunter"), "{text} -> {shown}");
                assert!(shown.contains(&format!("{spelling}={REDACTED}")), "{shown}");
                let hidden = hidden_in_url(&url);
                for secret in ["hunter1", "hunter2", "hunter3"] {
                    assert!(hidden.iter().any(|h| h == secret), "{secret} in {hidden:?}");
                }
            }
        }
        let url = parse_url("redis-cluster://:p%40ss@127.0.0.1:7000,[::1]:7001/0?prefix=app&db=1").unwrap();
        assert_eq!(
            redact_url(&url),
            "redis-cluster://:<redacted>@127.0.0.1:7000,[::1]:7001/0?prefix=app&db=<redacted>"
        );
        assert!(hidden_in_url(&url).contains(&"p@ss".to_owned()));
        let url = parse_url("rediss://h:6380/1?prefix=a#insecure").unwrap();
        assert_eq!(redact_url(&url), "rediss://h:6380/1?prefix=a#insecure");
        let url = parse_url("file:///tmp/c?FileSuffix=.x&s3cr3t").unwrap();
        assert_eq!(redact_url(&url), "file:///tmp/c?FileSuffix=.x&<redacted>");
        assert_eq!(redact_url(&parse_url("memory://").unwrap()), "memory://");
        let url = parse_url("redis:u:hunter2@h:1").unwrap();
        assert_eq!(redact_url(&url), "redis:<redacted>@h:1");
        assert!(hidden_in_url(&url).contains(&"u:hunter2".to_owned()));
    }

    #[test]
    fn a_custom_providers_fields_are_all_hidden() {
        let url = parse_url("mine://h?prefix=hunter2").unwrap();
        assert_eq!(redact_url(&url), "mine://h?prefix=<redacted>");
        assert_eq!(shown_value("mine", "conn", "hunter2"), REDACTED);
        assert_eq!(shown_value("redis", "conn", "u:hunter2@h:1"), "<redacted>@h:1");
        assert_eq!(shown_value("redis", "conn", "h:1"), "h:1");
    }
}
