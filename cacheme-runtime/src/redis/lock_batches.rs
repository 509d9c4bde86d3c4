//! The batch steps of stampede protection on Redis: taking, renewing and
//! settling (fill or abandon) the locks of many keys, each a Lua script
//! run on slices of the batch by [`batch`](super::batch), with the names
//! of [`names`](super::names). An entry a cluster node keeps refusing
//! takes the single-key step of [`steps`](super::steps).

use super::RedisBackend;
use super::batch::Batch;
use super::lua::{Call, Script};
use super::ttl_millis;
use crate::backend::BoxFuture;
use crate::error::{Op, Result};
use crate::stampede::{LockRequest, Settlement};

/// `KEYS`: value key, lock per request; `ARGV`: token, ttl ms per
/// request. 1 where the lock was taken, or was already held by the same
/// token before the script (so a batch sent again after a lost reply
/// reports what it took), else 0. As
/// [`try_lock`](crate::stampede::Coordinator::try_lock), a lock is not
/// taken over a value that is already there (it landed since the miss).
/// A key asked twice in one call is taken by the first request only.
static LOCK_MANY: Script = Script::new(
    "#!lua
local taken, seen = {}, {}
for i = 1, #KEYS / 2 do
  local won = false
  if not seen[KEYS[2 * i]] then
    if redis.call('GET', KEYS[2 * i]) == ARGV[2 * i - 1] then
      won = true
    elseif redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then
      won = redis.call('SET', KEYS[2 * i], ARGV[2 * i - 1], 'NX', 'PX', ARGV[2 * i]) and true or false
    end
  end
  seen[KEYS[2 * i]] = true
  taken[i] = won and 1 or 0
end
return taken",
);

/// `KEYS`: locks; `ARGV`: token, ttl ms per lock. As
/// [`renew`](crate::stampede::Coordinator::renew): extends each lock still
/// held by its token. 1 where renewed, else 0.
static RENEW_MANY: Script = Script::new(
    "#!lua
local renewed = {}
for i = 1, #KEYS do
  renewed[i] = 0
  if redis.call('GET', KEYS[i]) == ARGV[2 * i - 1] then
    renewed[i] = redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return renewed",
);

/// `KEYS`: value key, lock per settlement; `ARGV[1]`: the publish
/// command, then per settlement: `fill` or `abandon`, channel, token,
/// value, ttl ms. Each entry is the FILL or ABANDON script of
/// [`steps`](super::steps): a fill stores and releases only while
/// the token holds the lock and always notifies `filled`; an abandon
/// releases its own lock and notifies `failed`, or only `filled` when the
/// lock was no longer its own. 1 where a value was stored, else 0; a fill
/// sent again (redis-rs re-sends a node's pipeline after a redirection)
/// finds its lock gone and its value there, and reports 1 again.
static SETTLE_MANY: Script = Script::new(
    "#!lua
local publish = ARGV[1]
local stored = {}
for i = 1, #KEYS / 2 do
  local a = 1 + 5 * (i - 1)
  local ours = redis.call('GET', KEYS[2 * i]) == ARGV[a + 3]
  stored[i] = 0
  if ARGV[a + 1] == 'fill' then
    if ours then
      redis.call('SET', KEYS[2 * i - 1], ARGV[a + 4], 'PX', ARGV[a + 5])
      redis.call('DEL', KEYS[2 * i])
      stored[i] = 1
    elseif redis.call('EXISTS', KEYS[2 * i]) == 0 and redis.call('GET', KEYS[2 * i - 1]) == ARGV[a + 4] then
      stored[i] = 1
    end
    redis.call(publish, ARGV[a + 2], 'filled')
  elseif ours then
    redis.call('DEL', KEYS[2 * i])
    redis.call(publish, ARGV[a + 2], 'failed')
  else
    redis.call(publish, ARGV[a + 2], 'filled')
  end
end
return stored",
);

/// [`Coordinator::try_lock_many`](crate::stampede::Coordinator::try_lock_many)
/// on Redis.
pub(super) struct LockBatch<'a> {
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code, reason = "the cluster's fallback"))]
    backend: &'a RedisBackend,
    requests: &'a [LockRequest<'a>],
    /// The value key and the lock of each request.
    names: Vec<(String, String)>,
}

impl<'a> LockBatch<'a> {
    pub(super) fn new(backend: &'a RedisBackend, requests: &'a [LockRequest<'a>]) -> Self {
        let names = requests
            .iter()
            .map(|r| {
                let names = backend.names(r.key);
                (names.full, names.lock)
            })
            .collect();
        LockBatch {
            backend,
            requests,
            names,
        }
    }
}

impl Batch for LockBatch<'_> {
    type Out = bool;
    const OP: Op = Op::Lock;

    fn script(&self) -> &'static Script {
        &LOCK_MANY
    }

    fn len(&self) -> usize {
        self.requests.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.names[i].1
    }

    fn keys(&self, i: usize, call: &mut Call) {
        let (full, lock) = &self.names[i];
        call.key(full).key(lock);
    }

    fn entry(&self, i: usize, call: &mut Call) {
        let request = &self.requests[i];
        call.arg(request.token).arg(ttl_millis(request.ttl));
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<bool>> {
        // The key-by-key path runs while slots move: the plain `SET NX`,
        // one command, which redis-rs redirects. (No value check here: a
        // second command per key makes redis-rs's redirections time out.)
        let request = &self.requests[i];
        Box::pin(
            self.backend
                .set_lock(request.key, &self.names[i].1, request.token, request.ttl),
        )
    }
}

