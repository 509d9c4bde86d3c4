//! The redis backend on a Redis Cluster (provider `redis-cluster`).
//!
//! - The connection is redis-rs's async `ClusterConnection`: one
//!   multiplexed connection per node, commands routed by their key's slot.
//!   It follows `MOVED`/`ASK`, and when a node's connection breaks it
//!   refreshes its slot map and retries within the call's time limits
//!   (below), so after a failover the same client serves the promoted
//!   replica without being rebuilt. A connection whose calls go
//!   unanswered (a master frozen, then failed over; a redis-rs deadlock
//!   after a master dies under load) is replaced by a new one, which
//!   reads the slot map afresh, within a few seconds ([`handle`]).
//! - Time limits: `connectTimeout` (at most [`CONNECT_TIMEOUT`]) to connect
//!   to a node, and the provider's `timeout` plus what the command's size
//!   adds for a whole call with its retries and redirections
//!   (`Limits::bounded`, around every call). A
//!   call to the slots of a dead master fails after that until its replica
//!   takes over (the cluster's `cluster-node-timeout` plus an election).
//! - `get_many` and the stampede batch steps are one script per node, sent
//!   concurrently, whatever the number of keys ([`per_node`], with a slot
//!   map of our own, [`slots`]).
//! - `clear` asks every master (as the client's slot map knows them) to
//!   `SCAN MATCH prefix:*` and `UNLINK`s what each finds; keys of other
//!   prefixes stay, and keys with hash tags (`{user:1}:a`) are found too,
//!   whichever slot they hash to.
//! - Redis Cluster has database 0 only; a config asking for another is an
//!   error rather than silently shared keys.
//!
//! # Key scheme
//!
//! A key is stored as `prefix:key` and hashed by Redis as usual: a `{tag}`
//! inside the key picks its slot. Stampede protection keeps a
//! value, its lock and its notification channel on one slot by wrapping
//! the cache key in a hash tag, e.g. `prefix:{key}`, `prefix:{key}:lock`
//! and the sharded channel `prefix:{key}:done` (`SPUBLISH`), so "store the
//! value, release the lock if the token is ours, notify" is one Lua script
//! on one node. The key passed to a backend method is always one slot's
//! business: `set_if_absent` is `SET NX PX` and `delete_if_equals` a
//! one-key script, both routed by that key.

mod config;
pub(super) mod handle;
pub(super) mod per_node;
pub(super) mod slots;

