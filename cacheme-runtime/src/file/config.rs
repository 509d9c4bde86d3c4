//! Reading the file provider's configuration: Beego's JSON keys or a
//! `file:///path` URL.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::config::{ProviderConfig, redact_url};
use crate::error::{Error, Result};

/// Beego's default `CachePath`, relative to the working directory.
pub(super) const DEFAULT_PATH: &str = "cache";
/// Beego's default `FileSuffix`.
pub(super) const DEFAULT_SUFFIX: &str = ".bin";
/// Beego's default `DirectoryLevel`.
pub(super) const DEFAULT_LEVELS: usize = 2;
/// The deepest `DirectoryLevel` accepted.
pub(super) const MAX_LEVELS: usize = 4;
/// Seconds between sweeps of expired files when `interval` is not given.
pub(super) const DEFAULT_INTERVAL_SECS: u64 = 60;
/// The time a call on one key may take when `timeout` is not given: a
/// local disk answers in milliseconds; this bounds a lock held by a
/// stopped process or a hung network file system.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// JSON keys: Beego's four, plus `interval` (as the memory provider's).
const JSON_FIELDS: &[&str] = &[
    "CachePath",
    "FileSuffix",
    "DirectoryLevel",
    "EmbedExpiry",
    "interval",
    "timeout",
];
/// URL query parameters: the path is the URL's own.
const URL_FIELDS: &[&str] = &["FileSuffix", "DirectoryLevel", "EmbedExpiry", "interval", "timeout"];

/// The validated settings.
#[derive(Debug)]
pub(super) struct Settings {
    /// As configured (maybe relative); resolved when the backend is built.
    pub(super) path: PathBuf,
    pub(super) suffix: String,
    pub(super) levels: usize,
    /// `None` when sweeping is off (`interval` 0).
    pub(super) sweep: Option<Duration>,
    pub(super) timeout: Duration,
}

