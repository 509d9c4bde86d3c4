//! A [`Batch`] on a cluster: its entries grouped by the slot of each key
//! (a script may only declare keys of one slot), each slot's entries cut
//! into calls of at most [`MAX_KEYS_PER_COMMAND`], the calls of each node
//! (from the cached [`SlotMap`]) sent to it as one pipeline: one request
//! per node, the nodes concurrently, the replies put back in entry order.
//!
//! When a node refuses its script because the map is stale (a key it does
//! not serve, `MOVED`/`ASK`, the cluster down, no connection to that
//! address, the connection lost), the map is read again and that node's
//! entries are regrouped and sent once more. What still fails then (a slot
//! in the middle of a migration, a failover not finished) takes the
//! single-key steps, routed and redirected by redis-rs (see
//! [`one_by_one`](RedisBackend::one_by_one)): a topology change costs
//! round trips, never a wrong answer. Any other error fails the batch.
//!
//! Sending entries again is safe: a refused script wrote nothing (the
//! writing scripts probe their keys first, see
//! [`lock_batches`](crate::redis::lock_batches)). Only a connection lost after a script
//! ran hides what it did; then a lock sent again reports the lock its
//! token already holds as taken, and a settlement sent again finds its
//! lock released: no second store, and its waiters were already told.

use std::collections::HashMap;

use futures_util::future::join_all;

use redis::cluster_routing::{SingleNodeRoutingInfo, Slot};
use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::handle::ClusterHandle;
use super::slots::SlotMap;
use crate::backend::MAX_KEYS_PER_COMMAND;
use crate::error::{Error, Result};
use crate::redis::RedisBackend;
use crate::redis::batch::{Batch, pipelined};
use crate::redis::connection::Limits;

