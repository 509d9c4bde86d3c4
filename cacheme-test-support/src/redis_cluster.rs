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

use redis::IntoConnectionInfo;
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
    password: Option<String>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            masters: 3,
            replicas: 1,
            password: None,
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

    /// Requires `password` on every node (`requirepass`; replicas also use
    /// it as `masterauth`).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Starts the nodes, creates the cluster and waits (up to 30 s) until
    /// every node sees all slots served and every replica is in sync.
    pub fn start(self) -> RedisCluster {
        assert!(self.masters >= 3, "redis-cli --cluster create needs at least 3 masters");
        let count = self.masters * (1 + self.replicas);
        let nodes: Vec<RedisServer> = (0..count).map(|_| self.start_node()).collect();
        let cluster = RedisCluster {
            nodes,
            password: self.password,
        };
        cluster.create(self.replicas);
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    fn start_node(&self) -> RedisServer {
        let mut node = RedisServer::builder();
        if let Some(password) = &self.password {
            node = node.password(password).args(["--masterauth", password]);
        }
        node.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-port", &free_port().to_string()])
            .args(["--cluster-replica-validity-factor", "0"])
            // Replicas sync at once, not after the default 5 s wait.
            .args(["--repl-diskless-sync-delay", "0"])
            .start()
    }
}

/// A running Redis Cluster owned by one test.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    password: Option<String>,
}

