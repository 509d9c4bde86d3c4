//! Connecting to a backend's server at start: at once or in the background
//! ([`ConnectMode`]), shared by the redis, redis-cluster and memcache
//! providers.
//!
//! A provider keeps what connecting made (a connection, or just the fact
//! that its servers answered) in a `Lazy` cell. In [`ConnectMode::Eager`] the
//! provider's factory fails when the first attempt fails, as it always
//! has. In [`ConnectMode::Lazy`] the factory returns at once even when the
//! server cannot be reached: every call fails fast with the reason (an
//! [`Error::Backend`], which typed stores answer
//! from the source) while a task connects in the background with
//! exponential backoff; once it succeeds the same backend serves, without
//! being rebuilt.
//!
//! What is checked before returning, in both modes:
//! - the configuration (URL, JSON fields, prefix): before any connection;
//! - anything the server says when it answers within [`FIRST_ATTEMPT`]: a
//!   wrong password or user, a database the server does not have. A
//!   server that cannot be reached (refused, no route, silent) cannot say
//!   it, so in lazy mode such a mistake surfaces later: the background task
//!   logs it at `ERROR` and keeps retrying, and calls keep failing fast.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::backend::BoxFuture;
use crate::config::ProviderConfig;
use crate::error::{BoxError, Error, Result};

/// The configuration field (JSON key or URL query parameter) that chooses
/// the [`ConnectMode`]: `"connect": "lazy"`, `?connect=lazy`.
pub const CONNECT_FIELD: &str = "connect";

/// How long a lazy open waits for its first attempt before returning: long
/// enough for a server on the network to answer (and refuse a wrong
/// password), short enough not to hold up a service's start.
pub const FIRST_ATTEMPT: Duration = Duration::from_millis(500);

/// The first wait between background attempts; it doubles after each
/// failure up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The longest wait between background attempts, so a server that comes
/// back is used within about this long.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Whether opening a cache waits for its server.
///
/// Chosen by the `connect` field of the configuration: `?connect=lazy` in
/// a URL, `"connect":"lazy"` in Beego JSON (redis, redis-cluster, memcache).
///
/// ```no_run
/// # async fn demo() -> cacheme::Result<()> {
/// use cacheme::Cache;
///
/// // Starts even if Redis is down; serves from the cache once it is up.
/// let cache = Cache::open("redis://127.0.0.1:6379/0?connect=lazy").await?;
/// let same = Cache::new("redis", r#"{"conn":"127.0.0.1:6379","connect":"lazy"}"#).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectMode {
    /// The default: opening fails with [`Error::Connect`] when the server
    /// cannot be reached, so a misconfigured service stops at start.
    #[default]
    Eager,
    /// Opening returns at once (after at most [`FIRST_ATTEMPT`]) even when
    /// the server cannot be reached: the failure is logged (`WARN`), calls
    /// fail fast with [`Error::Backend`] until a background task has
    /// connected (retrying with exponential backoff, at most
    /// [`MAX_RETRY_DELAY`] apart), then the same cache serves. A wrong
    /// password, a bad URL or bad config still fail at once when the
    /// server answers (see the module docs of what can be checked).
    Lazy,
}

impl ConnectMode {
    /// The mode named by the configuration's [`CONNECT_FIELD`]
    /// (`"eager"` or `"lazy"`; absent means [`ConnectMode::Eager`]).
    pub fn from_config(config: &ProviderConfig) -> Result<Self> {
        match config.string(CONNECT_FIELD)?.as_deref() {
            None | Some("eager") => Ok(ConnectMode::Eager),
            Some("lazy") => Ok(ConnectMode::Lazy),
            Some(other) => Err(config.error(
                CONNECT_FIELD,
                format!("expected \"eager\" (the default) or \"lazy\", got {other:?}"),
            )),
        }
    }
}

/// Why one connection attempt failed, and whether trying again may help.
pub(crate) struct Failure {
    /// `true` when the server could not be reached (it may come up);
    /// `false` when it answered and refused (a wrong password).
    pub(crate) retry: bool,
    pub(crate) error: BoxError,
}

