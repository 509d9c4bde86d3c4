//! The directory: where a key's file lives, and the blocking reads, atomic
//! writes and cross-process locks on it. Everything here blocks; the async
//! backend calls it on Tokio's blocking pool.
//!
//! Locking: keys are spread over [`STRIPES`] lock stripes by the first byte
//! of their hash. A stripe is an in-process async mutex (so waiting tasks do
//! not park blocking threads) plus an exclusive `flock` on
//! `CachePath/.cacheme-locks/XX.lock` (so other processes wait too). Every
//! change of a file (write, delete, counter update, removal of an expired
//! file) happens under its stripe; reads take no lock, because a file is
//! only ever replaced whole by `rename`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::format::{self, HEADER_LEN, Header};

/// Number of lock stripes: one per value of the hash's first byte.
pub(super) const STRIPES: usize = 256;

/// The directory under `CachePath` holding the stripes' lock files. Not a
/// two-hex-digit name, so it is never taken for a hash directory.
pub(super) const LOCK_DIR: &str = ".cacheme-locks";

/// A key, its hash and the file it lives in.
#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub(super) key: String,
    pub(super) stripe: u8,
    pub(super) path: PathBuf,
}

/// What a read found in a key's file.
#[derive(Debug)]
pub(super) enum Found<T> {
    /// No file, or a file holding another key (a hash collision).
    Missing,
    /// A file that is not a readable cache entry (logged, never returned).
    Unreadable,
    /// An entry whose TTL has passed: a miss, to be removed.
    Expired,
    /// A live entry.
    Live(T),
}

/// A live entry read in full.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) expires_at: Option<u64>,
    pub(super) value: Vec<u8>,
}

/// The cache directory and its layout.
pub(super) struct Store {
    pub(super) root: PathBuf,
    pub(super) suffix: String,
    pub(super) levels: usize,
    pub(super) stripes: Box<[Arc<tokio::sync::Mutex<()>>]>,
}

