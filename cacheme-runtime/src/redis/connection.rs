//! The connection under a [`RedisBackend`](super::RedisBackend): one server
//! or a whole Redis Cluster, behind one redis-rs `ConnectionLike`, so every
//! command that means the same on both (GET, SET, MGET, INCRBY, scripts on
//! one key) is written once.
//!
//! In a cluster, redis-rs routes each command by its key's slot, follows
//! `MOVED`/`ASK` redirections, refreshes its slot map when a node fails
//! over, and splits multi-key commands (MGET, UNLINK) by slot and puts the
//! answers back in the order of the keys.
//!
//! A backend opened with [`ConnectMode::Lazy`](crate::ConnectMode::Lazy)
//! may have no connection yet ([`Lazy`]): then every command fails at once
//! with the reason, without touching the network, until the background
//! task has connected.

use redis::aio::{ConnectionLike, ConnectionManager};
#[cfg(feature = "redis-cluster")]
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use crate::connect::Lazy;

/// A multiplexed connection to one server, or to every node of a cluster.
/// Cheap to clone: clones share the underlying connections.
#[derive(Clone)]
pub(crate) enum Link {
    /// One server; reconnects by itself.
    Node(ConnectionManager),
    /// A Redis Cluster: a connection per node, routed by slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(ClusterConnection),
}

/// The backend's [`Link`], once connected. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    lazy: Lazy<Link>,
    /// This clone's copy of the link, taken on its first command.
    link: Option<Link>,
    /// The database (always 0 on a cluster), known before connecting.
    db: i64,
}

impl Connection {
    /// A connection that `lazy` will hold once connected, to database `db`.
    pub(crate) fn new(lazy: Lazy<Link>, db: i64) -> Self {
        Connection { lazy, link: None, db }
    }

    /// The link, or the error every command gets while there is none.
    pub(crate) fn link(&self) -> Result<&Link, RedisError> {
        self.lazy.get().ok_or_else(|| self.not_connected())
    }

    fn not_connected(&self) -> RedisError {
        not_connected(&self.lazy)
    }

    /// Takes this clone's copy of the link from the shared one, once there
    /// is one.
    fn take_link(&mut self) {
        if self.link.is_none() {
            self.link = self.lazy.get().cloned();
        }
    }
}

fn not_connected(lazy: &Lazy<Link>) -> RedisError {
    RedisError::from((ErrorKind::Io, "not connected", lazy.not_connected().to_string()))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.take_link();
        match &mut self.link {
            Some(link) => link.req_packed_command(cmd),
            None => {
                let error = not_connected(&self.lazy);
                Box::pin(async move { Err(error) })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.take_link();
        match &mut self.link {
            Some(link) => link.req_packed_commands(pipeline, offset, count),
            None => {
                let error = not_connected(&self.lazy);
                Box::pin(async move { Err(error) })
            }
        }
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Node(node) => node.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Node(node) => node.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(node) => node.get_db(),
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => cluster.get_db(),
        }
    }
}
