//! The Redis side of stampede protection: the lock, its renewal, the
//! atomic fill and the notifications, as Lua scripts on the key's node.
//!
//! For a value stored at `prefix:key`, the lock is `prefix:{prefix:key}:lock`
//! and the channel `prefix:{prefix:key}:done`: the hash tag is the whole
//! value key, so in a Redis Cluster the three share a slot and "store the
//! value, release the lock if the token is ours, notify" is one script on
//! one node, notified with sharded `SPUBLISH` (plain `PUBLISH` on one
//! server). A key that already carries a hash tag keeps it: the lock and
//! channel are the key plus `:lock` / `:done`. Store keys never collide
//! with these names: they end in `:v{version}`.
//!
//! Fencing: `invalidate` and `update` delete the lock along with writing
//! the value, and a fill lands only while its own token still holds the
//! lock, so a fetch that started before an invalidation never writes its
//! stale value after it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{ErrorKind, FromRedisValue, Script, ServerErrorKind, ToRedisArgs};

use super::batch::{LockBatch, RenewBatch, SettleBatch};
use super::{RedisBackend, ttl_millis};
use crate::backend::BoxFuture;
use crate::error::{Error, Op, Result};
use crate::stampede::{Coordinator, LockRequest, Settlement, Watch};

/// `KEYS[1]` lock; `ARGV` token. Gives the lock back, quietly, if ours.
static RELEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('DEL', KEYS[1]) \
         end \
         return 0",
    )
});

/// `KEYS[1]` lock; `ARGV` token, ttl ms. Extends the lock if still ours
/// (PEXPIRE: milliseconds).
static RENEW: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
         end \
         return 0",
    )
});

/// `KEYS` value, lock; `ARGV` token, value, ttl ms, channel, publish
/// command. Stores and releases only while the lock is ours; always
/// notifies.
static FILL: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "local stored = 0 \
         if redis.call('GET', KEYS[2]) == ARGV[1] then \
           redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
           redis.call('DEL', KEYS[2]) \
           stored = 1 \
         end \
         redis.call(ARGV[5], ARGV[4], 'filled') \
         return stored",
    )
});

/// `KEYS[1]` lock; `ARGV` token, channel, publish command. Releases the
/// lock if ours and says the fetch failed (or, if the lock had been broken
/// or taken over, only that something changed).
static ABANDON: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           redis.call('DEL', KEYS[1]) \
           redis.call(ARGV[3], ARGV[2], 'failed') \
           return 1 \
         end \
         redis.call(ARGV[3], ARGV[2], 'filled') \
         return 0",
    )
});

/// `KEYS` value, lock. Deletes both; returns whether the value existed.
static INVALIDATE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "local n = redis.call('DEL', KEYS[1]) \
         redis.call('DEL', KEYS[2]) \
         return n",
    )
});

/// `KEYS` value, lock; `ARGV` value, ttl ms. Writes and breaks the lock.
static REPLACE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
         redis.call('DEL', KEYS[2]) \
         return 1",
    )
});

/// The lock and channel names of the value key `full` (prefix included).
pub(super) fn companions(prefix: &str, full: &str) -> (String, String) {
    if has_hash_tag(full) {
        (format!("{full}:lock"), format!("{full}:done"))
    } else {
        (format!("{prefix}{{{full}}}:lock"), format!("{prefix}{{{full}}}:done"))
    }
}

/// Whether Redis Cluster would hash `key` by a `{tag}` inside it.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// The stampede coordinator of a [`RedisBackend`].
#[derive(Debug)]
pub(super) struct RedisCoordinator {
    pub(super) backend: RedisBackend,
}

impl RedisCoordinator {
    /// The value key, lock and channel of the cache key `key`.
    pub(super) fn names(&self, key: &str) -> (String, String, String) {
        let full = self.backend.full_key(key);
        let (lock, channel) = companions(&self.backend.key_prefix, &full);
        (full, lock, channel)
    }

    /// The command that notifies waiters: `SPUBLISH` (shard channels) in a
    /// cluster, `PUBLISH` on one server.
    pub(super) fn publish(&self) -> &'static str {
        if self.backend.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// `SET lock token NX PX ttl`: the lock alone, one command.
    pub(super) async fn set_lock(&self, key: &str, lock: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(lock).arg(token).arg("NX").arg("PX").arg(ttl_millis(ttl));
        let reply: Option<String> = self.backend.query(&cmd, Op::Lock, Some(key)).await?;
        Ok(reply.is_some())
    }

    /// Runs `call` on the node of its first key: `EVALSHA`, then `EVAL`
    /// with the body if the server does not know the script (first use,
    /// restart, a replica just promoted). Never `SCRIPT LOAD`, which a
    /// cluster connection sends to every node, dead ones included.
    async fn run<T: FromRedisValue>(&self, op: Op, key: &str, call: Call<'_>) -> Result<T> {
        self.eval(call)
            .await
            .map_err(|e| Error::backend(self.backend.provider, op, Some(key), e))
    }

    async fn eval<T: FromRedisValue>(&self, call: Call<'_>) -> redis::RedisResult<T> {
        let command = |with_body: bool| {
            let mut cmd = if with_body {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(call.lua.body);
                cmd
            } else {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(call.lua.script.get_hash());
                cmd
            };
            cmd.arg(call.keys.len()).arg(&call.keys).arg(&call.args);
            cmd
        };
        let mut connection = self.backend.connection.clone();
        match command(false).query_async(&mut connection).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                command(true).query_async(&mut connection).await
            }
            reply => reply,
        }
    }
}

