//! Which master serves each hash slot, for batches that send one script
//! per node (redis-rs keeps a map of its own but does not expose it).
//!
//! - The map is read with `CLUSTER SLOTS` on the first batch that needs
//!   it and then kept, shared by every clone of the backend: a batch costs
//!   no extra round trip while the topology holds still.
//! - It is re-read when a routed script says it is wrong or its node
//!   cannot be reached (see [`per_node`](super::per_node)), and after the
//!   connection was replaced (see [`handle`](super::handle)); concurrent
//!   batches that hit the same stale map re-read it once between them.
//! - A slot the map does not know (a node without an address, a slot not
//!   served) belongs to no node: its keys take the slow, always-correct
//!   path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{RedisError, RedisResult, Value};

use super::handle::ClusterHandle;

/// One reading of the cluster's slot assignment.
#[derive(Debug)]
pub(in crate::redis) struct SlotMap {
    /// The masters, as `(host, port)` in the form redis-rs names them.
    nodes: Vec<(String, u16)>,
    /// Slot -> index into `nodes`.
    owners: HashMap<Slot, usize>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, ..],
    /// replicas..]` per range.
    fn parse(reply: Value) -> RedisResult<SlotMap> {
        let ranges: Vec<Vec<Value>> = redis::from_redis_value(reply)?;
        let mut map = SlotMap {
            nodes: Vec::new(),
            owners: HashMap::with_capacity(16384),
        };
        for range in ranges {
            let mut fields = range.into_iter();
            let (Some(start), Some(end), Some(master)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(unexpected("a slot range without a master"));
            };
            let (start, end): (u16, u16) = (redis::from_redis_value(start)?, redis::from_redis_value(end)?);
            let master: Vec<Value> = redis::from_redis_value(master)?;
            let mut master = master.into_iter();
            let (Some(host), Some(port)) = (master.next(), master.next()) else {
                return Err(unexpected("a master without host and port"));
            };
            let (host, port): (String, u16) = (redis::from_redis_value(host)?, redis::from_redis_value(port)?);
            // "" or "?": the node does not know its own address; leave its
            // slots unknown rather than guess.
            if host.is_empty() || host == "?" {
                continue;
            }
            let node = match map.nodes.iter().position(|n| n.0 == host && n.1 == port) {
                Some(node) => node,
                None => {
                    map.nodes.push((host, port));
                    map.nodes.len() - 1
                }
            };
            for slot in start..=end {
                let slot = Slot::new(slot).ok_or_else(|| unexpected("slots below 16384"))?;
                map.owners.insert(slot, node);
            }
        }
        Ok(map)
    }

    /// The index of the node serving `key`'s slot (hash tags honoured),
    /// `None` when the map does not know it.
    pub(in crate::redis) fn node_of(&self, key: &str) -> Option<usize> {
        self.owners.get(&Slot::for_key(key)).copied()
    }

    /// `(host, port)` of the node at `index`.
    pub(in crate::redis) fn node(&self, index: usize) -> &(String, u16) {
        &self.nodes[index]
    }

    /// How many nodes serve slots.
    pub(in crate::redis) fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// A map and the connection generation it was read through.
type ReadOn = (u64, Arc<SlotMap>);

/// The backend's cached [`SlotMap`]; cheap to clone, clones share it.
#[derive(Clone, Default)]
pub(in crate::redis) struct Slots {
    /// The map and the [generation](ClusterHandle::generation) of the
    /// connection it was read through.
    current: Arc<Mutex<Option<ReadOn>>>,
    /// Held while re-reading, so concurrent refreshes read once.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl Slots {
    /// The map, read from the cluster on first use, and again once the
    /// connection was replaced (a wedged connection is replaced after a
    /// failover, when the map is likely stale too).
    pub(in crate::redis) async fn get(&self, cluster: &ClusterHandle) -> RedisResult<Arc<SlotMap>> {
        if let Some(map) = self.cached(cluster) {
            return Ok(map);
        }
        let _reading = self.refreshing.lock().await;
        if let Some(map) = self.cached(cluster) {
            return Ok(map);
        }
        self.read(cluster).await
    }

    /// A map newer than `stale`: re-read from the cluster, unless another
    /// batch has already replaced `stale` meanwhile.
    pub(in crate::redis) async fn refresh(
        &self,
        cluster: &ClusterHandle,
        stale: &Arc<SlotMap>,
    ) -> RedisResult<Arc<SlotMap>> {
        let _reading = self.refreshing.lock().await;
        match self.cached(cluster) {
            Some(map) if !Arc::ptr_eq(&map, stale) => Ok(map),
            _ => self.read(cluster).await,
        }
    }

    /// The cached map, if read through the connection in use.
    fn cached(&self, cluster: &ClusterHandle) -> Option<Arc<SlotMap>> {
        let generation = cluster.generation();
        match &*self.current.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((read_on, map)) if *read_on == generation => Some(Arc::clone(map)),
            _ => None,
        }
    }

    async fn read(&self, cluster: &ClusterHandle) -> RedisResult<Arc<SlotMap>> {
        let generation = cluster.generation();
        let reply = cluster
            .run(|mut cluster| async move {
                cluster
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await
            })
            .await?
            .extract_error()?;
        let map = Arc::new(SlotMap::parse(reply)?);
        tracing::debug!(nodes = map.len(), "read the cluster's slot map");
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, Arc::clone(&map)));
        Ok(map)
    }
}

fn unexpected(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "unexpected CLUSTER SLOTS reply",
        format!("expected {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, master: Value) -> Value {
        Value::Array(vec![Value::Int(start), Value::Int(end), master])
    }

    #[test]
    fn keys_map_to_the_master_of_their_slot() {
        // "a" hashes to 15495, "b" to 3300; {b}x shares b's slot.
        let reply = Value::Array(vec![
            range(0, 8191, node("127.0.0.1", 7000)),
            range(8192, 16000, node("127.0.0.1", 7001)),
            range(16001, 16383, node("?", 7002)),
        ]);
        let map = SlotMap::parse(reply).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map.node(map.node_of("b").unwrap()), &("127.0.0.1".to_owned(), 7000));
        assert_eq!(map.node_of("{b}x"), map.node_of("b"));
        assert_eq!(map.node(map.node_of("a").unwrap()), &("127.0.0.1".to_owned(), 7001));
        let unknown = (0..).map(|i| format!("k{i}")).find(|k| map.node_of(k).is_none());
        assert!(unknown.is_some(), "slots of a node without an address are unknown");
    }

    #[test]
    fn a_malformed_reply_is_an_error() {
        assert!(SlotMap::parse(Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_err());
        assert!(SlotMap::parse(Value::Int(3)).is_err());
    }
}
