//! Counting the commands clients send to a Redis Cluster's masters.

use std::collections::BTreeMap;
use std::future::Future;

use redis::Value;

use crate::RedisCluster;

/// The commands clients sent to each master, read from the slow log with
/// a threshold of 0 (every command is logged). Unlike `INFO
/// commandstats`, it tells a client's command from the ones a script runs
/// inside (logged with the script's client, `?:0`), so a script that
/// reads 300 keys counts once.
pub struct SentCommands {
    nodes: Vec<(String, redis::Connection)>,
}

/// Commands sent by clients, by name, per master.
pub type Calls = BTreeMap<String, BTreeMap<String, u64>>;

impl SentCommands {
    /// Turns the slow log on (threshold 0) on every master of `cluster`.
    pub fn new(cluster: &RedisCluster) -> Self {
        let nodes = cluster
            .masters()
            .into_iter()
            .map(|addr| {
                let mut connection = cluster.node_connection(&addr);
                for (name, value) in [("slowlog-log-slower-than", "0"), ("slowlog-max-len", "1000000")] {
                    let _: () = redis::cmd("CONFIG")
                        .arg("SET")
                        .arg(name)
                        .arg(value)
                        .query(&mut connection)
                        .unwrap();
                }
                (addr, connection)
            })
            .collect();
        SentCommands { nodes }
    }

    /// What clients sent each master during `work` (our own `SLOWLOG`
    /// calls left out).
    pub async fn of<T>(&mut self, work: impl Future<Output = T>) -> (T, Calls) {
        for (_, connection) in &mut self.nodes {
            let _: () = redis::cmd("SLOWLOG").arg("RESET").query(connection).unwrap();
        }
        let out = work.await;
        let calls = self
            .nodes
            .iter_mut()
            .map(|(addr, connection)| {
                let log: Vec<Vec<Value>> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query(connection).unwrap();
                let mut sent: BTreeMap<String, u64> = BTreeMap::new();
                for entry in log {
                    // [id, time, micros, [command, args..], client addr, client name]
                    let args: Vec<Value> = redis::from_redis_value(entry[3].clone()).unwrap();
                    let command: String = redis::from_redis_value(args[0].clone()).unwrap();
                    let client: String = redis::from_redis_value(entry[4].clone()).unwrap();
                    let command = command.to_lowercase();
                    if client != "?:0" && command != "slowlog" {
                        *sent.entry(command).or_default() += 1;
                    }
                }
                (addr.clone(), sent)
            })
            .collect();
        (out, calls)
    }
}
