//! Reading the redis-cluster provider's configuration: Beego-style JSON
//! with a list of seed nodes, or a `redis-cluster://` URL whose authority
//! lists them, into seed addresses, credentials and a key prefix.
//!
//! The fields are the redis provider's ([`JSON_FIELDS`](super::super::config::JSON_FIELDS),
//! [`URL_FIELDS`](super::super::config::URL_FIELDS)), read by the same
//! helpers; only `conn` (a list) and the database (always 0) differ.

use percent_encoding::percent_decode_str;
use serde_json::Value;
use url::Url;

use crate::config::{ProviderConfig, Secret};
use crate::error::Result;
use crate::redis::config::{DEFAULT_PREFIX, JSON_FIELDS, Limits, URL_FIELDS, host_and_port, json_credentials, limits};

/// Everything needed to reach a cluster, with the password kept out of
/// `Debug`.
pub(crate) struct ClusterSettings {
    /// The seed nodes, in the order given; redis-rs learns the rest of the
    /// cluster from the first one that answers.
    pub(crate) seeds: Vec<(String, u16)>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<Secret>,
    /// `host:port,host:port`, safe to show: no user name, no password.
    pub(crate) address: String,
    pub(crate) prefix: String,
    /// `timeout`, `connectTimeout` and `maxValueSize`, read as for one
    /// server.
    pub(crate) limits: Limits,
}

pub(crate) fn settings(config: &ProviderConfig) -> Result<ClusterSettings> {
    let (seeds, user, password, prefix) = match config.url() {
        Some(url) => from_url(config, url)?,
        None => from_json(config)?,
    };
    let address = seeds
        .iter()
        .map(|(host, port)| match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(ClusterSettings {
        seeds,
        user,
        password,
        address,
        prefix,
        limits: limits(config)?,
    })
}

type Parts = (Vec<(String, u16)>, Option<String>, Option<Secret>, String);

fn from_json(config: &ProviderConfig) -> Result<Parts> {
    config.reject_unknown(JSON_FIELDS)?;
    let entries: Vec<String> = match config.raw("conn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(list)) => list.split([',', ';']).map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(entry) => Ok(entry),
                _ => Err(config.error("conn", format!("entry {i} is not a \"host:port\" string"))),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(config.error(
                "conn",
                "expected a list of \"host:port\" strings (or one string, comma-separated)",
            ));
        }
    };
    let seeds = seeds(config, "conn", &entries)?;
    // Redis Cluster has database 0 only; a config asking for another would
    // silently share keys with every other "database".
    match config.unsigned("dbNum")? {
        None | Some(0) => {}
        Some(_) => return Err(config.error("dbNum", "Redis Cluster has only database 0")),
    }
    let (user, password) = json_credentials(config)?;
    let prefix = config.prefix("key", DEFAULT_PREFIX)?;
    Ok((seeds, user, password, prefix))
}

fn from_url(config: &ProviderConfig, url: &Url) -> Result<Parts> {
    config.reject_unknown(URL_FIELDS)?;
    let entries = config.url_hosts().unwrap_or_default();
    let seeds = seeds(config, "host", &entries)?;
    if !matches!(url.path(), "" | "/" | "/0") {
        return Err(config.error(
            "db",
            format!("Redis Cluster has only database 0, the URL asks for {:?}", url.path()),
        ));
    }
    let decode = |text: &str, field: &str| {
        percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| config.error(field, "not UTF-8 once percent-decoded"))
    };
    let user = Some(decode(url.username(), "user")?).filter(|u| !u.is_empty());
    let password = match url.password() {
        Some(password) => Some(Secret::new(decode(password, "password")?)).filter(|p| !p.is_empty()),
        None => None,
    };
    let prefix = config.prefix("prefix", DEFAULT_PREFIX)?;
    Ok((seeds, user, password, prefix))
}