impl RedisCluster {
    /// Starts 3 masters with one replica each.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for another shape (e.g. no replicas) or a password.
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
        self.with_role("master")
    }

    /// `127.0.0.1:PORT` of every running replica.
    pub fn replicas(&self) -> Vec<String> {
        self.with_role("slave")
    }

    /// `redis-cluster://` URL listing every running node (no password).
    pub fn url(&self) -> String {
        format!("redis-cluster://{}", self.addrs().join(","))
    }

    /// Beego-style JSON for the `redis-cluster` provider: every running
    /// node in `conn`, `prefix` as the key prefix, and the password if any.
    pub fn config(&self, prefix: &str) -> String {
        let conn: Vec<String> = self.addrs().iter().map(|a| format!("\"{a}\"")).collect();
        let password = match &self.password {
            Some(password) => format!(r#","password":"{password}""#),
            None => String::new(),
        };
        format!(r#"{{"key":"{prefix}","conn":[{}]{password}}}"#, conn.join(","))
    }

    /// A plain (not cluster-aware) connection to the node at `addr`, to
    /// look at what that one node holds.
    pub fn node_connection(&self, addr: &str) -> redis::Connection {
        let port = self
            .running()
            .find(|node| node.addr() == addr)
            .unwrap_or_else(|| panic!("no running node at {addr}"))
            .port();
        self.connect(port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The keys matching `pattern` on every running master (`KEYS`, for
    /// the small data sets of tests). Panics if a master does not answer.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for master in self.masters() {
            let mut connection = self.node_connection(&master);
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut connection)
                .unwrap_or_else(|e| panic!("KEYS {pattern} on {master}: {e}"));
            keys.extend(found);
        }
        keys
    }

    /// Kills (SIGKILL) the node at `addr` and returns its address. Panics
    /// if no running node has that address.
    pub fn kill(&mut self, addr: &str) -> String {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.is_running() && node.addr() == addr)
            .unwrap_or_else(|| panic!("no running node at {addr}"));
        node.stop();
        addr.to_owned()
    }

    /// Freezes (SIGSTOP) the running node at `addr`: it answers nothing
    /// until [`thaw`](RedisCluster::thaw) (see [`RedisServer::freeze`]).
    /// Panics if no running node has that address.
    pub fn freeze(&mut self, addr: &str) {
        self.node_mut(addr).freeze();
    }

    /// Resumes a [`freeze`](RedisCluster::freeze)d node.
    pub fn thaw(&mut self, addr: &str) {
        self.node_mut(addr).thaw();
    }

    /// The master that serves `key`'s slot now (it answers a plain `EXISTS`
    /// for the key instead of redirecting). Panics if none does.
    pub fn master_of(&self, key: &str) -> String {
        self.masters()
            .into_iter()
            .find(|master| {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query::<i64>(&mut self.node_connection(master))
                    .is_ok()
            })
            .unwrap_or_else(|| panic!("no master serves {key}"))
    }

    fn node_mut(&mut self, addr: &str) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|node| node.is_running() && node.addr() == addr)
            .unwrap_or_else(|| panic!("no running node at {addr}"))
    }

    /// Kills every node (SIGKILL); [`restart_all`](RedisCluster::restart_all)
    /// brings them back. Returns their addresses.
    pub fn kill_all(&mut self) -> Vec<String> {
        let addrs = self.addrs();
        for node in &mut self.nodes {
            node.stop();
        }
        addrs
    }

    /// Restarts every stopped node on its port. Each keeps its cluster
    /// config (`nodes.conf`), so the cluster comes back with the same slots
    /// (and no data); wait for it with [`wait_until_ok`](RedisCluster::wait_until_ok).
    pub fn restart_all(&mut self) {
        for node in self.nodes.iter_mut().filter(|node| !node.is_running()) {
            node.restart();
        }
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
        self.wait_for("the Redis Cluster to be ok", timeout, || self.health(None));
    }

    /// [`wait_until_ok`](RedisCluster::wait_until_ok) as if the node at
    /// `absent` were gone: the other nodes are asked, and `absent` may
    /// serve no slot. For a [`freeze`](RedisCluster::freeze)d master,
    /// which answers nothing: this is the moment its replica has been
    /// promoted and the other nodes agree on it.
    pub fn wait_until_ok_without(&self, absent: &str, timeout: Duration) {
        let what = format!("the Redis Cluster to be ok without {absent}");
        self.wait_for(&what, timeout, || self.health(Some(absent)));
    }

    /// Waits until every replica has received everything its master was
    /// written so far (replication offsets equal), so that a master killed
    /// now loses no write. Panics after `timeout`.
    pub fn wait_for_replication(&self, timeout: Duration) {
        self.wait_for("the replicas to catch up", timeout, || self.replicated());
    }

    fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn() -> Result<(), String>) {
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => panic!("waited {timeout:?} for {what}: {why}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|node| node.is_running())
    }

    fn with_role(&self, wanted: &str) -> Vec<String> {
        self.running()
            .filter(|node| self.role(node.port()).as_deref() == Some(wanted))
            .map(RedisServer::addr)
            .collect()
    }

    fn create(&self, replicas: usize) {
        let binary = std::env::var("CACHEME_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned());
        let mut cmd = Command::new(&binary);
        if let Some(password) = &self.password {
            cmd.args(["--no-auth-warning", "-a", password]);
        }
        let replicas = replicas.to_string();
        cmd.args(["--cluster", "create"])
            .args(self.addrs())
            .args(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let output = cmd.output().unwrap_or_else(|e| {
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

    /// `Ok` when the cluster is fully up (without the node at `absent`,
    /// which is neither asked nor counted as live), else what is not yet.
    fn health(&self, absent: Option<&str>) -> Result<(), String> {
        let live: HashSet<String> = self
            .addrs()
            .into_iter()
            .filter(|addr| Some(addr.as_str()) != absent)
            .collect();
        for node in self.running().filter(|node| live.contains(&node.addr())) {
            let port = node.port();
            let info = self.query(port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") || !info.contains(&format!("cluster_slots_ok:{SLOTS}")) {
                return Err(format!(
                    "node {port}: {}",
                    info.lines().take(5).collect::<Vec<_>>().join(" ")
                ));
            }
            let mut served = 0;
            for line in self.query(port, &["CLUSTER", "NODES"])?.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                    continue;
                };
                let addr = addr.split('@').next().unwrap_or_default();
                let slots: usize = fields.iter().skip(8).map(|range| range_len(range)).sum();
                if slots > 0 && (!live.contains(addr) || flags.contains("fail")) {
                    return Err(format!("node {port} sees {addr} ({flags}) serving slots"));
                }
                served += slots;
            }
            if served != SLOTS {
                return Err(format!("node {port} sees {served} slots served"));
            }
            let replication = self.query(port, &["INFO", "replication"])?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
                return Err(format!("replica {port} is not in sync with its master yet"));
            }
        }
        Ok(())
    }

    /// `Ok` when every master's replicas have acknowledged its whole
    /// replication stream.
    fn replicated(&self) -> Result<(), String> {
        for node in self.running() {
            let port = node.port();
            let replication = self.query(port, &["INFO", "replication"])?;
            if !replication.contains("role:master") {
                continue;
            }
            let field = |line: &str, name: &str| {
                line.split([',', ':'])
                    .find_map(|part| part.strip_prefix(name))
                    .map(str::to_owned)
            };
            let offset = replication
                .lines()
                .find_map(|line| line.strip_prefix("master_repl_offset:"))
                .unwrap_or_default()
                .trim();
            for replica in replication.lines().filter(|line| line.starts_with("slave")) {
                if field(replica, "offset=").as_deref() != Some(offset) {
                    return Err(format!("master {port} at offset {offset}, replica: {replica}"));
                }
            }
        }
        Ok(())
    }

    /// The first element of `ROLE` (`master` or `slave`), `None` when the
    /// node does not answer.
    fn role(&self, port: u16) -> Option<String> {
        let mut connection = self.connect(port).ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection).ok()?;
        redis::from_redis_value(role.into_iter().next()?).ok()
    }

    /// One command to one node, its reply as text.
    fn query(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let mut connection = self.connect(port)?;
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query(&mut connection).map_err(|e| format!("node {port}: {e}"))
    }

    fn connect(&self, port: u16) -> Result<redis::Connection, String> {
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let info = redis::ConnectionAddr::Tcp("127.0.0.1".to_owned(), port)
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_redis_settings(settings);
        // A frozen node accepts the connection and answers nothing: the
        // read timeout makes asking it an error instead of a hang.
        redis::Client::open(info)
            .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|connection| {
                connection.set_read_timeout(Some(Duration::from_secs(10)))?;
                Ok(connection)
            })
            .map_err(|e| format!("node {port}: {e}"))
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
