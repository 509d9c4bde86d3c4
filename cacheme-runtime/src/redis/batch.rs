//! Batches in few commands: a cluster's `get_many` and the batch lock,
//! renew and settle steps of stampede protection, each a Lua script run on
//! slices of the batch (see [`Batch`]).
//!
//! - Every key a script touches is declared in `KEYS` (the EVAL contract,
//!   which Dragonfly and proxies enforce); `ARGV` carries only tokens,
//!   values, TTLs and channel names. A cluster refuses declared keys of
//!   several slots (`CROSSSLOT`, even with `allow-cross-slot-keys`), so
//!   there a script call carries the entries of one slot.
//! - A call carries at most [`MAX_KEYS_PER_COMMAND`] entries (a value key
//!   and its lock count as one), so a batch of 100,000 keys never blocks
//!   a single-threaded server with one huge script. On one server the
//!   calls of a batch go out as one pipeline (one round trip); in a
//!   cluster every slot's calls are sent concurrently on the nodes'
//!   multiplexed connections (see [`per_node`](super::cluster::per_node)).
//! - Notifications of a cluster batch are `SPUBLISH`ed from inside the
//!   script, to the shard channel of the script's slot (the channel
//!   shares its slot with the value and the lock; `PUBLISH` on one
//!   server).
//! - Declared keys are checked by the server before the script runs: a key
//!   the node does not serve (a stale slot map, a slot being migrated)
//!   fails the call before anything was written, so its entries can be
//!   sent again elsewhere.
//! - A script goes out as `EVALSHA`; a server that does not know it yet
//!   (first use, restart, `SCRIPT FLUSH`) gets the body once with `EVAL`,
//!   which caches it. The scripts start with a `#!lua` shebang, which
//!   needs Redis 7.0 or later (so do sharded channels).

use std::future::Future;
use std::sync::LazyLock;

use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::connection::Link;
use super::stampede::RedisCoordinator;
use super::{RedisBackend, ttl_millis};
use crate::backend::{BoxFuture, MAX_KEYS_PER_COMMAND};
use crate::error::{Error, Op, Result};
use crate::stampede::{Coordinator, LockRequest, Settlement};

/// A Lua script sent by hash, with its body for servers that lack it.
pub(super) struct BatchScript {
    body: &'static str,
    script: LazyLock<Script>,
}

/// `KEYS`: full keys. Their values (nil for a missing key or one that does
/// not hold a string, as `MGET`), in order.
#[cfg(feature = "redis-cluster")]
static GET_MANY: BatchScript = BatchScript {
    body: GET_MANY_BODY,
    script: LazyLock::new(|| Script::new(GET_MANY_BODY)),
};
#[cfg(feature = "redis-cluster")]
const GET_MANY_BODY: &str = "#!lua flags=no-writes
local values = {}
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) == 'table' and value.err then
    if string.sub(value.err, 1, 9) ~= 'WRONGTYPE' then return value end
    value = false
  end
  values[i] = value
end
return values";

/// `KEYS`: value key, lock per request; `ARGV`: token, ttl ms per
/// request. 1 where the lock was taken, or was already held by the same
/// token before the script (so a batch sent again after a lost reply
/// reports what it took), else 0. As
/// [`try_lock`](crate::stampede::Coordinator::try_lock), a lock is not
/// taken over a value that is already there (it landed since the miss).
/// A key asked twice in one call is taken by the first request only.
static LOCK_MANY: BatchScript = BatchScript {
    body: LOCK_MANY_BODY,
    script: LazyLock::new(|| Script::new(LOCK_MANY_BODY)),
};
const LOCK_MANY_BODY: &str = "#!lua
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
return taken";

/// `KEYS`: locks; `ARGV`: token, ttl ms per lock. As
/// [`renew`](crate::stampede::Coordinator::renew): extends each lock still
/// held by its token. 1 where renewed, else 0.
static RENEW_MANY: BatchScript = BatchScript {
    body: RENEW_MANY_BODY,
    script: LazyLock::new(|| Script::new(RENEW_MANY_BODY)),
};
const RENEW_MANY_BODY: &str = "#!lua
local renewed = {}
for i = 1, #KEYS do
  renewed[i] = 0
  if redis.call('GET', KEYS[i]) == ARGV[2 * i - 1] then
    renewed[i] = redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return renewed";

