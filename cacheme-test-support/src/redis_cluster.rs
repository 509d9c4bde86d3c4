//! A real Redis Cluster: `redis-server --cluster-enabled yes` nodes on free
//! loopback ports, each in its own temp dir, assembled with
//! `redis-cli --cluster create`, killed on drop.
//!
//! The binaries are `redis-server` and `redis-cli` from `PATH`, or
//! `$CACHEME_REDIS_SERVER` and `$CACHEME_REDIS_CLI`. A missing binary fails
//! the test loudly.
//!
//! Each node's cluster bus gets its own free port (`--cluster-port`), so
//! nothing assumes that `port + 10000` is free. The node timeout is one
//! second, so a killed master is replaced by its replica within a few
//! seconds; `--cluster-replica-validity-factor 0` lets any replica take
//! over, however long ago it last heard from its master.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use cacheme_runtime::{BoxFuture, Cache};

use crate::conformance::Fixture;
use crate::{RedisServer, free_port};

/// Every hash slot of a Redis Cluster.
const SLOTS: usize = 16384;

/// How to start a [`RedisCluster`].
#[derive(Clone, Debug)]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas: usize,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            masters: 3,
            replicas: 1,
        }
    }
}

impl RedisClusterBuilder {
    /// The number of masters (at least 3, as `redis-cli` requires).
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// The number of replicas of each master.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Starts the nodes, creates the cluster and waits (up to 30 s) until
    /// every node sees all slots served and every replica is in sync.
    pub fn start(self) -> RedisCluster {
        assert!(self.masters >= 3, "redis-cli --cluster create needs at least 3 masters");
        let count = self.masters * (1 + self.replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::builder()
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .args(["--cluster-port", &free_port().to_string()])
                    .args(["--cluster-replica-validity-factor", "0"])
                    // Replicas sync at once, not after the default 5 s wait.
                    .args(["--repl-diskless-sync-delay", "0"])
                    .start()
            })
            .collect();
        let cluster = RedisCluster { nodes };
        cluster.create(self.replicas);
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }
}

/// A running Redis Cluster owned by one test.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 masters with one replica each.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for another shape (e.g. no replicas, which is cheaper).
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// `127.0.0.1:PORT` of every running node, masters and replicas.
    pub fn addrs(&self) -> Vec<String> {
        self.running().map(RedisServer::addr).collect()
    }

    /// `127.0.0.1:PORT` of every running master, as the nodes report their
    /// role now (after a failover, a former replica is among them).
    pub fn masters(&self) -> Vec<String> {
        self.running()
            .filter(|node| role(node.port()).as_deref() == Some("master"))
            .map(RedisServer::addr)
            .collect()
    }

    /// `127.0.0.1:PORT` of every running replica.
    pub fn replicas(&self) -> Vec<String> {
        self.running()
            .filter(|node| role(node.port()).as_deref() == Some("slave"))
            .map(RedisServer::addr)
            .collect()
    }

    /// `redis-cluster://` URL listing every running node.
    pub fn url(&self) -> String {
        format!("redis-cluster://{}", self.addrs().join(","))
    }

    /// Beego-style JSON for the `redis-cluster` provider: every running
    /// node in `conn`, `prefix` as the key prefix.
    pub fn config(&self, prefix: &str) -> String {
        beego_config(prefix, &self.addrs())
    }

    /// Kills (SIGKILL) the master at `addr` and returns its address. Panics
    /// if no running master has that address.
    pub fn kill(&mut self, addr: &str) -> String {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.is_running() && node.addr() == addr)
            .unwrap_or_else(|| panic!("no running node at {addr}"));
        node.stop();
        addr.to_owned()
    }

    /// Kills one master (the first running one) and returns its address.
    pub fn kill_a_master(&mut self) -> String {
        let master = self.masters().into_iter().next().expect("the cluster has a master");
        self.kill(&master)
    }

    /// Waits until every running node says `cluster_state:ok` and knows
    /// every slot as served by a running, healthy master, and every running
    /// replica is in sync with its master. After a master was killed, this
    /// is the moment its replica has been promoted and the cluster agrees
    /// on it. Panics with the nodes' view after `timeout`.
    pub fn wait_until_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.health() {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    panic!("the Redis Cluster was not ok within {timeout:?}: {why}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|node| node.is_running())
    }

    fn create(&self, replicas: usize) {
        let binary = std::env::var("CACHEME_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned());
        let output = Command::new(&binary)
            .arg("--cluster")
            .arg("create")
            .args(self.addrs())
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {binary:?}: {e}. Install redis-cli (Debian: redis-tools; scripts/test \
                     does it with apt-get) or point CACHEME_REDIS_CLI at the binary."
                )
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `Ok` when the cluster is fully up, else what is not yet.
    fn health(&self) -> Result<(), String> {
        let live: HashSet<String> = self.addrs().into_iter().collect();
        for node in self.running() {
            let port = node.port();
            let info = query(port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") || !info.contains(&format!("cluster_slots_ok:{SLOTS}")) {
                return Err(format!(
                    "node {port}: {}",
                    info.lines().take(5).collect::<Vec<_>>().join(" ")
                ));
            }
            let mut served = 0;
            for line in query(port, &["CLUSTER", "NODES"])?.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                    continue;
                };
                let addr = addr.split('@').next().unwrap_or_default();
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|f| !f.starts_with('['))
                    .map(|r| range_len(r));
                let slots: usize = slots.sum();
                if slots > 0 && (!live.contains(addr) || flags.contains("fail")) {
                    return Err(format!("node {port} sees {addr} ({flags}) serving slots"));
                }
                served += slots;
            }
            if served != SLOTS {
                return Err(format!("node {port} sees {served} slots served"));
            }
            let replication = query(port, &["INFO", "replication"])?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
                return Err(format!("replica {port} is not in sync with its master yet"));
            }
        }
        Ok(())
    }
}

