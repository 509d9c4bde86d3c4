//! Batches in one round trip: a cluster's `get_many` and the batch lock
//! and settle steps of stampede protection, each one Lua script on one
//! server, or one per node of a cluster sent concurrently (see
//! [`per_node`](super::cluster::per_node)).
//!
//! - Keys travel in `ARGV`, not `KEYS`, so one body serves both
//!   deployments: a cluster refuses declared keys of several slots
//!   (`CROSSSLOT`), but a script flagged `allow-cross-slot-keys` may touch
//!   undeclared keys of every slot its node serves.
//! - Notifications of a cluster batch are `SPUBLISH`ed from inside the
//!   script, to the shard channels of several slots at once (`PUBLISH` on
//!   one server). Redis 7 allows it for channels of slots the node serves
//!   (checked on 7.0.15; a channel of another node's slot fails the script
//!   like a key does), and a slot's shard channel stays with its owner
//!   while the slot's keys migrate. Subscribers of every slot hear it
//!   (`tests/redis_batches.rs` checks).
//! - The scripts that write first probe every key they will write with
//!   `EXISTS` under `pcall`: a key the node does not serve (a stale slot
//!   map, a slot being migrated) fails the script before anything was
//!   written, so its entries can be sent again elsewhere.
//! - A script goes out as `EVALSHA`; a server that does not know it yet
//!   (first use, restart, `SCRIPT FLUSH`) gets the body once with `EVAL`,
//!   which caches it. One round trip per server or node is the cost of a
//!   call once the script is known there; the first call on a node costs
//!   two.

use std::future::Future;
use std::sync::LazyLock;

use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::connection::Connection;
use super::stampede::RedisCoordinator;
use super::{RedisBackend, ttl_millis};
use crate::backend::BoxFuture;
use crate::error::{Error, Op, Result};
use crate::stampede::{Coordinator, LockRequest, Settlement};

/// A Lua script sent by hash, with its body for servers that lack it.
pub(super) struct BatchScript {
    body: &'static str,
    script: LazyLock<Script>,
}

/// `ARGV`: full keys. Their values (nil for a missing key or one that does
/// not hold a string, as `MGET`), in order.
#[cfg(feature = "redis-cluster")]
static GET_MANY: BatchScript = BatchScript {
    body: GET_MANY_BODY,
    script: LazyLock::new(|| Script::new(GET_MANY_BODY)),
};
#[cfg(feature = "redis-cluster")]
const GET_MANY_BODY: &str = "#!lua flags=no-writes,allow-cross-slot-keys
local values = {}
for i = 1, #ARGV do
  local value = redis.pcall('GET', ARGV[i])
  if type(value) == 'table' and value.err then
    if string.sub(value.err, 1, 9) ~= 'WRONGTYPE' then return value end
    value = false
  end
  values[i] = value
end
return values";

/// `ARGV`: value key, lock, token, ttl ms per request. 1 where the lock
/// was taken, or was already held by the same token before the script (so
/// a batch sent again after a lost reply reports what it took), else 0.
/// As [`try_lock`](crate::stampede::Coordinator::try_lock), a lock is not
/// taken over a value that is already there (it landed since the miss).
/// A key asked twice in one batch is taken by the first request only.
static LOCK_MANY: BatchScript = BatchScript {
    body: LOCK_MANY_BODY,
    script: LazyLock::new(|| Script::new(LOCK_MANY_BODY)),
};
const LOCK_MANY_BODY: &str = "#!lua flags=allow-cross-slot-keys
for i = 1, #ARGV, 4 do
  local probe = redis.pcall('EXISTS', ARGV[i + 1])
  if type(probe) == 'table' and probe.err then return probe end
