//! The single-key steps of stampede protection on Redis: the lock, its
//! renewal, the atomic fill and abandon, and the writes that break the
//! lock, as Lua scripts on the key's node ([`lua`](super::lua)), with the
//! names of [`names`](super::names).
//!
//! Fencing: `invalidate` and `replace` delete the lock along with writing
//! the value, and a fill lands only while its own token still holds the
//! lock, so a fetch that started before an invalidation never writes its
//! stale value after it.

use std::time::Duration;

use redis::FromRedisValue;

use super::lua::{Call, Script};
use super::{RedisBackend, ttl_millis};
use crate::error::{Error, Op, Result};

/// `KEYS[1]` lock; `ARGV` token. Gives the lock back, quietly, if ours.
static RELEASE: Script = Script::new(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('DEL', KEYS[1]) \
     end \
     return 0",
);

/// `KEYS[1]` lock; `ARGV` token, ttl ms. Extends the lock if still ours
/// (PEXPIRE: milliseconds).
static RENEW: Script = Script::new(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
     end \
     return 0",
);

/// `KEYS` value, lock; `ARGV` token, value, ttl ms, channel, publish
/// command. Stores and releases only while the lock is ours; always
/// notifies.
static FILL: Script = Script::new(
    "local stored = 0 \
     if redis.call('GET', KEYS[2]) == ARGV[1] then \
       redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
       redis.call('DEL', KEYS[2]) \
       stored = 1 \
     end \
     redis.call(ARGV[5], ARGV[4], 'filled') \
     return stored",
);

/// `KEYS[1]` lock; `ARGV` token, channel, publish command. Releases the
/// lock if ours and says the fetch failed (or, if the lock had been broken
/// or taken over, only that something changed).
static ABANDON: Script = Script::new(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       redis.call('DEL', KEYS[1]) \
       redis.call(ARGV[3], ARGV[2], 'failed') \
       return 1 \
     end \
     redis.call(ARGV[3], ARGV[2], 'filled') \
     return 0",
);

/// `KEYS` value, lock. Deletes both; returns whether the value existed.
static INVALIDATE: Script = Script::new(
    "local n = redis.call('DEL', KEYS[1]) \
     redis.call('DEL', KEYS[2]) \
     return n",
);

/// `KEYS` value, lock; `ARGV` value, ttl ms. Writes and breaks the lock.
static REPLACE: Script = Script::new(
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
     redis.call('DEL', KEYS[2]) \
     return 1",
);

impl RedisBackend {
    /// Runs `call`; errors name `op` and `key`.
    async fn run_script<T: FromRedisValue>(&self, op: Op, key: &str, call: &Call) -> Result<T> {
        let mut connection = self.connection.clone();
        call.invoke(&mut connection)
            .await
            .map_err(|e| Error::backend(self.provider, op, Some(key), e))
    }

    /// `SET lock token NX PX ttl`: the lock alone, one command.
    pub(super) async fn set_lock(&self, key: &str, lock: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(lock).arg(token).arg("NX").arg("PX").arg(ttl_millis(ttl));
        let reply: Option<String> = self.direct(cmd, false, Op::Lock, key).await?;
        Ok(reply.is_some())
    }

    /// Takes the lock of `key` unless its value is there (see
    /// [`Coordinator::try_lock`](crate::stampede::Coordinator::try_lock)).
    pub(super) async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let names = self.names(key);
        // Single-key commands, so this also works while the slot
        // migrates (a two-key script would get TRYAGAIN).
        if !self.set_lock(key, &names.lock, token, ttl).await? {
            return Ok(false);
        }
        // The value may have landed between the caller's miss and this
        // lock (its holder filled and released in between). With the lock
        // ours, no fill can land any more, so this check is final: if the
        // value is there, give the lock back.
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&names.full);
        // From the master: a replica may not have the fill yet.
        let found: i64 = self.direct(exists, false, Op::Lock, key).await?;
        if found == 0 {
            return Ok(true);
        }
        let mut release = RELEASE.call();
        release.key(&names.lock).arg(token);
        let _: i64 = self.run_script(Op::Unlock, key, &release).await?;
        Ok(false)
    }

    /// Extends the lock of `key` if `token` still holds it.
    pub(super) async fn renew_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut renew = RENEW.call();
        renew.key(&self.names(key).lock).arg(token).arg(ttl_millis(ttl));
        let renewed: i64 = self.run_script(Op::Lock, key, &renew).await?;
        Ok(renewed == 1)
    }

    /// Stores `value` and releases the lock while `token` holds it;
    /// notifies waiters either way.
    pub(super) async fn fill(&self, key: &str, token: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let names = self.names(key);
        let mut fill = FILL.call();
        fill.key(&names.full)
            .key(&names.lock)
            .arg(token)
            .arg(value)
            .arg(ttl_millis(ttl))
            .arg(&names.channel)
            .arg(self.publish());
        let stored: i64 = self.run_script(Op::Fill, key, &fill).await?;
        Ok(stored == 1)
    }

    /// Releases the lock if `token` holds it and tells waiters.
    pub(super) async fn abandon(&self, key: &str, token: &str) -> Result<()> {
        let names = self.names(key);
        let mut abandon = ABANDON.call();
        abandon
            .key(&names.lock)
            .arg(token)
            .arg(&names.channel)
            .arg(self.publish());
        let mut connection = self.connection.clone();
        let released: redis::RedisResult<i64> = match abandon.invoke(&mut connection).await {
            // The failure that made the holder give up may have closed
            // the connection (a value over `proto-max-bulk-len` does);
            // the next command reconnects. Releasing is idempotent.
            Err(e) if e.is_connection_dropped() || e.is_io_error() => abandon.invoke(&mut connection).await,
            released => released,
        };
        released.map_err(|e| Error::backend(self.provider, Op::Unlock, Some(key), e))?;
        Ok(())
    }

    /// Publishes a local-tier announcement on the store's channel.
    pub(super) async fn announce(&self, store: &str, payload: &str) -> Result<()> {
        let mut publish = redis::cmd(self.publish());
        publish.arg(self.announcements(store)).arg(payload);
        let _: i64 = self.query(&publish, Op::Announce, None).await?;
        Ok(())
    }

    /// Deletes the value and its lock; whether the value existed.
    pub(super) async fn invalidate(&self, key: &str) -> Result<bool> {
        let names = self.names(key);
        let mut invalidate = INVALIDATE.call();
        invalidate.key(&names.full).key(&names.lock);
        let deleted: i64 = self.run_script(Op::Delete, key, &invalidate).await?;
        Ok(deleted == 1)
    }

    /// Writes the value and breaks its lock.
    pub(super) async fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let names = self.names(key);
        let mut replace = REPLACE.call();
        replace
            .key(&names.full)
            .key(&names.lock)
            .arg(value)
            .arg(ttl_millis(ttl));
        let _: i64 = self.run_script(Op::Set, key, &replace).await?;
        Ok(())
    }
}
