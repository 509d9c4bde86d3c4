//! Batches in few commands: a cluster's `get_many` here, and the batch
//! lock, renew and settle steps of stampede protection
//! ([`lock_batches`](super::lock_batches)), each a Lua script run on
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
//!   which caches it ([`lua`](super::lua)). The scripts start with a
//!   `#!lua` shebang, which needs Redis 7.0 or later (so do sharded
//!   channels).

use std::future::Future;

use redis::{RedisResult, Value};

use super::RedisBackend;
use super::connection::Link;
use super::lua::{Call, Script, invoke_pipelined, short_reply};
use crate::backend::{BoxFuture, MAX_KEYS_PER_COMMAND};
use crate::error::{Error, Op, Result};

/// `KEYS`: full keys. Their values (nil for a missing key or one that does
/// not hold a string, as `MGET`), in order.
#[cfg(feature = "redis-cluster")]
pub(super) static GET_MANY: Script = Script::new(
    "#!lua flags=no-writes
local values = {}
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) == 'table' and value.err then
    if string.sub(value.err, 1, 9) ~= 'WRONGTYPE' then return value end
    value = false
  end
  values[i] = value
end
return values",
);

/// A batch of entries that runs as [`Script`] calls of at most
/// [`MAX_KEYS_PER_COMMAND`] entries (of one slot in a cluster), one reply
/// element per entry.
pub(super) trait Batch: Sync {
    /// One entry's reply.
    type Out: redis::FromRedisValue + Send;

    /// What errors name.
    const OP: Op;

    /// The script that runs the entries.
    fn script(&self) -> &'static Script;

    /// How many entries.
    fn len(&self) -> usize;

    /// The key whose slot decides which cluster node runs entry `i`.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code, reason = "cluster only"))]
    fn slot_key(&self, i: usize) -> &str;

    /// Appends entry `i`'s keys (the same number for every entry) to the
    /// script's `KEYS`.
    fn keys(&self, i: usize, call: &mut Call);

    /// Appends the arguments that come before every entry's.
    fn header(&self, _call: &mut Call) {}

    /// Appends entry `i`'s arguments (never a key).
    fn entry(&self, i: usize, call: &mut Call);

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
/// length; see [`invoke_pipelined`]). One result per call, one reply
/// element per entry; `Err` when a pipeline got no reply.
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
    let scripts: Vec<Call> = calls.iter().map(|indices| call(batch, indices)).collect();
    let replies = invoke_pipelined(&scripts, send).await?;
    Ok(calls
        .iter()
        .zip(replies)
        .map(|(call, reply)| entries::<B>(call, reply))
        .collect())
}

/// The script call of `batch` carrying the entries `indices`: every
/// entry's keys, then the header, then every entry's arguments.
fn call<B: Batch>(batch: &B, indices: &[usize]) -> Call {
    let mut call = batch.script().call();
    for &i in indices {
        batch.keys(i, &mut call);
    }
    batch.header(&mut call);
    for &i in indices {
        batch.entry(i, &mut call);
    }
    call
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

    fn script(&self) -> &'static Script {
        &GET_MANY
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn slot_key(&self, i: usize) -> &str {
        &self.keys[i]
    }

    fn keys(&self, i: usize, call: &mut Call) {
        call.key(&self.keys[i]);
    }

    fn entry(&self, _i: usize, _call: &mut Call) {}

    fn single(&self, i: usize) -> BoxFuture<'_, Result<Self::Out>> {
        Box::pin(async move {
            self.backend
                .query(redis::cmd("GET").arg(&self.keys[i]), Op::GetMany, None)
                .await
        })
    }
}
