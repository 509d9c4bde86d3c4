//! A Redis Cluster master killed under load (3 masters, a replica each):
//! the same client serves from the cluster again soon after the cluster
//! is healthy, and no call blocks for long meanwhile. Measured over
//! several runs, each on a fresh cluster; the measures are printed.
//!
//! The load is [`TASKS`] tasks: half do `Cache` put/get in a loop, half
//! typed gets of a store (whose misses take the lock and fill scripts).
//! A probe on the same `Cache` writes and reads keys held by the master
//! that is killed until a whole round succeeds: that moment, minus the
//! moment every node agrees the cluster is ok again, is the recovery time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, cache_store};
use cacheme_test_support::RedisCluster;
use tokio::task::JoinHandle;

/// Concurrent load tasks per run.
const TASKS: usize = 100;
/// Runs, each on a fresh cluster.
const RUNS: usize = 3;
/// The promise: serving again within this long of the cluster being ok.
const RECOVERY: Duration = Duration::from_secs(5);
/// The promise after a frozen master's failover: serving its slots again
/// within this long of the other nodes agreeing on it. Longer than
/// [`RECOVERY`]: nothing breaks, so the client notices by calls going
/// unanswered for 1.5 s, then a `PING` to every master that goes
/// unanswered for 1 s, then a new connection (whose handshake with the
/// frozen seed may wait for its connect timeout), and that cycle may have
/// begun just before the failover: about 4 s here at worst, 6 s measured
/// with both cores kept busy by other processes; more than doubled for
/// margin (without the watchdog's given-up count it never recovered).
const FROZEN_RECOVERY: Duration = Duration::from_secs(15);
/// No single call may take longer than this, failover or not (generous:
/// the machine is shared; a call is bounded by the backend's timeouts).
const LONGEST_CALL: Duration = Duration::from_secs(10);

struct App {
    client: Client,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

#[cache_store(key = "fo:<id>", ttl = "2s", lock_ttl = "2s")]
async fn item(_ctx: &App, id: u32) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(format!("item {id}"))
}

/// What one kind of call saw during a run.
#[derive(Default)]
struct Calls {
    latencies: Vec<Duration>,
    errors: usize,
}

impl Calls {
    fn add(&mut self, other: Calls) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }

    fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    fn row(&mut self, name: &str) -> String {
        self.latencies.sort();
        let at = |q: f64| {
            let n = self.latencies.len();
            match n {
                0 => Duration::ZERO,
                _ => self.latencies[((n as f64 * q) as usize).min(n - 1)],
            }
        };
        format!(
            "{name:<8} calls {:>6}  errors {:>5}  p50 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}",
            self.latencies.len(),
            self.errors,
            at(0.5),
            at(0.99),
            self.max()
        )
    }
}