use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_routing::{MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{RedisError, RedisResult, Value};

use self::handle::ClusterHandle;
use super::connection::{Bounded, Link};
use super::notify::{Notifier, PushConnection};
use super::{Opening, RedisBackend, checked};
use crate::backend::KeyFilter;
use crate::config::ProviderConfig;
use crate::connect::ConnectMode;
use crate::error::{Error, Op, Result};

const PROVIDER: &str = "redis-cluster";

/// How long connecting to one node (TCP and handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The error of a client that cannot even be built for `address`.
fn cannot_connect(address: &str, source: RedisError) -> Error {
    Error::Connect {
        provider: PROVIDER,
        address: address.to_owned(),
        source: source.into(),
    }
}

impl RedisBackend {
    /// Connects to a Redis Cluster (provider `redis-cluster`): redis-rs
    /// learns the cluster's nodes and slots from the first seed node that
    /// answers.
    ///
    /// Beego-style JSON: `{"key":"app","conn":["h1:7000","h2:7001"],"password":"...","user":"..."}`,
    /// where `conn` may also be one string separated by `,` or `;`. URL:
    /// `redis-cluster://[user][:password@]h1:7000,h2:7001[?prefix=app]`.
    /// `key`/`prefix` is the key prefix (default `cacheme`); a `dbNum` (or
    /// URL path) other than 0 is an [`Error::Config`]. No seed answering is
    /// an [`Error::Connect`] naming the seeds, unless the configuration says
    /// `connect=lazy` (see [`ConnectMode`]).
    pub async fn from_cluster_config(config: ProviderConfig) -> Result<Self> {
        let settings = config::settings(&config)?;
        let limits = settings.limits;
        let mode = ConnectMode::from_config(&config)?;
        let builder = |seeds: Vec<(String, u16)>| {
            let mut builder = ClusterClientBuilder::new(seeds)
                .connection_timeout(limits.connect_timeout.min(CONNECT_TIMEOUT))
                // No time limit of redis-rs's, per attempt or overall: every
                // call is bounded, retries and redirections included, by
                // `Limits::bounded` (the provider's `timeout` plus what its
                // size adds), so a call that cannot be served soon fails
                // rather than being retried for as long as a failover
                // takes. redis-rs's would be more timers per call (entries
                // in tokio's timer wheel for every GET), and they would
                // not help it away from a silent node: a timed-out attempt
                // is retried on the same node, the slot map is re-read
                // only on a redirection or a broken connection. The
                // handle's watchdog replaces a connection whose calls go
                // unanswered ([`handle`]).
                .overall_response_timeout(None)
                .retries(12)
                .min_retry_wait(20)
                .max_retry_wait(500);
            if let Some(user) = &settings.user {
                builder = builder.username(user);
            }
            if let Some(password) = &settings.password {
                builder = builder.password(password.expose());
            }
            builder
        };
        // Notifications: sharded pub/sub pushes (RESP3) on a cluster
        // connection of their own, made on first use.
        let (pushes_in, pushes) = tokio::sync::mpsc::unbounded_channel();
        let push_client = builder(settings.seeds.clone())
            // (Subscribing is not bounded by `Limits`: per attempt here.)
            .response_timeout(limits.timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes_in)
            .build()
            .map_err(|source| cannot_connect(&settings.address, source))?;
        let notifier = Notifier::new(
            Box::new(move || {
                let client = push_client.clone();
                Box::pin(async move { Ok(PushConnection::Cluster(client.get_async_connection().await?)) })
            }),
            pushes,
        );
        let main = builder(settings.seeds.clone())
            .build()
            .map_err(|source| cannot_connect(&settings.address, source))?;
        let connecting = checked(move || {
            let main = main.clone();
            async move {
                let cluster = limits.connecting(ClusterHandle::open(main)).await?;
                Ok(Link::Cluster(Bounded::new(cluster, limits)))
            }
        });
        let opening = Opening {
            provider: PROVIDER,
            limits,
            address: settings.address,
            mode,
            db: 0,
        };
        RedisBackend::connect(opening, &settings.prefix, notifier, connecting).await
    }

    /// `clear` on a cluster: every master scanned and cleaned in turn.
    /// [`scan_unlink`](RedisBackend::scan_unlink) on every master, each
    /// SCAN routed to its node.
    pub(super) async fn scan_cluster(
        &self,
        cluster: &ClusterHandle,
        glob: &str,
        filter: &KeyFilter<'_>,
        op: Op,
    ) -> Result<u64> {
        let mut removed = 0;
        let limits = self.connection.limits();
        let nodes = limits
            .bounded(0, masters(cluster))
            .await
            .map_err(|e| Error::backend(self.provider, op, None, e))?;
        for (host, port) in nodes {
            let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            removed += self
                .scan_node(glob, filter, op, |scan| {
                    let node = node.clone();
                    async move {
                        let page = cluster.run(|mut cluster| async move { cluster.route_command(scan, node).await });
                        let page = limits.bounded(0, page).await?;
                        Ok(redis::from_redis_value(page)?)
                    }
                })
                .await?;
        }
        Ok(removed)
    }
}

impl Bounded<ClusterHandle> {
    /// `cmd`, a command on one key (its first argument), sent straight to
    /// the node of that key's slot (a replica's when `read` and the cluster
    /// reads from replicas), under the limits of every command
    /// ([`Limits::sending`](super::connection::Limits::sending)); the
    /// cluster's part of [`Link::direct`]. redis-rs's generic
    /// `req_packed_command` clones the command and parses its name to
    /// route it.
    pub(crate) async fn routed(&self, cmd: redis::Cmd, read: bool) -> RedisResult<Value> {
        let Some(redis::Arg::Simple(key)) = cmd.args_iter().nth(1) else {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "a routed command needs a key as its first argument",
            )));
        };
        let to = if read {
            SlotAddr::ReplicaOptional
        } else {
            SlotAddr::Master
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
            Slot::for_key(key),
            to,
        )));
        self.limits
            .sending(cmd, |cmd| {
                self.run(move |mut cluster| async move { cluster.route_command(cmd, route).await })
            })
            .await
    }
}

impl RedisBackend {
    /// The `INFO section` report of every master.
    pub(super) async fn info_of_masters(&self, cluster: &ClusterHandle, section: &str) -> Result<Vec<String>> {
        let mut reports = Vec::new();
        let limits = self.connection.limits();
        let nodes = limits
            .bounded(0, masters(cluster))
            .await
            .map_err(|e| Error::backend(self.provider, Op::MemoryUsed, None, e))?;
        for (host, port) in nodes {
            let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let report = async {
                let info = redis::cmd("INFO").arg(section).clone();
                let reply = cluster.run(|mut cluster| async move { cluster.route_command(info, node).await });
                let reply = limits.bounded(0, reply).await?;
                Ok::<String, RedisError>(redis::from_redis_value(reply)?)
            };
            reports.push(
                report
                    .await
                    .map_err(|e| Error::backend(self.provider, Op::MemoryUsed, None, e))?,
            );
        }
        Ok(reports)
    }
}

/// The masters as the client's slot map knows them: a PING to all masters
/// with no response policy answers with a map from each node's
/// `host:port` to its reply.
async fn masters(cluster: &ClusterHandle) -> redis::RedisResult<Vec<(String, u16)>> {
    let all_masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let replies = cluster
        .run(|mut cluster| async move { cluster.route_command(redis::cmd("PING"), all_masters).await })
        .await?;
    let Value::Map(replies) = replies.extract_error()? else {
        return Err(unexpected("a map of node replies"));
    };
    replies
        .into_iter()
        .map(|(address, _)| {
            let address: String = redis::from_redis_value(address)?;
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                .ok_or_else(|| unexpected("node addresses as host:port"))?;
            Ok((host, port))
        })
        .collect()
}

fn unexpected(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply while listing the cluster's masters",
        format!("expected {what}"),
    ))
}
