//! The redis backend on a Redis Cluster (provider `redis-cluster`).
//!
//! - The connection is redis-rs's async `ClusterConnection`: one
//!   multiplexed connection per node, commands routed by their key's slot.
//!   It follows `MOVED`/`ASK`, and when a node stops answering it refreshes
//!   its slot map and retries (a few times, a few seconds at most), so after
//!   a failover the same client serves the promoted replica without being
//!   rebuilt.
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
pub(super) mod per_node;
pub(super) mod slots;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisError, Value};

use super::connection::{Bounded, Link};
use super::notify::{Notifier, PushConnection};
use super::{Opening, RedisBackend, checked};
use crate::backend::KeyFilter;
use crate::config::ProviderConfig;
use crate::connect::ConnectMode;
use crate::error::{Error, Op, Result};

const PROVIDER: &str = "redis-cluster";

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
                .connection_timeout(limits.connect_timeout)
                // Per attempt, so redis-rs sees a node that stopped
                // answering and refreshes its slot map. The whole call,
                // retries included, is bounded by `Connection` (or
                // `Limits::bounded` for routed commands) to `timeout` plus
                // what its size adds; a retry fits when an attempt failed
                // fast (MOVED, a refused connection).
                .response_timeout(limits.timeout)
                .overall_response_timeout(None)
                .retries(12)
                .min_retry_wait(20)
                .max_retry_wait(1000);
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
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes_in)
            .build()
            .map_err(|source| Error::Connect {
                provider: PROVIDER,
                address: settings.address.clone(),
                source: source.into(),
            })?;
        let notifier = Notifier::new(
            Box::new(move || {
                let client = push_client.clone();
                Box::pin(async move { Ok(PushConnection::Cluster(client.get_async_connection().await?)) })
            }),
            pushes,
        );
        let main = builder(settings.seeds.clone())
            .build()
            .map_err(|source| Error::Connect {
                provider: PROVIDER,
                address: settings.address.clone(),
                source: source.into(),
            })?;
        let connecting = checked(move || {
            let main = main.clone();
            async move {
                let cluster = limits.connecting(main.get_async_connection()).await?;
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
        cluster: &ClusterConnection,
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
                    let mut cluster = cluster.clone();
                    let node = node.clone();
                    async move {
                        let page = limits.bounded(0, cluster.route_command(scan, node)).await?;
                        Ok(redis::from_redis_value(page)?)
                    }
                })
                .await?;
        }
        Ok(removed)
    }
}

impl RedisBackend {
    /// The `INFO section` report of every master.
    pub(super) async fn info_of_masters(&self, cluster: &ClusterConnection, section: &str) -> Result<Vec<String>> {
        let mut reports = Vec::new();
        let limits = self.connection.limits();
        let nodes = limits
            .bounded(0, masters(cluster))
            .await
            .map_err(|e| Error::backend(self.provider, Op::MemoryUsed, None, e))?;
        for (host, port) in nodes {
            let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut cluster = cluster.clone();
            let report = async {
                let info = cluster.route_command(redis::cmd("INFO").arg(section).clone(), node);
                let reply = limits.bounded(0, info).await?;
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
async fn masters(cluster: &ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let mut cluster = cluster.clone();
    let all_masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let replies = cluster.route_command(redis::cmd("PING"), all_masters).await?;
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