/// One load task until `stop`: `Cache` put/get, or typed gets.
fn load(n: usize, cache: Cache, app: Arc<App>, stop: Arc<AtomicBool>) -> JoinHandle<Calls> {
    tokio::spawn(async move {
        let mut calls = Calls::default();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            i = i.wrapping_add(1);
            let id = (n as u32).wrapping_mul(7919).wrapping_add(i) % 500;
            let started = Instant::now();
            let ok = if n.is_multiple_of(2) {
                let key = format!("load:{id}");
                match cache.put(&key, b"v", Duration::from_secs(5)).await {
                    Ok(()) => cache.get(&key).await.is_ok(),
                    Err(_) => false,
                }
            } else {
                matches!(ItemStore::get(&app, id).await, Ok(got) if got == format!("item {id}"))
            };
            calls.latencies.push(started.elapsed());
            calls.errors += usize::from(!ok);
            // A failing backend fails fast; don't spin on it.
            if !ok {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        calls
    })
}

/// One probe round: every key written then read back; `true` when all went
/// through. Each call's time counts as a `Cache` call.
async fn probe(cache: &Cache, keys: &[String], round: usize, calls: &mut Calls) -> bool {
    let mut all = true;
    for key in keys {
        let value = format!("{key}:{round}");
        let started = Instant::now();
        let ok = match cache.put(key, &value, Duration::from_secs(60)).await {
            Ok(()) => matches!(cache.get(key).await, Ok(Some(got)) if got == value.as_bytes()),
            Err(_) => false,
        };
        calls.latencies.push(started.elapsed());
        calls.errors += usize::from(!ok);
        all &= ok;
    }
    all
}

/// The `probe:*` keys the node at `addr` holds.
fn keys_on(cluster: &RedisCluster, addr: &str) -> Vec<String> {
    let mut connection = cluster.node_connection(addr);
    let keys: Vec<String> = redis::cmd("KEYS").arg("fo:probe:*").query(&mut connection).unwrap();
    keys.into_iter()
        .map(|key| key.trim_start_matches("fo:").to_owned())
        .collect()
}

/// What one run measured.
struct Run {
    until_ok: Duration,
    recovery: Duration,
    cache: Calls,
    typed: Calls,
}

async fn one_run() -> Run {
    let mut cluster = RedisCluster::start();
    let cache = Cache::new("redis-cluster", &cluster.config("fo")).await.unwrap();
    let app = Arc::new(App {
        client: Client::builder().cache(cache.clone()).build().unwrap(),
    });
    let keys: Vec<String> = (0..60).map(|i| format!("probe:{i}")).collect();
    for key in &keys {
        cache.put(key, "before", Duration::from_secs(60)).await.unwrap();
    }
    let victim = cluster.masters().into_iter().next().unwrap();
    let victims_keys = keys_on(&cluster, &victim);
    assert!(!victims_keys.is_empty(), "some probe keys live on {victim}");
    // Under load the offsets never meet; the probe keys are what must
    // survive the kill.
    tokio::task::block_in_place(|| cluster.wait_for_replication(Duration::from_secs(10)));

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| load(n, cache.clone(), app.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    assert_eq!(cluster.kill(&victim), victim);
    let cluster = Arc::new(cluster);
    let watcher = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster.wait_until_ok(Duration::from_secs(30));
            Instant::now()
        })
    };

    let mut probes = Calls::default();
    let mut round = 0;
    let recovered_at = loop {
        round += 1;
        if probe(&cache, &victims_keys, round, &mut probes).await {
            break Instant::now();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(60), "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ok_at = watcher.await.unwrap();
    // Serving for good: later rounds go through as well.
    for _ in 0..3 {
        round += 1;
        assert!(
            probe(&cache, &victims_keys, round, &mut probes).await,
            "served again, then failed"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        until_ok: ok_at - killed_at,
        recovery: recovered_at.saturating_duration_since(ok_at),
        cache: probes,
        typed: Calls::default(),
    };
    for (n, task) in tasks.into_iter().enumerate() {
        let calls = task.await.unwrap();
        if n.is_multiple_of(2) {
            run.cache.add(calls);
        } else {
            run.typed.add(calls);
        }
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_serves_again_soon_after_a_failover_under_load() {
    // The warnings (a connection replaced, the breaker) show in the output.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let mut runs = Vec::new();
    for n in 1..=RUNS {
        let mut run = one_run().await;
        println!(
            "run {n}: kill -> cluster ok {:.1?}; cluster ok -> same client served {:.1?}",
            run.until_ok, run.recovery
        );
        println!("  {}", run.cache.row("cache"));
        println!("  {}", run.typed.row("typed"));
        runs.push(run);
    }
    for (n, run) in runs.iter().enumerate() {
        assert!(
            run.recovery <= RECOVERY,
            "run {}: served again {:?} after the cluster was ok",
            n + 1,
            run.recovery
        );
        for (what, calls) in [("cache", &run.cache), ("typed", &run.typed)] {
            assert!(
                calls.max() <= LONGEST_CALL,
                "run {}: a {what} call took {:?}",
                n + 1,
                calls.max()
            );
        }
        assert_eq!(run.typed.errors, 0, "typed gets fall back to the source");
    }
}

/// A frozen master (SIGSTOP: its connections stay open and nothing is
/// answered, as with a hung host) is failed over to its replica. No
/// connection breaks and no node redirects the client, so only what the
/// client does about calls that time out can move it to the promoted
/// replica: the same client must serve the frozen master's slots within
/// [`FROZEN_RECOVERY`] of the other nodes agreeing on the failover, while
/// the frozen node stays frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_follows_a_failover_away_from_a_frozen_master() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let mut cluster = RedisCluster::start();
    let cache = Cache::new("redis-cluster", &cluster.config("fo")).await.unwrap();
    let app = Arc::new(App {
        client: Client::builder().cache(cache.clone()).build().unwrap(),
    });
    let keys: Vec<String> = (0..60).map(|i| format!("probe:{i}")).collect();
    for key in &keys {
        cache.put(key, "before", Duration::from_secs(60)).await.unwrap();
    }
    let victim = cluster.masters().into_iter().next().unwrap();
    let victims_keys = keys_on(&cluster, &victim);
    assert!(!victims_keys.is_empty(), "some probe keys live on {victim}");
    tokio::task::block_in_place(|| cluster.wait_for_replication(Duration::from_secs(10)));

    // Calls to the other masters keep being answered throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..10)
        .map(|n| load(n, cache.clone(), app.clone(), stop.clone()))
        .collect();
    cluster.freeze(&victim);
    let frozen_at = Instant::now();
    let watcher = {
        let victim = victim.clone();
        tokio::task::spawn_blocking(move || {
            cluster.wait_until_ok_without(&victim, Duration::from_secs(30));
            (cluster, Instant::now())
        })
    };
    let mut probes = Calls::default();
    let mut round = 0;
    let recovered_at = loop {
        round += 1;
        if probe(&cache, &victims_keys, round, &mut probes).await {
            break Instant::now();
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(60),
            "never served again: {}",
            probes.row("probes")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (mut cluster, ok_at) = watcher.await.unwrap();
    for _ in 0..3 {
        round += 1;
        assert!(
            probe(&cache, &victims_keys, round, &mut probes).await,
            "served again, then failed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut load_calls = Calls::default();
    for task in tasks {
        load_calls.add(task.await.unwrap());
    }
    let recovery = recovered_at.saturating_duration_since(ok_at);
    println!(
        "freeze -> cluster ok without the frozen master {:.1?}; cluster ok -> same client served {recovery:.1?}",
        ok_at - frozen_at
    );
    println!("  {}", probes.row("probes"));
    println!("  {}", load_calls.row("load"));
    assert!(
        recovery <= FROZEN_RECOVERY,
        "served again {recovery:?} after the cluster was ok"
    );
    for (what, calls) in [("probe", &probes), ("load", &load_calls)] {
        assert!(
            calls.max() <= LONGEST_CALL,
            "a {what} call took {:?} while a master was frozen",
            calls.max()
        );
    }
    cluster.thaw(&victim);
}