/// A Lua script, sent by its hash, with its body for servers that lack it.
struct Lua {
    body: &'static str,
    script: Script,
}

impl Lua {
    fn new(body: &'static str) -> Self {
        Lua {
            body,
            script: Script::new(body),
        }
    }

    fn prepare_invoke(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script: its keys and arguments.
struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}

impl Coordinator for RedisCoordinator {
    fn try_lock<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (full, lock, _) = self.names(key);
            // Single-key commands, so this also works while the slot
            // migrates (a two-key script would get TRYAGAIN).
            if !self.set_lock(key, &lock, token, ttl).await? {
                return Ok(false);
            }
            // The value may have landed between the caller's miss and
            // this lock (its holder filled and released in between). With
            // the lock ours, no fill can land any more, so this check is
            // final: if the value is there, give the lock back.
            let mut exists = redis::cmd("EXISTS");
            exists.arg(&full);
            let found: i64 = self.backend.query(&exists, Op::Lock, Some(key)).await?;
            if found == 0 {
                return Ok(true);
            }
            let mut invocation = RELEASE.prepare_invoke();
            invocation.key(&lock).arg(token);
            let _: i64 = self.run(Op::Unlock, key, invocation).await?;
            Ok(false)
        })
    }

    fn renew<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (_, lock, _) = self.names(key);
            let mut invocation = RENEW.prepare_invoke();
            invocation.key(&lock).arg(token).arg(ttl_millis(ttl));
            let renewed: i64 = self.run(Op::Lock, key, invocation).await?;
            Ok(renewed == 1)
        })
    }

    fn fill<'a>(&'a self, key: &'a str, token: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (full, lock, channel) = self.names(key);
            let mut invocation = FILL.prepare_invoke();
            invocation
                .key(&full)
                .key(&lock)
                .arg(token)
                .arg(value)
                .arg(ttl_millis(ttl))
                .arg(&channel)
                .arg(self.publish());
            let stored: i64 = self.run(Op::Fill, key, invocation).await?;
            Ok(stored == 1)
        })
    }

    fn abandon<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (_, lock, channel) = self.names(key);
            let invoke = || {
                let mut invocation = ABANDON.prepare_invoke();
                invocation.key(&lock).arg(token).arg(&channel).arg(self.publish());
                invocation
            };
            let released: redis::RedisResult<i64> = match self.eval(invoke()).await {
                // The failure that made the holder give up may have closed
                // the connection (a value over `proto-max-bulk-len` does);
                // the next command reconnects. Releasing is idempotent.
                Err(e) if e.is_connection_dropped() || e.is_io_error() => self.eval(invoke()).await,
                released => released,
            };
            released.map_err(|e| Error::backend(self.backend.provider, Op::Unlock, Some(key), e))?;
            Ok(())
        })
    }

    fn watch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            let (_, _, channel) = self.names(key);
            self.backend
                .notifier
                .watch(&channel)
                .await
                .map_err(|e| Error::backend(self.backend.provider, Op::Watch, Some(key), e))
        })
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (full, lock, _) = self.names(key);
            let mut invocation = INVALIDATE.prepare_invoke();
            invocation.key(&full).key(&lock);
            let deleted: i64 = self.run(Op::Delete, key, invocation).await?;
            Ok(deleted == 1)
        })
    }

    fn replace<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (full, lock, _) = self.names(key);
            let mut invocation = REPLACE.prepare_invoke();
            invocation.key(&full).key(&lock).arg(value).arg(ttl_millis(ttl));
            let _: i64 = self.run(Op::Set, key, invocation).await?;
            Ok(())
        })
    }

    /// One script per [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND)
    /// keys, pipelined on one server; per slot in a cluster (see
    /// [`batch`](super::batch)).
    fn try_lock_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move { self.backend.run_batch(&LockBatch::new(self, requests)).await })
    }

    /// One script per [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND)
    /// locks, pipelined on one server; per slot in a cluster (see
    /// [`batch`](super::batch)).
    fn renew_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move { self.backend.run_batch(&RenewBatch::new(self, requests)).await })
    }

    /// One script per [`MAX_KEYS_PER_COMMAND`](crate::MAX_KEYS_PER_COMMAND)
    /// keys, pipelined on one server; per slot in a cluster (see
    /// [`batch`](super::batch)).
    fn settle_many<'a>(&'a self, settlements: &'a [Settlement<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move { self.backend.run_batch(&SettleBatch::new(self, settlements)).await })
    }

    fn waiting(&self) -> usize {
        self.backend.notifier.waiting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companions_share_the_value_keys_slot() {
        assert_eq!(
            companions("app:", "app:book:1:v1"),
            (
                "app:{app:book:1:v1}:lock".to_owned(),
                "app:{app:book:1:v1}:done".to_owned()
            )
        );
        assert_eq!(
            companions("app:", "app:{user:1}:v1"),
            ("app:{user:1}:v1:lock".to_owned(), "app:{user:1}:v1:done".to_owned())
        );
        assert!(!has_hash_tag("a{}b"));
        assert!(has_hash_tag("a{b}c"));
        assert!(!has_hash_tag("a}b{c"));
    }
}
