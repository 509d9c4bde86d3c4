//! The dead-cache scenario: typed gets of cold keys while the server under
//! them (Redis, a 3-master Redis Cluster, memcached) is frozen (SIGSTOP:
//! connections open, nothing answered) and then dead (killed: connections
//! refused). DESIGN's target: the p99 of a typed
//! get stays within the source's latency plus `cache_timeout`, the cache
//! never adding more than its budget. Reports latency percentiles against
//! that budget. A figure, not a timed assertion: the machine is shared.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, cache_store};
use cacheme_test_support::{MemcachedServer, RedisCluster, RedisServer};
use tokio::task::JoinSet;

use crate::harness::{Report, Settings, Table, percentile};

/// How long the source takes, and the cache's budget per call.
const SOURCE: Duration = Duration::from_millis(5);
const CACHE_TIMEOUT: Duration = Duration::from_millis(100);
/// Gets per round, and how many run at once.
const GETS: u64 = 200;
const CONCURRENCY: u64 = 50;

/// One client's application.
struct Caller {
    client: Client,
    fetches: AtomicU64,
}

impl Context for Caller {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

#[cache_store(key = "bench-dead:<id>", ttl = "5m")]
async fn dead(ctx: &Caller, id: u64) -> Result<u64, std::convert::Infallible> {
    ctx.fetches.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(SOURCE).await;
    Ok(id)
}

/// The server under the cache, started on a free port.
enum Server {
    Redis(RedisServer),
    Cluster(RedisCluster),
    Memcached(MemcachedServer),
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Redis(_) => "Redis",
            Server::Cluster(_) => "Redis Cluster",
            Server::Memcached(_) => "memcached",
        }
    }

    fn url(&self) -> String {
        match self {
            Server::Redis(server) => server.url(),
            Server::Cluster(cluster) => cluster.url(),
            Server::Memcached(server) => server.url(),
        }
    }

    /// SIGSTOP (every master of a cluster).
    fn freeze(&mut self) {
        match self {
            Server::Redis(server) => server.freeze(),
            Server::Cluster(cluster) => cluster.masters().iter().for_each(|master| cluster.freeze(master)),
            Server::Memcached(server) => server.freeze(),
        }
    }

    fn thaw(&mut self) {
        match self {
            Server::Redis(server) => server.thaw(),
            Server::Cluster(cluster) => cluster.addrs().iter().for_each(|node| cluster.thaw(node)),
            Server::Memcached(server) => server.thaw(),
        }
    }

    /// SIGKILL (every node of a cluster).
    fn kill(&mut self) {
        match self {
            Server::Redis(server) => server.stop(),
            Server::Cluster(cluster) => drop(cluster.kill_all()),
            Server::Memcached(server) => server.stop(),
        }
    }
}

/// What a row measures the client with.
#[derive(Clone, Copy)]
enum Breaker {
    /// The default breaker: after 5 failures the cache is skipped.
    Default,
    /// No breaker: every get tries the cache and waits its budget.
    Off,
}

impl Breaker {
    fn label(self) -> &'static str {
        match self {
            Breaker::Default => "default breaker (a new client per round)",
            Breaker::Off => "breaker off (every get tries the cache)",
        }
    }
}

/// A client of `url` with the scenario's budget, connected and warm.
async fn caller(url: &str, breaker: Breaker) -> Arc<Caller> {
    let cache = Cache::open(url).await.expect("connect to the spawned server");
    let mut builder = Client::builder().cache(cache).cache_timeout(CACHE_TIMEOUT);
    if let Breaker::Off = breaker {
        builder = builder.breaker(0, Duration::from_secs(5));
    }
    let caller = Arc::new(Caller {
        client: builder.build().expect("a valid client"),
        fetches: AtomicU64::new(0),
    });
    DeadStore::get(&caller, u64::MAX).await.unwrap();
    caller.fetches.store(0, Ordering::Relaxed);
    caller
}

/// [`GETS`] calls of `call` on fresh ids, [`CONCURRENCY`] at a time;
/// each one's time in ms.
async fn timed<F, Fut>(first_id: u64, call: F) -> Vec<f64>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut took = Vec::with_capacity(GETS as usize);
    for wave in 0..GETS / CONCURRENCY {
        let mut set = JoinSet::new();
        for i in 0..CONCURRENCY {
            let call = call(first_id + wave * CONCURRENCY + i);
            set.spawn(async move {
                let started = Instant::now();
                call.await;
                started.elapsed()
            });
        }
        while let Some(elapsed) = set.join_next().await {
            took.push(elapsed.unwrap().as_secs_f64() * 1e3);
        }
    }
    took
}