/// [`Coordinator::settle_many`](crate::stampede::Coordinator::settle_many)
/// on Redis.
pub(super) struct SettleBatch<'a> {
    backend: &'a RedisBackend,
    settlements: &'a [Settlement<'a>],
    /// Value key, lock and channel of each settlement.
    names: Vec<(String, String, String)>,
}

impl<'a> SettleBatch<'a> {
    pub(super) fn new(backend: &'a RedisBackend, settlements: &'a [Settlement<'a>]) -> Self {
        let names = settlements
            .iter()
            .map(|s| {
                let names = backend.names(s.key());
                (names.full, names.lock, names.channel)
            })
            .collect();
        SettleBatch {
            backend,
            settlements,
            names,
        }
    }
}

impl Batch for SettleBatch<'_> {
    type Out = bool;
    const OP: Op = Op::Fill;

    fn script(&self) -> &'static Script {
        &SETTLE_MANY
    }

    fn len(&self) -> usize {
        self.settlements.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.names[i].0
    }

    fn header(&self, call: &mut Call) {
        call.arg(self.backend.publish());
    }

    fn keys(&self, i: usize, call: &mut Call) {
        let (full, lock, _) = &self.names[i];
        call.key(full).key(lock);
    }

    fn entry(&self, i: usize, call: &mut Call) {
        let (_, _, channel) = &self.names[i];
        let (kind, value, ttl): (_, &[u8], _) = match self.settlements[i] {
            Settlement::Fill { value, ttl, .. } => ("fill", value, ttl_millis(ttl)),
            Settlement::Abandon { .. } => ("abandon", b"", 0),
        };
        call.arg(kind)
            .arg(channel)
            .arg(self.settlements[i].token())
            .arg(value)
            .arg(ttl);
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<bool>> {
        match self.settlements[i] {
            Settlement::Fill { key, token, value, ttl } => Box::pin(self.backend.fill(key, token, value, ttl)),
            Settlement::Abandon { key, token } => Box::pin(async move {
                self.backend.abandon(key, token).await?;
                Ok(false)
            }),
        }
    }
}

/// [`Coordinator::renew_many`](crate::stampede::Coordinator::renew_many)
/// on Redis.
pub(super) struct RenewBatch<'a> {
    backend: &'a RedisBackend,
    requests: &'a [LockRequest<'a>],
    /// The lock of each request.
    locks: Vec<String>,
}

impl<'a> RenewBatch<'a> {
    pub(super) fn new(backend: &'a RedisBackend, requests: &'a [LockRequest<'a>]) -> Self {
        let locks = requests.iter().map(|r| backend.names(r.key).lock).collect();
        RenewBatch {
            backend,
            requests,
            locks,
        }
    }
}

impl Batch for RenewBatch<'_> {
    type Out = bool;
    const OP: Op = Op::Lock;

    fn script(&self) -> &'static Script {
        &RENEW_MANY
    }

    fn len(&self) -> usize {
        self.requests.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.locks[i]
    }

    fn keys(&self, i: usize, call: &mut Call) {
        call.key(&self.locks[i]);
    }

    fn entry(&self, i: usize, call: &mut Call) {
        let request = &self.requests[i];
        call.arg(request.token).arg(ttl_millis(request.ttl));
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<bool>> {
        let request = &self.requests[i];
        Box::pin(self.backend.renew_lock(request.key, request.token, request.ttl))
    }
}

/// Every batch script, for the check that they declare their keys.
#[cfg(test)]
fn scripts() -> Vec<&'static str> {
    #[cfg_attr(not(feature = "redis-cluster"), allow(unused_mut))]
    let mut all = vec![LOCK_MANY.body(), RENEW_MANY.body(), SETTLE_MANY.body()];
    #[cfg(feature = "redis-cluster")]
    all.push(super::batch::GET_MANY.body());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands the scripts call on keys.
    const KEY_COMMANDS: [&str; 5] = ["GET", "SET", "DEL", "EXISTS", "PEXPIRE"];

    /// Every `redis.call` / `redis.pcall` of a key command in every batch
    /// script takes its key from `KEYS`, never from `ARGV` or a local.
    #[test]
    fn every_key_a_script_touches_is_declared_in_keys() {
        let mut checked = 0;
        for body in scripts() {
            assert!(body.starts_with("#!lua"), "a shebang (Redis 7.0): {body}");
            for call in body.split("redis.").skip(1) {
                let Some(args) = call.strip_prefix("call(").or_else(|| call.strip_prefix("pcall(")) else {
                    continue;
                };
                let mut args = args.split(',').map(str::trim);
                let command = args.next().unwrap_or("").trim_matches('\'');
                if KEY_COMMANDS.contains(&command) {
                    let key = args.next().unwrap_or("");
                    assert!(key.starts_with("KEYS["), "{command} of {key:?} in {body}");
                    checked += 1;
                } else {
                    assert!(command == "publish", "an unknown command {command:?} in {body}");
                }
            }
        }
        assert!(checked >= 10, "the check saw the scripts' calls: {checked}");
    }
}
