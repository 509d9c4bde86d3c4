//! The connection under a [`RedisBackend`](super::RedisBackend): one server
//! or a whole Redis Cluster, behind one redis-rs `ConnectionLike`, so every
//! command that means the same on both (GET, SET, MGET, INCRBY, scripts on
//! one key) is written once.
//!
//! In a cluster, redis-rs routes each command by its key's slot, follows
//! `MOVED`/`ASK` redirections, refreshes its slot map when a node fails
//! over, and splits multi-key commands (MGET, UNLINK) by slot and puts the
//! answers back in the order of the keys. The cluster connection is
//! replaced when it stops answering (see [`handle`](super::cluster::handle)).

#[cfg(feature = "redis-cluster")]
use super::cluster::handle::ClusterHandle;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A multiplexed connection to one server, or to every node of a cluster.
/// Cheap to clone: clones share the underlying connections.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server; reconnects by itself.
    Node(ConnectionManager),
    /// A Redis Cluster: a connection per node, routed by slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(ClusterHandle),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(node) => node.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => {
                Box::pin(cluster.run(move |mut cluster| async move { cluster.req_packed_command(cmd).await }))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(node) => node.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => Box::pin(
                cluster
                    .run(move |mut cluster| async move { cluster.req_packed_commands(pipeline, offset, count).await }),
            ),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(node) => node.get_db(),
            #[cfg(feature = "redis-cluster")]
            // A cluster has database 0 only.
            Connection::Cluster(_) => 0,
        }
    }
}
