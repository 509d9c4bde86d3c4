//! Test support for cacheme (not published).
//!
//! - [`RedisServer`]: a real `redis-server` on a free loopback port in a
//!   temp dir, killed on drop. Tests never use a server they did not start
//!   and never touch port 6379.
//! - [`FileFixture`]: file caches in a temp dir, for the conformance suite.
//! - [`MemcachedServer`]: a real `memcached`, the same way, and
//!   [`MemcachedFixture`] for the conformance suite.
//! - [`CountingProxy`]: a TCP proxy that counts round trips to a server;
//!   [`StallingProxy`]: one that holds a server's answers from a chosen
//!   request on, to cancel a client mid-command.
//! - [`RedisCluster`]: a real Redis Cluster (3 masters, a replica each by
//!   default) assembled with `redis-cli --cluster create`, killed on drop;
//!   [`RedisClusterFixture`] runs the conformance suite on one.
//! - [`conformance`]: the backend conformance suite, written once and run
//!   against every provider through [`conformance_suite!`].
//! - [`CapturedLogs`]: what cacheme logged, for tests that check it.
//! - [`Load`]: many tasks calling a store while a test breaks a server,
//!   with a [`Report`] (calls, errors, latency percentiles, fetches) per
//!   phase; [`SilentServer`]: a port that accepts and never answers.

#![forbid(unsafe_code)]

pub mod child;
pub mod conformance;
mod counting_proxy;
mod cpu_load;
mod file_fixture;
mod load;
mod logs;
mod memcached_server;
mod ports;
mod process;
mod redis_cluster;
mod redis_server;
mod sent_commands;
mod silent_server;
mod stalling_proxy;

pub use counting_proxy::CountingProxy;
pub use cpu_load::CpuLoad;
pub use file_fixture::FileFixture;
pub use load::{Load, LoadSettings, Outcome, Report, Stats, percentile};
pub use logs::CapturedLogs;
pub use memcached_server::{MemcachedFixture, MemcachedServer, MemcachedServerBuilder};
pub use ports::free_port;
pub use redis_cluster::{RedisCluster, RedisClusterBuilder, RedisClusterFixture};
pub use redis_server::{RedisServer, RedisServerBuilder};
pub use sent_commands::{Calls, SentCommands};
pub use silent_server::SilentServer;
pub use stalling_proxy::StallingProxy;
