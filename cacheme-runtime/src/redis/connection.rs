//! The connection under a [`RedisBackend`](super::RedisBackend): one server
//! or a whole Redis Cluster, behind one redis-rs `ConnectionLike`, so every
//! command that means the same on both (GET, SET, MGET, INCRBY, scripts on
//! one key) is written once.
//!
//! In a cluster, redis-rs routes each command by its key's slot, follows
//! `MOVED`/`ASK` redirections, refreshes its slot map when a node's
//! connection breaks, and splits multi-key commands (MGET, UNLINK) by slot
//! and puts the answers back in the order of the keys. The cluster
//! connection is replaced, and the slot map read afresh, when its calls go
//! unanswered (a frozen master failed over, a wedged connection: see
//! [`handle`](super::cluster::handle)).
//! One command skips redis-rs's generic `query_async` and this type's
//! `ConnectionLike`, on both deployments: `GET`, the typed hit path's read
//! ([`Link::direct`]). On one server it goes straight to the
//! `ConnectionManager` (reconnecting as every command does); on a cluster
//! to its slot's node ([`Bounded::routed`]). Both are held to the same
//! [`Limits`] through the same function ([`Limits::sending`]), and spare
//! each get a clone of the connection and two boxed futures (and on a
//! cluster a copy of the command).
//!
//! Every command sent through a [`Connection`] is bounded here, the same
//! way on both deployments ([`Limits`]):
//!
//! - an argument larger than `maxValueSize` is refused before anything is
//!   sent (Redis would refuse it and close the connection, failing the
//!   commands of every other caller on it). Unless configured, the limit
//!   is one server's own `proto-max-bulk-len`, asked when connecting, or
//!   Redis's default 512 MiB on a cluster or when the server does not say;
//! - the reply must arrive within `timeout` plus the time what the command
//!   sends takes at [`TRANSFER_RATE`](crate::config::TRANSFER_RATE)
//!   ([`scaled_timeout`]). A command that runs out of time fails with an
//!   I/O "timed out" error; the connection stays usable: its late reply is
//!   matched to the abandoned request and dropped, so the next command
//!   gets its own reply.
//!
//! On one server, the `ConnectionManager` makes a single attempt when it
//! reconnects (no backoff; see `RedisBackend::from_config`), so a call
//! while the server is down fails at once instead of spending its time
//! limit waiting on retries. A call that meets a refused connection is
//! sent once more ([`Bounded::on_node`]): the refusal may be that of an
//! attempt made while the server was down, and the manager starts a new
//! one as it returns it; nothing was sent, so nothing runs twice.
//!
//! A backend opened with [`ConnectMode::Lazy`](crate::ConnectMode::Lazy)
//! may have no connection yet ([`Lazy`]): then every command fails at once
//! with the reason, without touching the network, until the background
//! task has connected.

use std::borrow::Borrow;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

#[cfg(feature = "redis-cluster")]
use super::cluster::handle::ClusterHandle;
pub(crate) use super::config::Limits;
use crate::config::scaled_timeout;
use crate::connect::Lazy;

/// A multiplexed connection to one server, or to every node of a cluster.
/// Cheap to clone: clones share the underlying connections.
#[derive(Clone)]
pub(crate) enum Link {
    /// One server; reconnects by itself.
    Node(Bounded<ConnectionManager>),
    /// A Redis Cluster: a connection per node, routed by slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(Bounded<ClusterHandle>),
}

/// A redis-rs connection and the [`Limits`] its commands are held to when
/// sent through [`Connection`]. Dereferences to the connection, for the
/// cluster's routed commands, which apply the limits with
/// [`Limits::bounded`].
#[derive(Clone)]
pub(crate) struct Bounded<C> {
    inner: C,
    pub(crate) limits: Limits,
}

impl<C> Bounded<C> {
    pub(crate) fn new(inner: C, limits: Limits) -> Self {
        Bounded { inner, limits }
    }
}

impl Bounded<ConnectionManager> {
    /// `send` on a clone of the manager, and once more if it met a refused
    /// connection (see the module docs): the manager's last reconnection
    /// attempt may have been made while the server was down, and it
    /// starts a new one as it returns that refusal. A refused connection
    /// sent nothing, so no command runs twice; on a server still down the
    /// second attempt is refused at once too.
    async fn on_node<T, Fut>(&self, send: impl Fn(ConnectionManager) -> Fut) -> RedisResult<T>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        match send(self.inner.clone()).await {
            Err(e) if e.is_connection_refusal() => send(self.inner.clone()).await,
            sent => sent,
        }
    }
}

