//! The cold-key scenario: 1,000 concurrent callers of one cold key whose
//! fetch takes 50 ms, on a spawned Redis, spread over four clients (four
//! processes as far as coordination goes: each has its own singleflight
//! table and pub/sub connection). Reports latency percentiles; DESIGN's
//! target is one fetch and p99 under fetch time + 20 ms. A figure, not a
//! timed assertion: the machine is shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Client, Context, cache_store};
use cacheme_test_support::RedisServer;
use tokio::task::JoinSet;

use crate::harness::{Report, Settings, Table, percentile};

/// Concurrent callers per round, and clients they are spread over.
const CALLERS: usize = 1000;
const CLIENTS: usize = 4;
/// How long the source takes.
const FETCH: Duration = Duration::from_millis(50);

/// One client's application; all share the fetch counter.
struct Caller {
    client: Client,
    fetches: Arc<AtomicU64>,
}

impl Context for Caller {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

#[cache_store(key = "bench-cold:<id>", ttl = "5m", lock_ttl = "5s", singleflight)]
async fn cold(ctx: &Caller, id: u64) -> Result<u64, std::convert::Infallible> {
    ctx.fetches.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(FETCH).await;
    Ok(id)
}

/// 1,000 callers of one cold key per round, a fresh key each round.
pub async fn cold_key(settings: &Settings) -> Report {
    let server = RedisServer::start();
    let fetches = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..CLIENTS {
        callers.push(Arc::new(Caller {
            client: Client::open(&server.url())
                .await
                .expect("connect to the spawned redis-server"),
            fetches: fetches.clone(),
        }));
    }
    let mut latencies_ms = Vec::with_capacity(settings.rounds * CALLERS);
    let mut worst_round_fetches = 0;
    for round in 0..settings.rounds as u64 + 1 {
        let before = fetches.load(Ordering::SeqCst);
        let mut set = JoinSet::new();
        for i in 0..CALLERS {
            let caller = callers[i % CLIENTS].clone();
            set.spawn(async move {
                let started = Instant::now();
                let value = ColdStore::get(&caller, round).await.unwrap();
                assert_eq!(value, round);
                started.elapsed()
            });
        }
        let mut this_round = Vec::with_capacity(CALLERS);
        while let Some(took) = set.join_next().await {
            this_round.push(took.unwrap().as_secs_f64() * 1e3);
        }
        worst_round_fetches = worst_round_fetches.max(fetches.load(Ordering::SeqCst) - before);
        if round > 0 {
            // Round 0 warms connections and the pub/sub subscription path.
            latencies_ms.extend(this_round);
        }
    }
    let fetch_ms = FETCH.as_secs_f64() * 1e3;
    let p50 = percentile(&mut latencies_ms, 0.50);
    let p99 = percentile(&mut latencies_ms, 0.99);
    let max = percentile(&mut latencies_ms, 1.0);
    let mut table = Table::new([
        "callers",
        "fetch",
        "fetches/round (max)",
        "p50",
        "p99",
        "max",
        "p99 − fetch",
    ]);
    table.row([
        format!("{CALLERS} over {CLIENTS} clients x {} rounds", settings.rounds),
        format!("{fetch_ms:.0} ms"),
        worst_round_fetches.to_string(),
        format!("{p50:.1} ms"),
        format!("{p99:.1} ms"),
        format!("{max:.1} ms"),
        format!("**{:.1} ms**", p99 - fetch_ms),
    ]);
    Report {
        title: "cold-key: 1,000 concurrent gets of one cold key on Redis".into(),
        about: "A fresh key per round; four clients stand for four processes (each its own singleflight \
                table and pub/sub connection). Target (DESIGN, issue 5): one fetch per round and p99 under \
                fetch time + 20 ms."
            .into(),
        table,
    }
}