/// Typed gets of fresh keys through `caller` (see [`timed`]).
async fn gets(caller: &Arc<Caller>, first_id: u64) -> Vec<f64> {
    timed(first_id, |id| {
        let caller = Arc::clone(caller);
        async move { assert_eq!(DeadStore::get(&caller, id).await.unwrap(), id) }
    })
    .await
}

/// The source alone, as the gets call it: its latency on this machine,
/// timer rounding and scheduling included (see [`timed`]).
async fn source_alone() -> Vec<f64> {
    timed(0, |_| tokio::time::sleep(SOURCE)).await
}

/// The clients of one server state: per row, one client per round for
/// the default breaker (so every round sees it open), one for all rounds
/// without it. Made while the server answers.
async fn clients(url: &str, rounds: usize) -> Vec<(Breaker, Vec<Arc<Caller>>)> {
    let mut rows = Vec::new();
    for breaker in [Breaker::Default, Breaker::Off] {
        let count = match breaker {
            Breaker::Default => rounds,
            Breaker::Off => 1,
        };
        let mut callers = Vec::with_capacity(count);
        for _ in 0..count {
            callers.push(caller(url, breaker).await);
        }
        rows.push((breaker, callers));
    }
    rows
}

/// Runs every row's rounds (interleaved with the source alone) and adds
/// their lines to `table`; the budget is the source's p99 plus
/// `cache_timeout`.
async fn measure(table: &mut Table, server: &str, state: &str, rows: &[(Breaker, Vec<Arc<Caller>>)], rounds: usize) {
    let mut source = Vec::new();
    let mut latencies = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        source.extend(source_alone().await);
        for ((_, callers), latencies) in rows.iter().zip(&mut latencies) {
            let caller = &callers[round % callers.len()];
            latencies.extend(gets(caller, round as u64 * GETS).await);
        }
    }
    let source_p99 = percentile(&mut source, 0.99);
    let budget = source_p99 + CACHE_TIMEOUT.as_secs_f64() * 1e3;
    table.row([
        server.to_owned(),
        state.to_owned(),
        "the source alone, no cache".to_owned(),
        source.len().to_string(),
        "–".to_owned(),
        format!("{:.1} ms", percentile(&mut source, 0.50)),
        format!("{source_p99:.1} ms"),
        format!("{:.1} ms", percentile(&mut source, 1.0)),
        "–".to_owned(),
    ]);
    for ((breaker, callers), mut took) in rows.iter().zip(latencies) {
        let fetches: u64 = callers.iter().map(|c| c.fetches.load(Ordering::Relaxed)).sum();
        let p50 = percentile(&mut took, 0.50);
        let p99 = percentile(&mut took, 0.99);
        let max = percentile(&mut took, 1.0);
        table.row([
            server.to_owned(),
            state.to_owned(),
            breaker.label().to_owned(),
            took.len().to_string(),
            fetches.to_string(),
            format!("{p50:.1} ms"),
            format!("**{p99:.1} ms**"),
            format!("{max:.1} ms"),
            format!("**{:.2}**", p99 / budget),
        ]);
    }
}

/// Typed gets on a frozen, then a dead server, for each backend.
pub async fn dead_cache(settings: &Settings) -> Report {
    let rounds = settings.rounds;
    let mut table = Table::new([
        "backend",
        "server",
        "client",
        "gets",
        "fetches",
        "p50",
        "p99",
        "max",
        "p99 / budget",
    ]);
    let starts: [fn() -> Server; 3] = [
        || Server::Redis(RedisServer::start()),
        || Server::Cluster(RedisCluster::builder().masters(3).replicas(0).start()),
        || Server::Memcached(MemcachedServer::start()),
    ];
    for start in starts {
        let mut server = start();
        let url = server.url();
        let frozen = clients(&url, rounds).await;
        let killed = clients(&url, rounds).await;
        server.freeze();
        measure(&mut table, server.name(), "frozen (SIGSTOP)", &frozen, rounds).await;
        server.thaw();
        server.kill();
        measure(&mut table, server.name(), "dead (killed)", &killed, rounds).await;
    }
    Report {
        title: "dead-cache: typed gets of cold keys on a frozen, then a dead server".into(),
        about: format!(
            "Redis, a 3-master Redis Cluster (every master frozen, then every node killed) and memcached. \
             {GETS} gets of fresh keys per round, {CONCURRENCY} at a time, a source taking {} ms, \
             `cache_timeout` {} ms. Target (DESIGN): p99 of a typed get within the source's latency + \
             `cache_timeout`; the budget is the p99 of the source alone (same concurrency, measured in the \
             same rounds) + `cache_timeout`, so p99 / budget ≤ 1. Every get must be served (by the source).",
            SOURCE.as_millis(),
            CACHE_TIMEOUT.as_millis(),
        ),
        table,
    }
}