/// The number of slots in a `CLUSTER NODES` range: `5` or `0-5460`.
fn range_len(range: &str) -> usize {
    match range.split_once('-') {
        Some((start, end)) => match (start.parse::<usize>(), end.parse::<usize>()) {
            (Ok(start), Ok(end)) if end >= start => end - start + 1,
            _ => 0,
        },
        None => usize::from(range.parse::<usize>().is_ok()),
    }
}

/// `{"key":"<prefix>","conn":["a","b"]}` without a JSON dependency (the
/// prefix and addresses hold no characters that need escaping).
fn beego_config(prefix: &str, addrs: &[String]) -> String {
    let conn: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(r#"{{"key":"{prefix}","conn":[{}]}}"#, conn.join(","))
}

/// The first element of `ROLE` (`master` or `slave`), `None` when the node
/// does not answer.
fn role(port: u16) -> Option<String> {
    let mut connection = connect(port).ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection).ok()?;
    redis::from_redis_value(role.into_iter().next()?).ok()
}

/// One command to one node, its reply as text.
fn query(port: u16, args: &[&str]) -> Result<String, String> {
    let mut connection = connect(port)?;
    let mut cmd = redis::cmd(args[0]);
    cmd.arg(&args[1..]);
    cmd.query(&mut connection).map_err(|e| format!("node {port}: {e}"))
}

fn connect(port: u16) -> Result<redis::Connection, String> {
    let client = redis::Client::open(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(|e| format!("node {port}: {e}"))
}

/// Caches on a Redis Cluster started for this test (3 masters with a
/// replica each, about 2 s to start); the namespace is the key prefix.
pub struct RedisClusterFixture {
    /// The cluster, for tests that want to look at it directly.
    pub cluster: RedisCluster,
}

impl RedisClusterFixture {
    /// Starts the cluster.
    pub fn start() -> Self {
        RedisClusterFixture {
            cluster: RedisCluster::start(),
        }
    }
}

impl Fixture for RedisClusterFixture {
    fn cache<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Cache> {
        Box::pin(async move {
            Cache::new("redis-cluster", &self.cluster.config(namespace))
                .await
                .expect("redis-cluster cache")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_are_counted() {
        assert_eq!(range_len("0-5460"), 5461);
        assert_eq!(range_len("7"), 1);
        assert_eq!(range_len("x"), 0);
        assert_eq!(range_len("5-4"), 0);
    }
}