/// The non-blank entries as `(host, port)`; at least one is required.
fn seeds(config: &ProviderConfig, field: &str, entries: &[String]) -> Result<Vec<(String, u16)>> {
    let seeds = entries
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| host_and_port(config, field, entry))
        .collect::<Result<Vec<_>>>()?;
    if seeds.is_empty() {
        return Err(config.error(field, "missing: name at least one node of the cluster as \"host:port\""));
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_url;
    use crate::error::Error;

    fn json(text: &str) -> Result<ClusterSettings> {
        settings(&ProviderConfig::from_json("redis-cluster", text).unwrap())
    }

    fn url(text: &str) -> Result<ClusterSettings> {
        settings(&ProviderConfig::from_url("redis-cluster", parse_url(text).unwrap()))
    }

    fn field_of(result: Result<ClusterSettings>) -> String {
        match result {
            Err(Error::Config { field: Some(field), .. }) => field,
            Err(other) => panic!("not a config error naming a field: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn json_conn_is_a_list_or_a_separated_string() {
        let list = json(r#"{"key":"app","conn":["127.0.0.1:7000","h2:7001"],"password":"pw"}"#).unwrap();
        assert_eq!(list.seeds, [("127.0.0.1".to_owned(), 7000), ("h2".to_owned(), 7001)]);
        assert_eq!(list.prefix, "app");
        assert_eq!(list.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(list.address, "127.0.0.1:7000,h2:7001");
        let text = json(r#"{"conn":"a:1, b:2;c:3;","dbNum":"0","user":"u"}"#).unwrap();
        assert_eq!(text.seeds.len(), 3);
        assert_eq!(text.prefix, "cacheme");
        assert_eq!(text.user.as_deref(), Some("u"));
        let ipv6 = json(r#"{"conn":["[::1]:7000"]}"#).unwrap();
        assert_eq!(ipv6.address, "[::1]:7000");
    }

    #[test]
    fn bad_json_names_the_field() {
        assert_eq!(field_of(json(r#"{"key":"app"}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":[]}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":" , "}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":["a:1",7]}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":{"a":1}}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":["a:1","b"]}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":["a:1","b:port"]}"#)), "conn");
        assert_eq!(field_of(json(r#"{"conn":["a:1"],"dbNum":"2"}"#)), "dbNum");
        assert_eq!(field_of(json(r#"{"conn":["a:1"],"key":""}"#)), "key");
        assert_eq!(field_of(json(r#"{"conn":["a:1"],"pasword":"x"}"#)), "pasword");
    }

    #[test]
    fn urls_list_the_seed_nodes_with_credentials() {
        let parsed = url("redis-cluster://us%3Aer:p%40ss@127.0.0.1:7000,127.0.0.1:7001?prefix=app").unwrap();
        assert_eq!(
            parsed.seeds,
            [("127.0.0.1".to_owned(), 7000), ("127.0.0.1".to_owned(), 7001)]
        );
        assert_eq!(parsed.user.as_deref(), Some("us:er"));
        assert_eq!(parsed.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(parsed.prefix, "app");
        assert!(!parsed.address.contains("p@ss") && !parsed.address.contains("us"));
        let single = url("redis-cluster://:secret@h:7000/0").unwrap();
        assert_eq!(single.seeds, [("h".to_owned(), 7000)]);
        assert_eq!(single.user, None);
        let bounded = url("redis-cluster://h:7000?timeout=300ms&connectTimeout=1s&maxValueSize=1m").unwrap();
        assert_eq!(bounded.limits.timeout, std::time::Duration::from_millis(300));
        assert_eq!(bounded.limits.connect_timeout, std::time::Duration::from_secs(1));
        assert_eq!(bounded.limits.max_value_size, 1 << 20);
        let json = json(r#"{"conn":["h:7000"],"timeout":"2s"}"#).unwrap();
        assert_eq!(json.limits.timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn bad_urls_name_the_field() {
        assert_eq!(field_of(url("redis-cluster://h1:7000,h2")), "host");
        assert_eq!(field_of(url("redis-cluster://h1:7000,h2:x")), "host");
        assert_eq!(field_of(url("redis-cluster://h1")), "host");
        assert_eq!(field_of(url("redis-cluster:///")), "host");
        assert_eq!(field_of(url("redis-cluster://h1:7000,h2:7001/3")), "db");
        assert_eq!(field_of(url("redis-cluster://h1:7000?prefix=")), "prefix");
        assert_eq!(field_of(url("redis-cluster://h1:7000?db=1")), "db");
    }
}