end
local taken, seen = {}, {}
for i = 1, #ARGV, 4 do
  local key, lock, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local won = false
  if not seen[lock] then
    if redis.call('GET', lock) == token then
      won = true
    elseif redis.call('EXISTS', key) == 0 then
      won = redis.call('SET', lock, token, 'NX', 'PX', ARGV[i + 3]) and true or false
    end
  end
  seen[lock] = true
  taken[#taken + 1] = won and 1 or 0
end
return taken";

/// `ARGV[1]`: the publish command; then per settlement: `fill` or
/// `abandon`, value key, lock, channel, token, value, ttl ms. Each entry
/// is the FILL or ABANDON script of [`stampede`](super::stampede): a fill
/// stores and releases only while the token holds the lock and always
/// notifies `filled`; an abandon releases its own lock and notifies
/// `failed`, or only `filled` when the lock was no longer its own. 1 where
/// a value was stored, else 0.
static SETTLE_MANY: BatchScript = BatchScript {
    body: SETTLE_MANY_BODY,
    script: LazyLock::new(|| Script::new(SETTLE_MANY_BODY)),
};
const SETTLE_MANY_BODY: &str = "#!lua flags=allow-cross-slot-keys
local publish = ARGV[1]
local function probe(key)
  local found = redis.pcall('EXISTS', key)
  if type(found) == 'table' and found.err then return found end
end
for i = 2, #ARGV, 7 do
  local failed = probe(ARGV[i + 2]) or (ARGV[i] == 'fill' and probe(ARGV[i + 1]))
  if failed then return failed end
end
local stored = {}
for i = 2, #ARGV, 7 do
  local key, lock, channel = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ours = redis.call('GET', lock) == ARGV[i + 4]
  local result = 0
  if ARGV[i] == 'fill' then
    if ours then
      redis.call('SET', key, ARGV[i + 5], 'PX', ARGV[i + 6])
      redis.call('DEL', lock)
      result = 1
    end
    redis.call(publish, channel, 'filled')
  elseif ours then
    redis.call('DEL', lock)
    redis.call(publish, channel, 'failed')
  else
    redis.call(publish, channel, 'filled')
  end
  stored[#stored + 1] = result
end
return stored";

/// A batch of entries that runs as one [`BatchScript`] per server or
/// cluster node, one reply element per entry.
pub(super) trait Batch: Sync {
    /// One entry's reply.
    type Out: redis::FromRedisValue + Send;

    /// What errors name.
    const OP: Op;

    /// The script that runs the entries.
    fn script(&self) -> &'static BatchScript;

    /// How many entries.
    fn len(&self) -> usize;

    /// The key whose slot decides which cluster node runs entry `i`.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code, reason = "cluster only"))]
    fn slot_key(&self, i: usize) -> &str;

    /// Appends the arguments that come before every entry's.
    fn header(&self, _cmd: &mut Cmd) {}

    /// Appends entry `i`'s arguments.
    fn entry(&self, i: usize, cmd: &mut Cmd);

    /// Entry `i` by the single-key step, routed and redirected by
    /// redis-rs: the slow path that is always right, for the entries of a
    /// cluster node that keeps refusing the script.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code, reason = "cluster only"))]
    fn single(&self, i: usize) -> BoxFuture<'_, Result<Self::Out>>;
}

impl RedisBackend {
    /// Runs `batch`: one script on one server, one per node of a cluster.
    /// No entries, no command.
    pub(super) async fn run_batch<B: Batch>(&self, batch: &B) -> Result<Vec<B::Out>> {
        if batch.len() == 0 {
            return Ok(Vec::new());
        }
        match &self.connection {
            Connection::Node(_) => {
                let all: Vec<usize> = (0..batch.len()).collect();
                eval(batch, &all, |cmd| async move {
                    let mut connection = self.connection.clone();
                    cmd.query_async(&mut connection).await
                })
                .await
                .map_err(|e| Error::backend(self.provider, B::OP, None, e))
            }
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => self.run_per_node(cluster, batch).await,
        }
    }
}

/// Sends the entries `indices` of `batch` as one script call through
/// `send`: `EVALSHA`, then `EVAL` with the body if the server does not
/// know the script. One reply element per entry, in the order of `indices`.
pub(super) async fn eval<B, F, Fut>(batch: &B, indices: &[usize], send: F) -> RedisResult<Vec<B::Out>>
where
    B: Batch,
    F: Fn(Cmd) -> Fut,
    Fut: Future<Output = RedisResult<Value>>,
{
    let call = |with_body: bool| {
        let script = batch.script();
        let mut cmd = if with_body {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(script.body);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.script.get_hash());
            cmd
        };
        cmd.arg(0);
        batch.header(&mut cmd);
        for &i in indices {
            batch.entry(i, &mut cmd);
        }
        cmd
    };
    let reply = match send(call(false)).await.and_then(Value::extract_error) {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            send(call(true)).await.and_then(Value::extract_error)?
        }
        reply => reply?,
    };
    let values: Vec<B::Out> = redis::from_redis_value(reply)?;
    if values.len() != indices.len() {
        return Err(RedisError::from((
            ErrorKind::Client,
            "unexpected batch script reply",
            format!("{} elements for {} entries", values.len(), indices.len()),
        )));
    }
    Ok(values)
}

