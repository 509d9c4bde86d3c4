//! The file backend: one file per key under a directory, shared safely by
//! every thread and process that opens the same directory, surviving
//! restarts.
//!
//! - **Names**: a key never becomes a path. A key's file is named by the
//!   SHA-256 of the key in hex plus `FileSuffix`, under `DirectoryLevel`
//!   directories named by the hash's leading hex pairs
//!   (`CachePath/ab/cd/abcd…<suffix>`), so `../../etc/passwd` or a key with
//!   NUL bytes stays inside `CachePath`.
//! - **Contents**: a header (format version, expiry in unix milliseconds or
//!   none, the key itself), then the value. The stored key turns a hash
//!   collision into a miss, never another key's value. TTLs keep their
//!   milliseconds; `get` and `exists` respect them.
//! - **Writes** go to a temp file in the same directory, are synced
//!   (`fsync`) and renamed over the old file: a reader in any thread or
//!   process sees the old value or the new one, never a torn one.
//! - **Atomic updates**: `incr_by`, `set_if_absent`, `delete_if_equals`
//!   and every other change take the key's lock stripe: an in-process mutex
//!   plus an exclusive `flock` on `CachePath/.cacheme-locks/XX.lock`, so
//!   they are atomic across processes.
//! - **Expiry**: an expired file is a miss at once, is removed by the read
//!   that finds it, and by a background sweep every `interval` seconds
//!   (default 60; 0 turns it off). The sweeper holds only a weak reference
//!   and ends when the backend is dropped.
//! - **Blocking I/O** runs on Tokio's blocking pool, never on a runtime
//!   worker. A call on one key (or one `get_many`) must finish within
//!   `timeout` (2 s by default, plus the time what it writes takes at 32
//!   MiB/s), waiting for a key's lock included: a lock held by a stopped
//!   process or a hung network file system fails the call with a "not
//!   done within" [`Error::Backend`] instead of blocking it. `clear`,
//!   `delete_matching` and the sweep walk the whole cache and are not
//!   bounded.

mod config;
mod format;
mod store;
mod walk;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::backend::{Backend, BoxFuture, KeyFilter, Ttl};
use crate::config::ProviderConfig;
use crate::counter;
use crate::error::{Error, Op, Result};

use config::{DEFAULT_LEVELS, DEFAULT_SUFFIX};
use store::{Found, Slot, Store, now_ms};
use walk::Kind;

const PROVIDER: &str = "file";

/// The file backend (provider name `file`, URL scheme `file://`).
///
/// Beego JSON: `{"CachePath":"./cache","FileSuffix":".cache","DirectoryLevel":2,"EmbedExpiry":120}`
/// plus an optional `interval` (seconds between sweeps of expired files;
/// default 60, 0 = no background sweep). Numbers may be written as strings,
/// as Beego does. Defaults are Beego's: `CachePath` `"cache"`, `FileSuffix`
/// `".bin"`, `DirectoryLevel` 2 (0 to 4 accepted).
///
/// URL: `file:///absolute/path?FileSuffix=.cache&DirectoryLevel=2&interval=60`.
///
/// `timeout` (JSON or URL; milliseconds, or with a unit: `"500ms"`, `"2s"`;
/// default 2 s) bounds a call on one key, waiting for its lock included
/// (see the module docs).
///
/// - A relative `CachePath` is relative to the working directory when the
///   backend is built (later `chdir`s do not move it). The directory is
///   created if missing; one that cannot be created or written is an
///   [`Error::Config`] naming `CachePath`. An empty path and the root of
///   the file system (`file://`, `file:///`, `"CachePath":"/"`) are
///   refused, naming `url` or `CachePath`.
/// - `EmbedExpiry`: in Beego, a `Put` whose timeout equals `EmbedExpiry`
///   (default 0) is kept "forever". Here a value that never expires is
///   written with `put_forever` and a zero TTL is refused, so the setting
///   is accepted (it must be a non-negative integer) and ignored, with a
///   warning when it is not 0.
/// - `clear` removes this cache's entries only: files whose names are a
///   hash plus this cache's `FileSuffix`, in hash directories. Other files
///   in `CachePath` survive, so two caches may share a directory with
///   different suffixes. The lock files in `.cacheme-locks` stay.
/// - A file at a key's path that is not a readable cacheme entry (another
///   program's, or a future format) is a miss, logged as a warning, and is
///   replaced by the next write of that key.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use cacheme::Cache;
///
/// let dir = std::env::temp_dir().join(format!("cacheme-doc-{}", std::process::id()));
/// let cache = Cache::open(&format!("file://{}?DirectoryLevel=1", dir.display())).await?;
/// cache.put("greeting", "hello", Duration::from_millis(1500)).await?;
/// assert_eq!(cache.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// assert_eq!(cache.incr("visits").await?, 1);
///
/// // Beego's form of the same cache (the suffix defaults to ".bin"); a
/// // relative CachePath would be relative to the working directory.
/// let config = format!(r#"{{"CachePath":"{}","FileSuffix":".bin","DirectoryLevel":1}}"#, dir.display());
/// let same_dir = Cache::new("file", &config).await?;
/// assert_eq!(same_dir.get_counter("visits").await?, Some(1));
/// cache.clear().await?;
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cacheme::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct FileBackend {
    store: Arc<Store>,
    /// `timeout`: the time a call on one key may take (see [`Limit`]).
    timeout: Duration,
}

