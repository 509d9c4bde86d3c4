//! Test support for cacheme (not published).
//!
//! - [`RedisServer`]: a real `redis-server` on a free loopback port in a
//!   temp dir, killed on drop. Tests never use a server they did not start
//!   and never touch port 6379.
//! - [`RedisCluster`]: a real Redis Cluster (3 masters, a replica each by
//!   default) assembled with `redis-cli --cluster create`, killed on drop;
//!   [`RedisClusterFixture`] runs the conformance suite on one.
//! - [`conformance`]: the backend conformance suite, written once and run
//!   against every provider through [`conformance_suite!`].
//! - [`CapturedLogs`]: what cacheme logged, for tests that check it.

pub mod conformance;
mod logs;
mod ports;
mod redis_cluster;
mod redis_server;

pub use logs::CapturedLogs;
pub use ports::free_port;
pub use redis_cluster::{RedisCluster, RedisClusterBuilder, RedisClusterFixture};
pub use redis_server::{RedisServer, RedisServerBuilder};