/// One connection attempt, repeated by the background task.
pub(crate) type Attempt<T> = Arc<dyn Fn() -> BoxFuture<'static, Result<T, Failure>> + Send + Sync>;

/// What connecting made, once it is made. Cheap to clone; clones share it.
pub(crate) struct Lazy<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    value: OnceLock<T>,
    provider: &'static str,
    /// Where, without credentials.
    address: String,
    /// Why the last attempt failed, for the errors of calls meanwhile.
    last_error: Mutex<String>,
}

impl<T> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        Lazy {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Send + Sync + 'static> Lazy<T> {
    /// Nothing connected yet.
    pub(crate) fn new(provider: &'static str, address: String) -> Self {
        Lazy {
            shared: Arc::new(Shared {
                value: OnceLock::new(),
                provider,
                address,
                last_error: Mutex::new("not connected yet".to_owned()),
            }),
        }
    }

    /// What connecting made, `None` until it succeeded.
    pub(crate) fn get(&self) -> Option<&T> {
        self.shared.value.get()
    }

    /// The error of a call made before the connection: it says where and
    /// why, and that the connection is being retried.
    pub(crate) fn not_connected(&self) -> NotConnected {
        NotConnected {
            address: self.shared.address.clone(),
            reason: lock(&self.shared.last_error).clone(),
        }
    }

    /// Makes the first attempt. [`ConnectMode::Eager`]: its failure is an
    /// [`Error::Connect`]. [`ConnectMode::Lazy`]: only a refusal by the
    /// server within [`FIRST_ATTEMPT`] is; otherwise this returns with
    /// nothing connected and a task keeps trying.
    pub(crate) async fn connect(&self, mode: ConnectMode, attempt: Attempt<T>) -> Result<()> {
        let shared = &self.shared;
        let first = match mode {
            ConnectMode::Eager => Some(attempt().await),
            ConnectMode::Lazy => tokio::time::timeout(FIRST_ATTEMPT, attempt()).await.ok(),
        };
        let delay = match first {
            Some(Ok(value)) => {
                let _ = shared.value.set(value);
                return Ok(());
            }
            Some(Err(failure)) if mode == ConnectMode::Eager || !failure.retry => {
                return Err(Error::Connect {
                    provider: shared.provider,
                    address: shared.address.clone(),
                    source: failure.error,
                });
            }
            Some(Err(failure)) => {
                *lock(&shared.last_error) = failure.error.to_string();
                FIRST_RETRY_DELAY
            }
            None => {
                *lock(&shared.last_error) = format!("no answer within {FIRST_ATTEMPT:?}");
                Duration::ZERO
            }
        };
        tracing::warn!(
            provider = shared.provider,
            address = %shared.address,
            error = %lock(&shared.last_error),
            "cache server unreachable at start; calls fail fast until a background connection succeeds"
        );
        tokio::spawn(retry(Arc::downgrade(shared), attempt, delay));
        Ok(())
    }
}

/// Attempts again after `delay`, doubling it after each failure, until one
/// succeeds or the backend is dropped. Logs the first refusal by the server
/// (a wrong password) at `ERROR`, other failures at `DEBUG`.
async fn retry<T: Send + Sync + 'static>(shared: Weak<Shared<T>>, attempt: Attempt<T>, mut delay: Duration) {
    let mut reported = String::new();
    loop {
        tokio::time::sleep(spread(delay)).await;
        delay = (delay * 2).clamp(FIRST_RETRY_DELAY, MAX_RETRY_DELAY);
        if shared.strong_count() == 0 {
            return;
        }
        let outcome = attempt().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match outcome {
            Ok(value) => {
                let _ = shared.value.set(value);
                tracing::info!(provider = shared.provider, address = %shared.address, "connected in the background");
                return;
            }
            Err(failure) => {
                let message = failure.error.to_string();
                if !failure.retry && message != reported {
                    tracing::error!(
                        provider = shared.provider,
                        address = %shared.address,
                        error = %message,
                        "the cache server refused the connection; retrying"
                    );
                    reported.clone_from(&message);
                } else {
                    tracing::debug!(provider = shared.provider, address = %shared.address, error = %message, "connect failed");
                }
                *lock(&shared.last_error) = message;
            }
        }
    }
}