/// How long a blocking step may take.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// A call on one key (or the keys of one `get_many`): `timeout`, plus
    /// the time the `sends` bytes it writes take (see
    /// [`scaled_timeout`](crate::config::scaled_timeout)).
    Call { sends: usize },
    /// A walk over the whole cache (`clear`, `delete_matching`, the
    /// sweep): not bounded, its length grows with the cache.
    Walk,
}

impl FileBackend {
    /// Builds the backend from its configuration (see the type docs) and
    /// starts the background sweep, if any.
    pub async fn from_config(config: ProviderConfig) -> Result<Self> {
        let settings = config::settings(&config)?;
        let mut backend = Self::build(settings.path, settings.suffix, settings.levels).await?;
        backend.timeout = settings.timeout;
        if let Some(interval) = settings.sweep {
            backend.sweep_every(interval);
        }
        Ok(backend)
    }

    /// A backend on `path` with Beego's defaults (`FileSuffix` `".bin"`,
    /// `DirectoryLevel` 2) and no background sweep.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::build(path.as_ref().to_owned(), DEFAULT_SUFFIX.to_owned(), DEFAULT_LEVELS).await
    }

    async fn build(path: PathBuf, suffix: String, levels: usize) -> Result<Self> {
        let root = tokio::task::spawn_blocking(move || config::prepare_root(PROVIDER, &path))
            .await
            .map_err(|e| Error::backend(PROVIDER, Op::Connect, None, e))??;
        tracing::debug!(provider = PROVIDER, root = %root.display(), suffix, levels, "opened");
        Ok(FileBackend {
            store: Arc::new(Store::new(root, suffix, levels)),
            timeout: config::DEFAULT_TIMEOUT,
        })
    }

    /// The cache directory (absolute).
    pub fn path(&self) -> &Path {
        &self.store.root
    }

    /// The file that holds `key` (whether or not it exists). Always inside
    /// [`path`](FileBackend::path), whatever the key.
    pub fn file_path(&self, key: &str) -> PathBuf {
        self.store.slot(key).path
    }

    /// Removes expired entries every `interval`, in a background task that
    /// ends when the last clone of this backend is dropped. Needs a Tokio
    /// runtime; without one nothing is spawned (expired entries are still
    /// misses and are removed when read).
    pub fn sweep_every(&self, interval: Duration) {
        let timeout = self.timeout;
        crate::sweeper::every(
            PROVIDER,
            interval,
            Arc::downgrade(&self.store),
            move |store| async move {
                if let Err(e) = (FileBackend { store, timeout }).sweep().await {
                    tracing::warn!(provider = PROVIDER, error = %e, "sweep of expired files failed");
                }
            },
        );
    }

    /// Removes every expired entry (and temp files left by crashed
    /// writers) now; returns how many files were removed.
    pub async fn sweep(&self) -> Result<usize> {
        self.remove_files(false).await
    }

    /// Removes our files: all of them (`clear`) or the expired ones. Each
    /// stripe's files are removed under its lock, so a value written
    /// meanwhile is never lost to a stale decision.
    async fn remove_files(&self, all: bool) -> Result<usize> {
        let op = if all { Op::Clear } else { Op::Delete };
        let found = self.blocking(op, None, Limit::Walk, walk::our_files).await?;
        let mut removed = 0;
        for (stripe, files) in found {
            removed += self
                .locked(op, None, stripe, Limit::Walk, move |store| {
                    let mut removed = 0;
                    for file in &files {
                        let remove = all || file.kind == Kind::Temp || store.expired_at(&file.path)?;
                        if remove && store.remove(&file.path)? {
                            removed += 1;
                        }
                    }
                    Ok(removed)
                })
                .await?;
        }
        Ok(removed)
    }

    /// Removes every entry whose stored key passes `filter`.
    async fn delete_where(&self, filter: &KeyFilter<'_>) -> Result<u64> {
        const BATCH: usize = 512;
        let (found, mut keys) = tokio::sync::mpsc::channel::<(String, PathBuf)>(BATCH);
        let walker = self.blocking(Op::DeleteMatching, None, Limit::Walk, move |store| {
            walk::for_each_file(store, |_, file| {
                if file.kind == Kind::Temp {
                    return Ok(true);
                }
                match store.key_at(&file.path)? {
                    // A closed channel means the deleting side failed: stop.
                    Some(key) => Ok(found.blocking_send((key, file.path)).is_ok()),
                    None => Ok(true),
                }
            })
        });
        let deleter = async {
            let mut removed = 0;
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let next = keys.recv().await;
                let done = next.is_none();
                if let Some((key, path)) = next
                    && filter(&key)
                {
                    batch.push(path);
                }
                if batch.len() == BATCH || (done && !batch.is_empty()) {
                    let paths = std::mem::take(&mut batch);
                    removed += self
                        .blocking(Op::DeleteMatching, None, Limit::Walk, move |store| {
                            let mut removed = 0;
                            for path in &paths {
                                if store.remove(path)? {
                                    removed += 1;
                                }
                            }
                            Ok(removed)
                        })
                        .await?;
                }
                if done {
                    return Ok::<u64, Error>(removed);
                }
            }
        };
        let (walked, removed) = tokio::join!(walker, deleter);
        let removed = removed?;
        walked?;
        Ok(removed)
    }

    /// Runs blocking `f` on the blocking pool, within `limit`.
    async fn blocking<T: Send + 'static>(
        &self,
        op: Op,
        key: Option<&str>,
        limit: Limit,
        f: impl FnOnce(&Store) -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        self.within(op, key, limit, async move {
            tokio::task::spawn_blocking(move || f(&store)).await
        })
        .await
    }

    /// Runs blocking `f` holding `stripe`'s lock, in this process and
    /// across processes, within `limit`. A call that runs out of time while
    /// waiting for the lock (another process holds it: stopped, or on a
    /// hung network file system) fails, and `f` is then not run when the
    /// lock comes; once `f` has started it completes in the background.
    async fn locked<T: Send + 'static>(
        &self,
        op: Op,
        key: Option<&str>,
        stripe: u8,
        limit: Limit,
        f: impl FnOnce(&Store) -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let work = {
            let abandoned = Arc::clone(&abandoned);
            async move {
                // Waiting here is async; only the holder parks a blocking
                // thread on the file lock (waiting for other processes).
                let guard = Arc::clone(&self.store.stripes[usize::from(stripe)]).lock_owned().await;
                let store = Arc::clone(&self.store);
                tokio::task::spawn_blocking(move || {
                    let _guard = guard;
                    let _flock = store.flock(stripe)?;
                    if abandoned.load(Ordering::Acquire) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the caller gave up waiting"));
                    }
                    f(&store)
                })
                .await
            }
        };
        let outcome = self.within(op, key, limit, work).await;
        if outcome.is_err() {
            abandoned.store(true, Ordering::Release);
        }
        outcome
    }

    /// `work` (a blocking task's outcome), failed with a "timed out"
    /// [`Error::Backend`] when it takes longer than `limit` allows.
    async fn within<T>(
        &self,
        op: Op,
        key: Option<&str>,
        limit: Limit,
        work: impl std::future::Future<Output = Result<io::Result<T>, tokio::task::JoinError>>,
    ) -> Result<T> {
        let limit = match limit {
            Limit::Walk => return flatten(op, key, work.await),
            Limit::Call { sends } => crate::config::scaled_timeout(self.timeout, sends),
        };
        match tokio::time::timeout(limit, work).await {
            Ok(outcome) => flatten(op, key, outcome),
            Err(_) => Err(Error::backend(
                PROVIDER,
                op,
                key,
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("not done within {limit:?} (the file provider's `timeout`)"),
                ),
            )),
        }
    }

    /// Removes `slot`'s file if it is still expired (a read found it so).
    async fn remove_expired(&self, op: Op, slot: Slot) -> Result<()> {
        let key = slot.key.clone();
        self.locked(op, Some(&key), slot.stripe, Limit::Call { sends: 0 }, move |store| {
            store.remove_if_expired(&slot)
        })
        .await
        .map(drop)
    }
}