/// Makes temp file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// A store on `root` (already absolute and created).
    pub(super) fn new(root: PathBuf, suffix: String, levels: usize) -> Self {
        Store {
            root,
            suffix,
            levels,
            stripes: (0..STRIPES).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect(),
        }
    }

    /// Where `key` lives: `root/ab/cd/<sha-256 of the key in hex><suffix>`
    /// for two levels. The key itself never becomes part of the path.
    pub(super) fn slot(&self, key: &str) -> Slot {
        let digest = Sha256::digest(key.as_bytes());
        let hex = to_hex(&digest);
        let mut path = self.root.clone();
        for level in 0..self.levels {
            path.push(&hex[2 * level..2 * level + 2]);
        }
        path.push(format!("{hex}{}", self.suffix));
        Slot {
            key: key.to_owned(),
            stripe: digest[0],
            path,
        }
    }

    /// Takes the cross-process lock of `stripe`; released when the returned
    /// file is dropped. The caller holds the stripe's in-process mutex.
    pub(super) fn flock(&self, stripe: u8) -> io::Result<File> {
        let path = self.root.join(LOCK_DIR).join(format!("{stripe:02x}.lock"));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.root.join(LOCK_DIR)).map_err(|e| at(&path, e))?;
                open()
            }
            other => other,
        }
        .map_err(|e| at(&path, e))?;
        file.lock().map_err(|e| at(&path, e))?;
        Ok(file)
    }

    /// Reads the whole entry of `slot`.
    pub(super) fn read(&self, slot: &Slot) -> io::Result<Found<Entry>> {
        let mut bytes = match fs::read(&slot.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(at(&slot.path, e)),
        };
        let (header, value_at) = match format::split(&bytes) {
            Ok((_, key, _)) if key != slot.key.as_bytes() => return Ok(collision(slot)),
            Ok((header, key, _)) => (header, HEADER_LEN + key.len()),
            Err(invalid) => return Ok(unreadable(slot, invalid)),
        };
        if !header.is_live(now_ms()) {
            return Ok(Found::Expired);
        }
        bytes.drain(..value_at);
        Ok(Found::Live(Entry {
            expires_at: header.expires_at,
            value: bytes,
        }))
    }

    /// Reads only the header and key of `slot` (for `exists` and locks).
    pub(super) fn read_header(&self, slot: &Slot) -> io::Result<Found<Header>> {
        let mut file = match File::open(&slot.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(at(&slot.path, e)),
        };
        let mut head = vec![0; HEADER_LEN + slot.key.len()];
        let filled = read_up_to(&mut file, &mut head).map_err(|e| at(&slot.path, e))?;
        let header = match format::header(&head[..filled]) {
            Ok(header) => header,
            Err(invalid) => return Ok(unreadable(slot, invalid)),
        };
        if header.key_len != slot.key.len() {
            return Ok(collision(slot));
        }
        if filled < head.len() {
            return Ok(unreadable(slot, format::Invalid::Truncated));
        }
        if &head[HEADER_LEN..] != slot.key.as_bytes() {
            return Ok(collision(slot));
        }
        Ok(if header.is_live(now_ms()) {
            Found::Live(header)
        } else {
            Found::Expired
        })
    }

    /// Writes `value` for `slot` atomically: a temp file in the same
    /// directory is written, synced, then renamed over the old file, so a
    /// reader sees the old entry or the new one, never a mix. Call under
    /// the slot's stripe lock.
    pub(super) fn write(&self, slot: &Slot, value: &[u8], expires_at: Option<u64>) -> io::Result<()> {
        let bytes = format::encode(&slot.key, value, expires_at)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key longer than 4 GiB"))?;
        let dir = slot.path.parent().unwrap_or(&self.root);
        let name = slot.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let hash = &name[..name.len().min(64)];
        let temp = dir.join(format!(
            ".{hash}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let create = || OpenOptions::new().write(true).create_new(true).open(&temp);
        let mut file = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| at(&temp, e))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&temp, &slot.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(at(&slot.path, e));
        }
        Ok(())
    }

    /// Removes a file; `Ok(false)` if it was already gone.
    pub(super) fn remove(&self, path: &Path) -> io::Result<bool> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(at(path, e)),
        }
    }

    /// The key stored in the entry at `path`, if it is a readable entry.
    pub(super) fn key_at(&self, path: &Path) -> io::Result<Option<String>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(path, e)),
        };
        let mut head = [0; HEADER_LEN];
        let filled = read_up_to(&mut file, &mut head).map_err(|e| at(path, e))?;
        let Ok(header) = format::header(&head[..filled]) else {
            return Ok(None);
        };
        let mut key = vec![0; header.key_len];
        let filled = read_up_to(&mut file, &mut key).map_err(|e| at(path, e))?;
        if filled < key.len() {
            return Ok(None);
        }
        Ok(String::from_utf8(key).ok())
    }

    /// Whether the file at `path` is an entry whose TTL has passed (read
    /// from its header alone).
    pub(super) fn expired_at(&self, path: &Path) -> io::Result<bool> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(at(path, e)),
        };
        let mut head = [0; HEADER_LEN];
        let filled = read_up_to(&mut file, &mut head).map_err(|e| at(path, e))?;
        Ok(format::header(&head[..filled]).is_ok_and(|header| !header.is_live(now_ms())))
    }

    /// Removes `slot`'s file if it is (still) expired. Call under the
    /// slot's stripe lock, so a fresh value written meanwhile is kept.
    pub(super) fn remove_if_expired(&self, slot: &Slot) -> io::Result<bool> {
        match self.read_header(slot)? {
            Found::Expired => self.remove(&slot.path),
            _ => Ok(false),
        }
    }
}

/// Now, in unix milliseconds (the clock every process sharing the
/// directory agrees on).
pub(super) fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Lowercase hex of `bytes`.
pub(super) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Fills `buf` as far as the file goes; returns how many bytes were read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn collision<T>(slot: &Slot) -> Found<T> {
    tracing::debug!(provider = "file", key = %slot.key, path = %slot.path.display(), "file holds another key (hash collision): a miss");
    Found::Missing
}

fn unreadable<T>(slot: &Slot, invalid: format::Invalid) -> Found<T> {
    tracing::warn!(provider = "file", key = %slot.key, path = %slot.path.display(), "{invalid}: treated as a miss");
    Found::Unreadable
}

/// Adds the path to an I/O error, which does not carry it by itself.
pub(super) fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