/// `KEYS`: value key, lock per settlement; `ARGV[1]`: the publish
/// command, then per settlement: `fill` or `abandon`, channel, token,
/// value, ttl ms. Each entry is the FILL or ABANDON script of
/// [`stampede`](super::stampede): a fill stores and releases only while
/// the token holds the lock and always notifies `filled`; an abandon
/// releases its own lock and notifies `failed`, or only `filled` when the
/// lock was no longer its own. 1 where a value was stored, else 0; a fill
/// sent again (redis-rs re-sends a node's pipeline after a redirection)
/// finds its lock gone and its value there, and reports 1 again.
static SETTLE_MANY: BatchScript = BatchScript {
    body: SETTLE_MANY_BODY,
    script: LazyLock::new(|| Script::new(SETTLE_MANY_BODY)),
};
const SETTLE_MANY_BODY: &str = "#!lua
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
return stored";

/// Every batch script, for the check that they declare their keys.
#[cfg(test)]
pub(super) fn scripts() -> Vec<&'static str> {
    let mut all = vec![LOCK_MANY_BODY, RENEW_MANY_BODY, SETTLE_MANY_BODY];
    #[cfg(feature = "redis-cluster")]
    all.push(GET_MANY_BODY);
    all
}

/// A batch of entries that runs as [`BatchScript`] calls of at most
/// [`MAX_KEYS_PER_COMMAND`] entries (of one slot in a cluster), one reply
/// element per entry.
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

    /// How many keys each entry declares.
    const KEYS: usize;

    /// Appends entry `i`'s keys (`KEYS` of them) to the script's `KEYS`.
    fn keys(&self, i: usize, cmd: &mut Cmd);

    /// Appends the arguments that come before every entry's.
    fn header(&self, _cmd: &mut Cmd) {}

    /// Appends entry `i`'s arguments (never a key).
    fn entry(&self, i: usize, cmd: &mut Cmd);

    /// Entry `i` by the single-key step, routed and redirected by
    /// redis-rs: the slow path that is always right, for the entries of a
    /// cluster node that keeps refusing the script.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code, reason = "cluster only"))]
    fn single(&self, i: usize) -> BoxFuture<'_, Result<Self::Out>>;
}

impl RedisBackend {
    /// Runs `batch`: on one server, its calls of [`MAX_KEYS_PER_COMMAND`]
    /// entries as one pipeline; on a cluster, per slot (see
    /// [`per_node`](super::cluster::per_node)). No entries, no command.
    pub(super) async fn run_batch<B: Batch>(&self, batch: &B) -> Result<Vec<B::Out>> {
        if batch.len() == 0 {
            return Ok(Vec::new());
        }
        match self.link(B::OP)? {
            Link::Node(_) => self
                .run_pipelined(batch)
                .await
                .map_err(|e| Error::backend(self.provider, B::OP, None, e)),
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => self.run_per_node(cluster, batch).await,
        }
    }

    /// One server: every call in one pipeline (see [`pipelined`]); any
    /// call's error fails the batch.
    async fn run_pipelined<B: Batch>(&self, batch: &B) -> RedisResult<Vec<B::Out>> {
        let calls: Vec<Vec<usize>> = (0..batch.len())
            .collect::<Vec<_>>()
            .chunks(MAX_KEYS_PER_COMMAND)
            .map(<[usize]>::to_vec)
            .collect();
        let replies = pipelined(batch, &calls, |pipe, _| {
            let mut connection = self.connection.clone();
            async move { pipe.query_async::<Vec<Value>>(&mut connection).await }
        })
        .await?;
        let mut out = Vec::with_capacity(batch.len());
        for reply in replies {
            out.extend(reply?);
        }
        Ok(out)
    }
}

/// Sends the script calls `calls` (each the entries of one call) of
/// `batch` as one pipeline through `send` (given the pipeline and its
/// length): `EVALSHA`s, then the calls the server refused with `NOSCRIPT`
/// once more in a pipeline of `EVAL`s with the body. One result per call,
/// one reply element per entry; `Err` when a pipeline got no reply.
pub(super) async fn pipelined<B, F, Fut>(
    batch: &B,
    calls: &[Vec<usize>],
    send: F,
) -> RedisResult<Vec<RedisResult<Vec<B::Out>>>>
where
    B: Batch,
    F: Fn(redis::Pipeline, usize) -> Fut,
    Fut: Future<Output = RedisResult<Vec<Value>>>,
{
    let run = |which: &[usize], with_body: bool| {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &n in which {
            pipe.add_command(command(batch, &calls[n], with_body));
        }
        let count = which.len();
        let sent = send(pipe, count);
        async move {
            let replies = sent.await?;
            if replies.len() != count {
                return Err(short_reply(replies.len(), count));
            }
            Ok(replies.into_iter().map(Value::extract_error).collect::<Vec<_>>())
        }
    };
    let all: Vec<usize> = (0..calls.len()).collect();
    let mut replies = run(&all, false).await?;
    let unknown: Vec<usize> = all
        .into_iter()
        .filter(|&n| matches!(&replies[n], Err(e) if is_noscript(e)))
        .collect();
    if !unknown.is_empty() {
        for (&n, reply) in unknown.iter().zip(run(&unknown, true).await?) {
            replies[n] = reply;
        }
    }
    Ok(calls
        .iter()
        .zip(replies)
        .map(|(call, reply)| entries::<B>(call, reply))
        .collect())
}