fn flatten<T>(op: Op, key: Option<&str>, outcome: Result<io::Result<T>, tokio::task::JoinError>) -> Result<T> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::backend(PROVIDER, op, key, e)),
        Err(e) => Err(Error::backend(PROVIDER, op, key, e)),
    }
}

/// A TTL as an absolute deadline in unix ms: rounded up to whole
/// milliseconds, never zero, clamped to [`MAX_TTL`](crate::MAX_TTL).
fn deadline(ttl: Ttl) -> Option<u64> {
    ttl.map(|ttl| {
        let millis = crate::backend::clamp_ttl(ttl).as_nanos().div_ceil(1_000_000);
        let millis = u64::try_from(millis).unwrap_or(u64::MAX);
        now_ms().saturating_add(millis.max(1))
    })
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.store.root)
            .field("suffix", &self.store.suffix)
            .field("levels", &self.store.levels)
            .finish()
    }
}

impl Backend for FileBackend {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            let read = slot.clone();
            match self
                .blocking(Op::Get, Some(key), Limit::Call { sends: 0 }, move |s| s.read(&read))
                .await?
            {
                Found::Live(entry) => Ok(Some(entry.value)),
                Found::Expired => self.remove_expired(Op::Get, slot).await.map(|()| None),
                Found::Missing | Found::Unreadable => Ok(None),
            }
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move {
            let slots: Vec<Slot> = keys.iter().map(|key| self.store.slot(key)).collect();
            let read = slots.clone();
            let found = self
                .blocking(Op::GetMany, None, Limit::Call { sends: 0 }, move |s| {
                    read.iter().map(|slot| s.read(slot)).collect::<io::Result<Vec<_>>>()
                })
                .await?;
            let mut out = Vec::with_capacity(found.len());
            for (slot, found) in slots.into_iter().zip(found) {
                out.push(match found {
                    Found::Live(entry) => Some(entry.value),
                    Found::Expired => {
                        self.remove_expired(Op::GetMany, slot).await?;
                        None
                    }
                    Found::Missing | Found::Unreadable => None,
                });
            }
            Ok(out)
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            let sends = Limit::Call { sends: value.len() };
            let value = value.to_vec();
            let expires_at = deadline(ttl);
            self.locked(Op::Set, Some(key), slot.stripe, sends, move |s| {
                s.write(&slot, &value, expires_at)
            })
            .await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            self.locked(Op::Delete, Some(key), slot.stripe, Limit::Call { sends: 0 }, move |s| {
                match s.read_header(&slot)? {
                    // Missing also covers a file holding another key: not ours to remove.
                    Found::Missing => Ok(false),
                    Found::Live(_) => s.remove(&slot.path),
                    Found::Expired | Found::Unreadable => s.remove(&slot.path).map(|_| false),
                }
            })
            .await
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            let read = slot.clone();
            match self
                .blocking(Op::Exists, Some(key), Limit::Call { sends: 0 }, move |s| {
                    s.read_header(&read)
                })
                .await?
            {
                Found::Live(_) => Ok(true),
                Found::Expired => self.remove_expired(Op::Exists, slot).await.map(|()| false),
                Found::Missing | Found::Unreadable => Ok(false),
            }
        })
    }

    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            self.locked(Op::Incr, Some(key), slot.stripe, Limit::Call { sends: 0 }, move |s| {
                let current = match s.read(&slot)? {
                    Found::Live(entry) => Some(entry),
                    Found::Missing | Found::Expired | Found::Unreadable => None,
                };
                let value = current.as_ref().map(|e| &e.value[..]);
                match counter::apply(PROVIDER, &slot.key, value, delta) {
                    Ok(n) => {
                        // The counter keeps its deadline, as Redis's INCRBY keeps the TTL.
                        let expires_at = current.and_then(|e| e.expires_at);
                        s.write(&slot, n.to_string().as_bytes(), expires_at)?;
                        Ok(Ok(n))
                    }
                    Err(refused) => Ok(Err(refused)),
                }
            })
            .await?
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.remove_files(true).await.map(drop) })
    }

    fn supports_delete_matching(&self) -> bool {
        true
    }

    /// Walks the cache's files one directory at a time on the blocking
    /// pool, reading each entry's stored key (the file name is a hash);
    /// matching entries are removed in batches. The walk and the filter run
    /// concurrently through a bounded channel, so memory stays bounded.
    fn delete_matching<'a>(&'a self, _glob: &'a str, filter: &'a KeyFilter<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.delete_where(filter).await })
    }

    fn coordination(&self) -> crate::stampede::Coordination {
        crate::stampede::Coordination::Polling
    }

    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            let sends = Limit::Call { sends: value.len() };
            let value = value.to_vec();
            let expires_at = deadline(ttl);
            self.locked(Op::SetIfAbsent, Some(key), slot.stripe, sends, move |s| {
                if let Found::Live(_) = s.read_header(&slot)? {
                    return Ok(false);
                }
                s.write(&slot, &value, expires_at).map(|()| true)
            })
            .await
        })
    }

    fn delete_if_equals<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let slot = self.store.slot(key);
            let expected = expected.to_vec();
            self.locked(
                Op::DeleteIfEquals,
                Some(key),
                slot.stripe,
                Limit::Call { sends: 0 },
                move |s| match s.read(&slot)? {
                    Found::Live(entry) if entry.value == expected => s.remove(&slot.path),
                    _ => Ok(false),
                },
            )
            .await
        })
    }
}
