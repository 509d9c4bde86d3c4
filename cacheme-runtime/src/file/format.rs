//! The bytes of one cache file: a fixed header, the key, then the value.
//!
//! | bytes    | what                                                   |
//! |----------|--------------------------------------------------------|
//! | `0..4`   | magic `CMEF`                                           |
//! | `4`      | format version, [`VERSION`]                            |
//! | `5..8`   | reserved, zero                                         |
//! | `8..16`  | expiry in unix milliseconds, little endian; 0 = never  |
//! | `16..20` | key length in bytes, little endian                     |
//! | `20..`   | the key (UTF-8), then the value                        |
//!
//! The key is stored so that two keys sharing a file name (a hash
//! collision) are told apart: a read of one never returns the other's value.

/// The first bytes of every cache file.
const MAGIC: [u8; 4] = *b"CMEF";

/// The version of this layout. A file of another version is not read.
const VERSION: u8 = 1;

/// Bytes before the key.
pub(super) const HEADER_LEN: usize = 20;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// Unix milliseconds after which the entry is gone; `None` = never.
    pub(super) expires_at: Option<u64>,
    /// Length of the key that follows the header.
    pub(super) key_len: usize,
}

impl Header {
    /// Whether the entry is still live at `now_ms`.
    pub(super) fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|deadline| now_ms < deadline)
    }
}

/// Why a file could not be read as a cache entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Invalid {
    /// It does not start with our magic: not written by cacheme.
    NotOurs,
    /// Written by another version of the layout.
    Version(u8),
    /// Shorter than its header says.
    Truncated,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::NotOurs => f.write_str("not a cacheme cache file"),
            Invalid::Version(v) => write!(f, "cache file format version {v} is not supported"),
            Invalid::Truncated => f.write_str("truncated cache file"),
        }
    }
}

/// The bytes of a file holding `value` under `key`, expiring at
/// `expires_at` (unix ms). `None` if the key is longer than 4 GiB.
pub(super) fn encode(key: &str, value: &[u8], expires_at: Option<u64>) -> Option<Vec<u8>> {
    let key_len = u32::try_from(key.len()).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN + key.len() + value.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    // 0 stands for "never"; a real deadline is never 0 (it is after now).
    out.extend_from_slice(&expires_at.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    Some(out)
}

/// Reads the header from the first [`HEADER_LEN`] bytes of a file.
pub(super) fn header(bytes: &[u8]) -> Result<Header, Invalid> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(Invalid::NotOurs);
    }
    if bytes.len() < HEADER_LEN {
        return Err(Invalid::Truncated);
    }
    if bytes[4] != VERSION {
        return Err(Invalid::Version(bytes[4]));
    }
    let expires_at = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let key_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default());
    Ok(Header {
        expires_at: (expires_at != 0).then_some(expires_at),
        key_len: key_len as usize,
    })
}

/// Splits a whole file into its header, key and value.
pub(super) fn split(bytes: &[u8]) -> Result<(Header, &[u8], &[u8]), Invalid> {
    let header = header(bytes)?;
    let rest = &bytes[HEADER_LEN..];
    if rest.len() < header.key_len {
        return Err(Invalid::Truncated);
    }
    let (key, value) = rest.split_at(header.key_len);
    Ok((header, key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_key_value_and_expiry() {
        let bytes = encode("k:1", b"v\0alue", Some(1_700_000_000_123)).unwrap();
        let (header, key, value) = split(&bytes).unwrap();
        assert_eq!(header.expires_at, Some(1_700_000_000_123));
        assert_eq!((key, value), (&b"k:1"[..], &b"v\0alue"[..]));
        assert!(header.is_live(1_700_000_000_122));
        assert!(!header.is_live(1_700_000_000_123));

        let bytes = encode("", b"", None).unwrap();
        let (header, key, value) = split(&bytes).unwrap();
        assert_eq!(header.expires_at, None);
        assert!(key.is_empty() && value.is_empty());
        assert!(header.is_live(u64::MAX));
    }

    #[test]
    fn refuses_foreign_truncated_and_future_files() {
        assert_eq!(split(b"").unwrap_err(), Invalid::NotOurs);
        assert_eq!(split(b"\x0e\xff\x81gob data").unwrap_err(), Invalid::NotOurs);
        let good = encode("key", b"value", None).unwrap();
        assert_eq!(split(&good[..10]).unwrap_err(), Invalid::Truncated);
        assert_eq!(split(&good[..HEADER_LEN + 2]).unwrap_err(), Invalid::Truncated);
        let mut future = good.clone();
        future[4] = 9;
        assert_eq!(split(&future).unwrap_err(), Invalid::Version(9));
    }
}