impl<C> Deref for Bounded<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.inner
    }
}

impl<C> DerefMut for Bounded<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.inner
    }
}

impl Link {
    /// The limits every command on this link is held to.
    pub(crate) fn limits(&self) -> Limits {
        match self {
            Link::Node(node) => node.limits,
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => cluster.limits,
        }
    }
}

impl Limits {
    /// The bytes `commands` send, plus an allowance of one millisecond of
    /// transfer per command (a pipeline of thousands of script calls, each
    /// over hundreds of keys, keeps the server busy for a while), or a "too
    /// large" error naming the first argument over `max_value_size`.
    pub(crate) fn check<'c>(&self, commands: impl IntoIterator<Item = &'c Cmd>) -> RedisResult<usize> {
        const PER_COMMAND: usize = (crate::config::TRANSFER_RATE / 1000) as usize;
        let mut total = 0usize;
        for cmd in commands {
            total = total.saturating_add(PER_COMMAND);
            for arg in cmd.args_iter() {
                if let Arg::Simple(bytes) = arg {
                    if bytes.len() as u64 > self.max_value_size {
                        return Err(too_large(bytes.len(), self.max_value_size));
                    }
                    total = total.saturating_add(bytes.len());
                }
            }
        }
        Ok(total)
    }

    /// One command sent by `send`, under these limits: refused before it
    /// is sent when an argument is over `max_value_size`
    /// ([`check`](Self::check)), failed when its reply does not come in
    /// time ([`bounded`](Self::bounded)). `cmd` is handed to `send`, owned
    /// or borrowed as `send` needs it. Every single command a [`Link`]
    /// sends goes through here, through redis-rs's `ConnectionLike` or
    /// directly ([`Link::direct`]).
    pub(crate) async fn sending<C, T, Fut>(&self, cmd: C, send: impl FnOnce(C) -> Fut) -> RedisResult<T>
    where
        C: Borrow<Cmd>,
        Fut: Future<Output = RedisResult<T>>,
    {
        let sent = self.check([cmd.borrow()])?;
        self.bounded(sent, send(cmd)).await
    }

    /// `command` (which sends `sent` bytes), failed with a "timed out" I/O
    /// error when it takes longer than [`scaled_timeout`] allows.
    pub(crate) async fn bounded<T>(
        &self,
        sent: usize,
        command: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let limit = scaled_timeout(self.timeout, sent);
        tokio::time::timeout(limit, command)
            .await
            .unwrap_or_else(|_| Err(timed_out("no reply", limit)))
    }

    /// These limits with `max_value_size` set to the server's
    /// `proto-max-bulk-len` (`CONFIG GET`), so a value the server would
    /// refuse by closing the connection is refused before it is sent. A
    /// server that does not say (`CONFIG` renamed or not allowed, as on
    /// many managed services) keeps the configured limit.
    pub(crate) async fn with_server_limit(self, connection: &mut ConnectionManager) -> Limits {
        let mut ask = redis::cmd("CONFIG");
        ask.arg("GET").arg("proto-max-bulk-len");
        let asked = self
            .bounded(0, ask.query_async::<std::collections::HashMap<String, u64>>(connection))
            .await;
        match asked.map(|reply| reply.get("proto-max-bulk-len").copied()) {
            Ok(Some(limit)) => Limits {
                max_value_size: limit,
                ..self
            },
            Ok(None) => self,
            Err(e) => {
                tracing::debug!(error = %e, "the server did not give its proto-max-bulk-len; keeping maxValueSize");
                self
            }
        }
    }

    /// Opening a connection (`connecting`), failed with a "timed out" I/O
    /// error after `connect_timeout`, whatever redis-rs retries inside.
    pub(crate) async fn connecting<T>(&self, connecting: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or_else(|_| Err(timed_out("no connection", self.connect_timeout)))
    }
}

fn timed_out(what: &str, limit: Duration) -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} within {limit:?} (the timeout; see the redis provider's `timeout` and `connectTimeout`)"),
    )
    .into()
}

fn too_large(size: usize, limit: u64) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "value too large",
        format!("an argument of {size} bytes is over the limit of {limit} bytes (maxValueSize); nothing was sent"),
    ))
}

/// The backend's [`Link`], once connected. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    /// The configured limits, for the time before the link exists.
    limits: Limits,
    lazy: Lazy<Link>,
    /// This clone's copy of the link, taken on its first command.
    link: Option<Link>,
    /// The database (always 0 on a cluster), known before connecting.
    db: i64,
}