pub(super) fn settings(config: &ProviderConfig) -> Result<Settings> {
    let (path, field) = match config.url() {
        Some(url) => {
            config.reject_unknown(URL_FIELDS)?;
            let path = url.to_file_path().map_err(|()| {
                config.error(
                    "url",
                    format!(
                        "{} is not a local file URL: write file:///absolute/path (no host), \
                         or use the JSON form for a relative CachePath",
                        redact_url(url)
                    ),
                )
            })?;
            (path, "url")
        }
        None => {
            config.reject_unknown(JSON_FIELDS)?;
            let path = config.string("CachePath")?.unwrap_or_else(|| DEFAULT_PATH.to_owned());
            (PathBuf::from(path), "CachePath")
        }
    };
    check_path(config, field, &path)?;
    let suffix = config
        .string("FileSuffix")?
        .unwrap_or_else(|| DEFAULT_SUFFIX.to_owned());
    check_suffix(config, &suffix)?;
    let levels = match config.unsigned("DirectoryLevel")? {
        None => DEFAULT_LEVELS,
        Some(n) if n <= MAX_LEVELS as u64 => n as usize,
        Some(n) => {
            return Err(config.error(
                "DirectoryLevel",
                format!("{n} is too deep: use 0 to {MAX_LEVELS} levels of directories"),
            ));
        }
    };
    // Beego stores a Put whose timeout equals EmbedExpiry "forever"; here
    // that is put_forever, so the setting is checked and otherwise unused.
    if let Some(seconds) = config.unsigned("EmbedExpiry")?.filter(|&s| s != 0) {
        tracing::warn!(
            provider = "file",
            EmbedExpiry = seconds,
            "EmbedExpiry is accepted for Beego compatibility and ignored: use put_forever for entries that never expire"
        );
    }
    let interval = config.unsigned("interval")?.unwrap_or(DEFAULT_INTERVAL_SECS);
    Ok(Settings {
        path,
        suffix,
        levels,
        sweep: (interval > 0).then(|| Duration::from_secs(interval)),
        timeout: config.timeout("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// Refuses an empty path and one that is (or resolves to) the root of a
/// file system: the cache would own every file of the machine that looks
/// like one of its entries, and would put its lock directory there.
/// `..` is resolved against the working directory without following
/// symbolic links, as the path will be.
fn check_path(config: &ProviderConfig, field: &str, path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(config.error(field, "the cache directory must not be empty"));
    }
    let absolute = std::path::absolute(path).map_err(|e| config.error(field, format!("{}: {e}", path.display())))?;
    let mut depth = 0usize;
    for component in absolute.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth = depth.saturating_sub(1),
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
        }
    }
    if depth == 0 {
        return Err(config.error(
            field,
            format!(
                "{} is the root of the file system: give the cache a directory of its own",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The suffix ends a file name: it must not lead anywhere else.
fn check_suffix(config: &ProviderConfig, suffix: &str) -> Result<()> {
    if suffix.len() > 64 {
        return Err(config.error("FileSuffix", "longer than 64 bytes"));
    }
    if suffix.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(config.error(
            "FileSuffix",
            format!("{suffix:?} contains a path separator or a control character"),
        ));
    }
    Ok(())
}

/// `path` made absolute against the working directory, created if
/// missing, and proven writable. Blocking.
pub(super) fn prepare_root(provider: &str, path: &Path) -> Result<PathBuf> {
    let unusable = |reason: String| Error::config(provider, "CachePath", reason);
    let root = std::path::absolute(path).map_err(|e| unusable(format!("{}: {e}", path.display())))?;
    std::fs::create_dir_all(&root)
        .map_err(|e| unusable(format!("cannot create the directory {}: {e}", root.display())))?;
    let locks = root.join(super::store::LOCK_DIR);
    std::fs::create_dir_all(&locks)
        .map_err(|e| unusable(format!("cannot write in the directory {}: {e}", root.display())))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<Settings> {
        settings(&ProviderConfig::from_json("file", text).unwrap())
    }

    #[test]
    fn beego_defaults_and_string_numbers() {
        let s = json("").unwrap();
        assert_eq!(
            (s.path, s.suffix.as_str(), s.levels),
            (PathBuf::from("cache"), ".bin", 2)
        );
        assert_eq!(s.sweep, Some(Duration::from_secs(60)));
        let s =
            json(r#"{"CachePath":"./c","FileSuffix":".cache","DirectoryLevel":"1","EmbedExpiry":"0","interval":0}"#)
                .unwrap();
        assert_eq!((s.suffix.as_str(), s.levels, s.sweep), (".cache", 1, None));
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            json(r#"{"timeout":"750ms"}"#).unwrap().timeout,
            Duration::from_millis(750)
        );
        let config = ProviderConfig::from_url("file", crate::config::parse_url("file:///tmp/c?timeout=5s").unwrap());
        assert_eq!(settings(&config).unwrap().timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_root_is_refused_in_urls_too() {
        for text in [
            "file://",
            "file:///",
            "file:///tmp/..",
            "file:///.",
            "file://localhost/",
        ] {
            let config = ProviderConfig::from_url("file", crate::config::parse_url(text).unwrap());
            let err = settings(&config).unwrap_err().to_string();
            assert!(err.contains("(field \"url\")") && err.contains("root"), "{text}: {err}");
        }
        let config = ProviderConfig::from_url("file", crate::config::parse_url("file:///tmp/c").unwrap());
        assert_eq!(settings(&config).unwrap().path, PathBuf::from("/tmp/c"));
        let deep = "../".repeat(64);
        assert!(json(&format!(r#"{{"CachePath":"{deep}"}}"#)).is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, field) in [
            (r#"{"DirectoryLevel":5}"#, "DirectoryLevel"),
            (r#"{"DirectoryLevel":"two"}"#, "DirectoryLevel"),
            (r#"{"FileSuffix":"/../x"}"#, "FileSuffix"),
            (r#"{"FileSuffix":"a\u0000b"}"#, "FileSuffix"),
            (r#"{"CachePath":""}"#, "CachePath"),
            (r#"{"CachePath":"/"}"#, "CachePath"),
            (r#"{"CachePath":"/tmp/.."}"#, "CachePath"),
            (r#"{"CachePath":"//"}"#, "CachePath"),
            (r#"{"CachePath":7}"#, "CachePath"),
            (r#"{"EmbedExpiry":-1}"#, "EmbedExpiry"),
            (r#"{"cachepath":"x"}"#, "cachepath"),
            (r#"{"timeout":"0s"}"#, "timeout"),
            (r#"{"timeout":"later"}"#, "timeout"),
        ] {
            let err = json(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{field:?}")), "{text}: {err}");
        }
    }
}