/// `delay` with up to a quarter taken off at random, so a fleet started
/// together does not retry in step.
fn spread(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let quarter = delay.as_nanos() / 4;
    let off = u128::from(hasher.finish()) % quarter.max(1);
    delay.saturating_sub(Duration::from_nanos(u64::try_from(off).unwrap_or(0)))
}

/// Runs `attempt` once per call of the returned [`Attempt`].
pub(crate) fn attempt<T, F, Fut>(attempt: F) -> Attempt<T>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
{
    Arc::new(move || Box::pin(attempt()))
}

/// The error of a call made while a lazily opened backend is not connected.
#[derive(Debug)]
pub(crate) struct NotConnected {
    address: String,
    reason: String,
}

impl fmt::Display for NotConnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not connected to {} yet (connecting in the background; last attempt: {})",
            self.address, self.reason
        )
    }
}

impl std::error::Error for NotConnected {}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_read_from_json_and_urls() {
        let json = |text: &str| ConnectMode::from_config(&ProviderConfig::from_json("redis", text).unwrap());
        assert_eq!(json("{}").unwrap(), ConnectMode::Eager);
        assert_eq!(json(r#"{"connect":"eager"}"#).unwrap(), ConnectMode::Eager);
        assert_eq!(json(r#"{"connect":"lazy"}"#).unwrap(), ConnectMode::Lazy);
        let err = json(r#"{"connect":"later"}"#).unwrap_err().to_string();
        assert!(err.contains("\"connect\"") && err.contains("later"), "{err}");
        assert!(json(r#"{"connect":true}"#).is_err());
        let url = crate::config::parse_url("redis://h:1/0?connect=lazy").unwrap();
        let config = ProviderConfig::from_url("redis", url);
        assert_eq!(ConnectMode::from_config(&config).unwrap(), ConnectMode::Lazy);
    }

    #[test]
    fn retry_delays_are_spread_below_the_delay() {
        for _ in 0..100 {
            let spread = spread(Duration::from_secs(2));
            assert!(
                spread <= Duration::from_secs(2) && spread >= Duration::from_millis(1500),
                "{spread:?}"
            );
        }
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_lazy_open_returns_and_connects_in_the_background() {
        let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&tries);
        let lazy: Lazy<u32> = Lazy::new("test", "nowhere:1".to_owned());
        let attempt = attempt(move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(Failure {
                        retry: true,
                        error: "refused".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        });
        lazy.connect(ConnectMode::Lazy, attempt).await.unwrap();
        assert!(lazy.get().is_none());
        assert!(lazy.not_connected().to_string().contains("refused"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lazy.get().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lazy.get(), Some(&2));
    }

    #[tokio::test]
    async fn a_refusal_fails_at_once_in_both_modes() {
        for mode in [ConnectMode::Eager, ConnectMode::Lazy] {
            let lazy: Lazy<()> = Lazy::new("test", "h:1".to_owned());
            let refused = attempt(|| async {
                Err(Failure {
                    retry: false,
                    error: "WRONGPASS".into(),
                })
            });
            let err = lazy.connect(mode, refused).await.unwrap_err();
            assert!(
                matches!(err, Error::Connect { .. }) && err.to_string().contains("WRONGPASS"),
                "{err}"
            );
        }
        let lazy: Lazy<()> = Lazy::new("test", "h:1".to_owned());
        let unreachable = attempt(|| async {
            Err(Failure {
                retry: true,
                error: "refused".into(),
            })
        });
        assert!(lazy.connect(ConnectMode::Eager, unreachable).await.is_err());
    }
}