/// A cluster's `get_many`: full keys, values in order.
#[cfg(feature = "redis-cluster")]
pub(super) struct GetBatch<'a> {
    pub(super) backend: &'a RedisBackend,
    pub(super) keys: Vec<String>,
}

#[cfg(feature = "redis-cluster")]
impl Batch for GetBatch<'_> {
    type Out = Option<Vec<u8>>;
    const OP: Op = Op::GetMany;

    fn script(&self) -> &'static BatchScript {
        &GET_MANY
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.keys[i]
    }

    fn entry(&self, i: usize, cmd: &mut Cmd) {
        cmd.arg(&self.keys[i]);
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<Self::Out>> {
        Box::pin(async move {
            self.backend
                .query(redis::cmd("GET").arg(&self.keys[i]), Op::GetMany, None)
                .await
        })
    }
}

/// [`Coordinator::try_lock_many`](crate::stampede::Coordinator::try_lock_many)
/// on Redis.
pub(super) struct LockBatch<'a> {
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code, reason = "the cluster's fallback"))]
    coordinator: &'a RedisCoordinator,
    requests: &'a [LockRequest<'a>],
    /// The value key and the lock of each request.
    names: Vec<(String, String)>,
}

impl<'a> LockBatch<'a> {
    pub(super) fn new(coordinator: &'a RedisCoordinator, requests: &'a [LockRequest<'a>]) -> Self {
        let names = requests
            .iter()
            .map(|r| {
                let (full, lock, _) = coordinator.names(r.key);
                (full, lock)
            })
            .collect();
        LockBatch {
            coordinator,
            requests,
            names,
        }
    }
}

impl Batch for LockBatch<'_> {
    type Out = bool;
    const OP: Op = Op::Lock;

    fn script(&self) -> &'static BatchScript {
        &LOCK_MANY
    }

    fn len(&self) -> usize {
        self.requests.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.names[i].1
    }

    fn entry(&self, i: usize, cmd: &mut Cmd) {
        let request = &self.requests[i];
        let (full, lock) = &self.names[i];
        cmd.arg(full).arg(lock).arg(request.token).arg(ttl_millis(request.ttl));
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<bool>> {
        // The key-by-key path runs while slots move: the plain `SET NX`,
        // one command, which redis-rs redirects. (No value check here: a
        // second command per key makes redis-rs's redirections time out.)
        let request = &self.requests[i];
        Box::pin(
            self.coordinator
                .set_lock(request.key, &self.names[i].1, request.token, request.ttl),
        )
    }
}

/// [`Coordinator::settle_many`](crate::stampede::Coordinator::settle_many)
/// on Redis.
pub(super) struct SettleBatch<'a> {
    coordinator: &'a RedisCoordinator,
    settlements: &'a [Settlement<'a>],
    /// Value key, lock and channel of each settlement.
    names: Vec<(String, String, String)>,
}

impl<'a> SettleBatch<'a> {
    pub(super) fn new(coordinator: &'a RedisCoordinator, settlements: &'a [Settlement<'a>]) -> Self {
        let names = settlements.iter().map(|s| coordinator.names(s.key())).collect();
        SettleBatch {
            coordinator,
            settlements,
            names,
        }
    }
}

impl Batch for SettleBatch<'_> {
    type Out = bool;
    const OP: Op = Op::Fill;

    fn script(&self) -> &'static BatchScript {
        &SETTLE_MANY
    }

    fn len(&self) -> usize {
        self.settlements.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.names[i].0
    }

    fn header(&self, cmd: &mut Cmd) {
        cmd.arg(self.coordinator.publish());
    }

    fn entry(&self, i: usize, cmd: &mut Cmd) {
        let (full, lock, channel) = &self.names[i];
        let (kind, value, ttl): (_, &[u8], _) = match self.settlements[i] {
            Settlement::Fill { value, ttl, .. } => ("fill", value, ttl_millis(ttl)),
            Settlement::Abandon { .. } => ("abandon", b"", 0),
        };
        cmd.arg(kind)
            .arg(full)
            .arg(lock)
            .arg(channel)
            .arg(self.settlements[i].token())
            .arg(value)
            .arg(ttl);
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<bool>> {
        match self.settlements[i] {
            Settlement::Fill { key, token, value, ttl } => self.coordinator.fill(key, token, value, ttl),
            Settlement::Abandon { key, token } => Box::pin(async move {
                self.coordinator.abandon(key, token).await?;
                Ok(false)
            }),
        }
    }
}