impl Connection {
    /// A connection that `lazy` will hold once connected, to database `db`,
    /// configured with `limits` (the link may refine them, see
    /// [`Limits::with_server_limit`]).
    pub(crate) fn new(lazy: Lazy<Link>, db: i64, limits: Limits) -> Self {
        Connection {
            limits,
            lazy,
            link: None,
            db,
        }
    }

    /// The limits every command is held to: the link's once connected.
    pub(crate) fn limits(&self) -> Limits {
        self.lazy.get().map_or(self.limits, Link::limits)
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

impl Link {
    /// `cmd`, a command on one key (its first argument), sent straight to
    /// the connection that serves that key, under the same [`Limits`] as
    /// every command sent through [`Connection`]; a reply that is an error
    /// is returned as the error. On one server that is
    /// `ConnectionManager::send_packed_command` (its reconnecting
    /// included); on a cluster the node of the key's slot, a replica when
    /// `read` and the cluster reads from replicas
    /// ([`routed`](Bounded::routed)).
    ///
    /// The typed hit path's GET: redis-rs's `query_async` through
    /// [`Connection`] costs a clone of the connection and two boxed
    /// futures per call (on a cluster also a copy of the command), about a
    /// tenth of a warm get on one server under 100 concurrent tasks
    /// (BENCHMARKS.md).
    pub(crate) async fn direct(&self, cmd: Cmd, read: bool) -> RedisResult<Value> {
        let reply = match self {
            Link::Node(node) => {
                node.limits
                    .sending(cmd, |cmd| async move {
                        node.on_node(|mut manager| {
                            let cmd = &cmd;
                            async move { manager.send_packed_command(cmd).await }
                        })
                        .await
                    })
                    .await
            }
            #[cfg(feature = "redis-cluster")]
            Link::Cluster(cluster) => cluster.routed(cmd, read).await,
        };
        #[cfg(not(feature = "redis-cluster"))]
        let _ = read;
        reply?.extract_error()
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
        let limits = self.limits();
        Box::pin(async move {
            let send = move |cmd| async move {
                match self {
                    Link::Node(node) => {
                        node.on_node(|mut manager| async move { manager.req_packed_command(cmd).await })
                            .await
                    }
                    #[cfg(feature = "redis-cluster")]
                    Link::Cluster(cluster) => {
                        cluster
                            .inner
                            .run(move |mut cluster| async move { cluster.req_packed_command(cmd).await })
                            .await
                    }
                }
            };
            limits.sending(cmd, send).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let limits = self.limits();
        Box::pin(async move {
            let sent = limits.check(pipeline.cmd_iter())?;
            let replies: RedisFuture<'_, Vec<Value>> =
                match self {
                    Link::Node(node) => Box::pin(node.on_node(move |mut manager| async move {
                        manager.req_packed_commands(pipeline, offset, count).await
                    })),
                    #[cfg(feature = "redis-cluster")]
                    Link::Cluster(cluster) => Box::pin(cluster.inner.run(move |mut cluster| async move {
                        cluster.req_packed_commands(pipeline, offset, count).await
                    })),
                };
            limits.bounded(sent, replies).await
        })
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(node) => node.inner.get_db(),
            #[cfg(feature = "redis-cluster")]
            // A cluster has database 0 only.
            Link::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            max_value_size: 1024,
        }
    }

    #[test]
    fn arguments_over_the_limit_are_refused_and_the_rest_counted() {
        let mut fits = redis::cmd("SET");
        fits.arg("k").arg(vec![0u8; 1024]);
        assert_eq!(limits().check([&fits]).unwrap(), 32 * 1024 * 1024 / 1000 + 3 + 1 + 1024);
        let mut over = redis::cmd("SET");
        over.arg("k").arg(vec![0u8; 1025]);
        let err = limits().check([&fits, &over]).unwrap_err();
        assert!(
            err.to_string().contains("too large") && err.to_string().contains("1025 bytes"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_runs_out_of_time_scaled_by_what_it_sends() {
        let never = std::future::pending::<RedisResult<()>>;
        let started = tokio::time::Instant::now();
        let err = limits().bounded(0, never()).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        let started = tokio::time::Instant::now();
        limits().bounded(64 << 20, never()).await.unwrap_err();
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(2500),
            "500 ms + 64 MiB at 32 MiB/s"
        );
    }
}