impl RedisBackend {
    /// Runs `batch` on `cluster`, one script call per slot and chunk (see
    /// the module docs).
    pub(in crate::redis) async fn run_per_node<B: Batch>(
        &self,
        cluster: &ClusterHandle,
        batch: &B,
    ) -> Result<Vec<B::Out>> {
        let mut replies: Vec<Option<B::Out>> = (0..batch.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        // Every request to the cluster is bounded as `Connection` bounds
        // its own (see `connection`).
        let limits = self.connection.limits();
        let mut map = limits.bounded(0, self.slots.get(cluster)).await;
        for attempt in 0..2 {
            let Ok(current) = &map else { break };
            let (nodes, unknown) = group(current, batch, &pending);
            let sent = join_all(
                nodes
                    .iter()
                    .map(|(node, calls)| run_on(cluster, limits, current.node(*node), batch, calls)),
            )
            .await;
            pending = unknown;
            for ((_, calls), sent) in nodes.into_iter().zip(sent) {
                let sent = match sent {
                    Ok(sent) => sent,
                    // The node could not be asked at all: every call of it.
                    Err(e) => calls.iter().map(|_| Err(e.clone())).collect(),
                };
                for (indices, sent) in calls.into_iter().zip(sent) {
                    match sent {
                        Ok(values) => place(&mut replies, &indices, values),
                        Err(e) if is_stale(&e) => {
                            tracing::debug!(error = %e, entries = indices.len(), "batch refused by a node");
                            pending.extend(indices);
                        }
                        Err(e) => return Err(Error::backend(self.provider, B::OP, None, e)),
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            if attempt == 0 {
                map = limits.bounded(0, self.slots.refresh(cluster, current)).await;
            }
        }
        if let Err(e) = &map {
            tracing::debug!(error = %e, "no slot map; batch key by key");
        }
        if !pending.is_empty() {
            tracing::debug!(entries = pending.len(), "batch entries on the key-by-key path");
            self.one_by_one(batch, &pending, &mut replies).await?;
        }
        replies
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::backend(self.provider, B::OP, None, "a batch entry got no reply"))
    }

    /// The entries `indices` by their single-key steps, concurrently;
    /// then, one at a time, those that met a redirection redis-rs could
    /// not follow. It follows `ASK` by sending `ASKING` and then the
    /// command on the target's multiplexed connection, and concurrent
    /// redirections to one node interleave there (the second command
    /// finds the flag spent and is sent back): one at a time, they don't.
    async fn one_by_one<B: Batch>(&self, batch: &B, indices: &[usize], replies: &mut [Option<B::Out>]) -> Result<()> {
        let first = join_all(indices.iter().map(|&i| batch.single(i))).await;
        let mut again = Vec::new();
        for (&i, reply) in indices.iter().zip(first) {
            match reply {
                Ok(value) => replies[i] = Some(value),
                Err(e) if redirected(&e) => again.push(i),
                Err(e) => return Err(e),
            }
        }
        for i in again {
            replies[i] = Some(batch.single(i).await?);
        }
        Ok(())
    }
}

/// Whether `error` is a redirection (`ASK`, `MOVED`, `TRYAGAIN`) that
/// redis-rs gave up following.
fn redirected(error: &Error) -> bool {
    let Error::Backend { source, .. } = error else {
        return false;
    };
    source.downcast_ref::<RedisError>().is_some_and(|e| {
        matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::Moved | ServerErrorKind::TryAgain)
        )
    })
}

/// A node (its index in the [`SlotMap`]) and its script calls, each the
/// entries it carries.
type NodeCalls = (usize, Vec<Vec<usize>>);

/// The script calls of the entries `indices`, by node: `(node, calls)`,
/// each call's entries of one slot and at most [`MAX_KEYS_PER_COMMAND`],
/// in node order; and the entries whose slot the map does not know.
fn group<B: Batch>(map: &SlotMap, batch: &B, indices: &[usize]) -> (Vec<NodeCalls>, Vec<usize>) {
    let mut by_slot: HashMap<Slot, (usize, Vec<usize>)> = HashMap::new();
    let mut unknown = Vec::new();
    for &i in indices {
        let key = batch.slot_key(i);
        match map.node_of(key) {
            Some(node) => by_slot
                .entry(Slot::for_key(key))
                .or_insert((node, Vec::new()))
                .1
                .push(i),
            None => unknown.push(i),
        }
    }
    let mut calls: Vec<(usize, Vec<usize>)> = by_slot
        .into_values()
        .flat_map(|(node, entries)| {
            entries
                .chunks(MAX_KEYS_PER_COMMAND)
                .map(|chunk| (node, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    calls.sort_by_key(|(node, entries)| (*node, entries[0]));
    let mut nodes: Vec<NodeCalls> = Vec::new();
    for (node, entries) in calls {
        match nodes.last_mut() {
            Some((last, calls)) if *last == node => calls.push(entries),
            _ => nodes.push((node, vec![entries])),
        }
    }
    (nodes, unknown)
}

/// The script calls `calls` of `batch` as one pipeline routed to the node
/// at `addr`: one result per call. `Err` when the node could not be asked.
async fn run_on<B: Batch>(
    cluster: &ClusterHandle,
    limits: Limits,
    (host, port): &(String, u16),
    batch: &B,
    calls: &[Vec<usize>],
) -> redis::RedisResult<Vec<redis::RedisResult<Vec<B::Out>>>> {
    let node = SingleNodeRoutingInfo::ByAddress {
        host: host.clone(),
        port: *port,
    };
    pipelined(batch, calls, |pipe, count| {
        let node = node.clone();
        async move {
            let sent = limits.check(pipe.cmd_iter())?;
            let routed =
                cluster.run(move |mut cluster| async move { cluster.route_pipeline(pipe, 0, count, node).await });
            limits.bounded(sent, routed).await
        }
    })
    .await
}

/// Puts `values` (one per entry of `indices`) at their entries' places.
fn place<T>(replies: &mut [Option<T>], indices: &[usize], values: Vec<T>) {
    for (&i, value) in indices.iter().zip(values) {
        replies[i] = Some(value);
    }
}

/// Whether `error` says the node is not (or no longer) the one serving
/// the batch's keys, or cannot be reached: worth a fresh map and a retry.
fn is_stale(error: &RedisError) -> bool {
    let topology = matches!(
        error.kind(),
        ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
    );
    topology
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error
            .detail()
            .is_some_and(|detail| detail.contains("non local key") || detail.contains("cluster is down"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error redis-rs makes of a server's error reply `line`.
    fn reply(line: &str) -> RedisError {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn refusals_of_a_stale_map_are_told_from_other_errors() {
        for stale in [
            "ERR Script attempted to access a non local key in a cluster node script: abc, on @user_script:2.",
            "ERR Script attempted to execute a command while the cluster is down",
            "MOVED 3300 127.0.0.1:7001",
            "ASK 3300 127.0.0.1:7001",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
        ] {
            assert!(is_stale(&reply(stale)), "{stale}");
        }
        for other in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "NOSCRIPT No matching script. Please use EVAL.",
            "ERR user_script:1: Script attempted to call an unknown command",
        ] {
            assert!(!is_stale(&reply(other)), "{other}");
        }
    }

    #[test]
    fn only_redirections_are_sent_again_one_at_a_time() {
        let backend = |line: &str| Error::backend("redis-cluster", crate::Op::Lock, Some("k"), reply(line));
        assert!(redirected(&backend("ASK 3300 127.0.0.1:7001")));
        assert!(redirected(&backend(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        )));
        assert!(!redirected(&backend(
            "OOM command not allowed when used memory > 'maxmemory'."
        )));
        assert!(!redirected(&Error::backend(
            "redis-cluster",
            crate::Op::Lock,
            None,
            "io"
        )));
    }
}