/// The script call of `batch` carrying the entries `indices`: `EVALSHA`,
/// or `EVAL` with the body.
fn command<B: Batch>(batch: &B, indices: &[usize], with_body: bool) -> Cmd {
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
    cmd.arg(indices.len() * B::KEYS);
    for &i in indices {
        batch.keys(i, &mut cmd);
    }
    batch.header(&mut cmd);
    for &i in indices {
        batch.entry(i, &mut cmd);
    }
    cmd
}

fn is_noscript(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

fn short_reply(got: usize, wanted: usize) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "unexpected batch script reply",
        format!("{got} elements for {wanted} entries"),
    ))
}

/// One call's reply: one element per entry of `indices`.
fn entries<B: Batch>(indices: &[usize], reply: RedisResult<Value>) -> RedisResult<Vec<B::Out>> {
    let values: Vec<B::Out> = redis::from_redis_value(reply?)?;
    if values.len() != indices.len() {
        return Err(short_reply(values.len(), indices.len()));
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

    const KEYS: usize = 1;

    fn keys(&self, i: usize, cmd: &mut Cmd) {
        cmd.arg(&self.keys[i]);
    }

    fn entry(&self, _i: usize, _cmd: &mut Cmd) {}

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

    const KEYS: usize = 2;

    fn keys(&self, i: usize, cmd: &mut Cmd) {
        let (full, lock) = &self.names[i];
        cmd.arg(full).arg(lock);
    }

    fn entry(&self, i: usize, cmd: &mut Cmd) {
        let request = &self.requests[i];
        cmd.arg(request.token).arg(ttl_millis(request.ttl));
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

    const KEYS: usize = 2;

    fn keys(&self, i: usize, cmd: &mut Cmd) {
        let (full, lock, _) = &self.names[i];
        cmd.arg(full).arg(lock);
    }

    fn entry(&self, i: usize, cmd: &mut Cmd) {
        let (_, _, channel) = &self.names[i];
        let (kind, value, ttl): (_, &[u8], _) = match self.settlements[i] {
            Settlement::Fill { value, ttl, .. } => ("fill", value, ttl_millis(ttl)),
            Settlement::Abandon { .. } => ("abandon", b"", 0),
        };
        cmd.arg(kind)
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

/// [`Coordinator::renew_many`](crate::stampede::Coordinator::renew_many)
/// on Redis.
pub(super) struct RenewBatch<'a> {
    coordinator: &'a RedisCoordinator,
    requests: &'a [LockRequest<'a>],
    /// The lock of each request.
    locks: Vec<String>,
}

impl<'a> RenewBatch<'a> {
    pub(super) fn new(coordinator: &'a RedisCoordinator, requests: &'a [LockRequest<'a>]) -> Self {
        let locks = requests.iter().map(|r| coordinator.names(r.key).1).collect();
        RenewBatch {
            coordinator,
            requests,
            locks,
        }
    }
}

impl Batch for RenewBatch<'_> {
    type Out = bool;
    const OP: Op = Op::Lock;

    fn script(&self) -> &'static BatchScript {
        &RENEW_MANY
    }

    fn len(&self) -> usize {
        self.requests.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.locks[i]
    }

    const KEYS: usize = 1;

    fn keys(&self, i: usize, cmd: &mut Cmd) {
        cmd.arg(&self.locks[i]);
    }

    fn entry(&self, i: usize, cmd: &mut Cmd) {
        let request = &self.requests[i];
        cmd.arg(request.token).arg(ttl_millis(request.ttl));
    }

    fn single(&self, i: usize) -> BoxFuture<'_, Result<bool>> {
        let request = &self.requests[i];
        self.coordinator.renew(request.key, request.token, request.ttl)
    }
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
