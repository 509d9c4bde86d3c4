//! The misses of pipelines and `get_m` go through the stampede protocol:
//! across processes, every key is fetched once. Fetches are counted by
//! the test (each fetched key appends a line to a log file).
//!
//! The other processes are this test binary run again on the test that
//! starts them, as a child ([`child::is_child`]) doing [`child_worker`], the
//! environment telling it what to do.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cacheme::{Client, Context, Pipeline, cache_store};
use cacheme_test_support::child::{self, expect_success, sleep_until_unix_ms, unix_ms};
use cacheme_test_support::{RedisCluster, RedisServer};

const URL: &str = "CACHEME_PIPELINE_URL";
const LOG: &str = "CACHEME_PIPELINE_LOG";
const START_AT: &str = "CACHEME_PIPELINE_START_AT";

/// Keys per batch.
const KEYS: u32 = 40;
/// Concurrent batches per process.
const TASKS: u32 = 8;

struct Worker {
    client: Client,
    log: PathBuf,
}

impl Context for Worker {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

fn record(log: &Path, keys: &[u32]) {
    use std::io::Write;
    let lines: String = keys.iter().map(|k| format!("{} {k}\n", std::process::id())).collect();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    // One write per batch: O_APPEND keeps lines of processes apart.
    file.write_all(lines.as_bytes()).unwrap();
}

/// The fetched keys and how often each was fetched.
fn fetched(log: &Path) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let key = line.split_once(' ').unwrap().1.parse().unwrap();
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// No `singleflight`: the tasks of one process meet only in the
/// cross-process protocol, as other processes do.
#[cache_store(key = "item:<id>", ttl = "1m", lock_ttl = "5s", fetch_many = items)]
async fn item(ctx: &Worker, id: u32) -> Result<String, String> {
    record(&ctx.log, &[id]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(format!("item {id}"))
}

async fn items(ctx: &Worker, ids: Vec<u32>) -> Result<HashMap<u32, String>, String> {
    record(&ctx.log, &ids);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(ids.into_iter().map(|id| (id, format!("item {id}"))).collect())
}

#[cache_store(key = "label:<id>", ttl = "1m", lock_ttl = "5s")]
async fn label(ctx: &Worker, id: u32) -> Result<String, String> {
    record(&ctx.log, &[1000 + id]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(format!("label {id}"))
}

/// What a child process does: its batches of gets, half through `get_m`,
/// half through pipelines.
async fn child_worker() {
    let url = std::env::var(URL).expect("the child's server");
    let log = std::env::var(LOG).expect("the child's fetch log");
    let start_at: u64 = std::env::var(START_AT).unwrap().parse().unwrap();
    let worker = Arc::new(Worker {
        client: Client::open(&url).await.unwrap(),
        log: log.into(),
    });
    sleep_until_unix_ms(start_at).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let worker = worker.clone();
            tokio::spawn(async move {
                // Each task its own order of the same keys.
                let order: Vec<u32> = (0..KEYS).map(|n| (n * 7 + task * 13) % KEYS).collect();
                if task % 2 == 0 {
                    let mut m = ItemStore::get_m(&worker);
                    for &id in &order {
                        m.push(id);
                    }
                    let values = m.run().await.into_all().unwrap();
                    for (&id, value) in order.iter().zip(values.iter()) {
                        assert_eq!(value, &format!("item {id}"));
                    }
                } else {
                    let mut pipeline = Pipeline::new();
                    let promises: Vec<_> = order
                        .iter()
                        .map(|&id| {
                            (
                                id,
                                ItemStore::get_p(&worker, &mut pipeline, id),
                                LabelStore::get_p(&worker, &mut pipeline, id),
                            )
                        })
                        .collect();
                    pipeline.execute().await.unwrap();
                    for (id, item, label) in promises {
                        assert_eq!(item.into_result().unwrap(), format!("item {id}"));
                        assert_eq!(label.into_result().unwrap(), format!("label {id}"));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(worker.client.waiting(), 0, "no waiter left behind");
    println!("child {} done", std::process::id());
}

fn spawn_child(url: &str, log: &Path, start_at: u64) -> tokio::process::Child {
    child::this_test_again()
        .env(URL, url)
        .env(LOG, log)
        .env(START_AT, start_at.to_string())
        .spawn()
        .unwrap()
}

/// Three processes of [`TASKS`] batches over the same cold keys: every key
/// of both stores is fetched exactly once in all.
async fn batches_fetch_each_key_once(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fetches");
    let start_at = unix_ms() + 1500;
    let started = Instant::now();
    let children: Vec<_> = (0..3).map(|_| spawn_child(url, &log, start_at)).collect();
    for child in children {
        expect_success(child).await;
    }
    let counts = fetched(&log);
    let expected: BTreeMap<u32, usize> = (0..KEYS).chain(1000..1000 + KEYS).map(|k| (k, 1)).collect();
    assert_eq!(counts, expected, "every key fetched once across 3 processes");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waiters were woken, not timed out: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_get_m_in_three_processes_fetch_each_key_once_on_redis() {
    if child::is_child() {
        return child_worker().await;
    }
    let server = RedisServer::start();
    batches_fetch_each_key_once(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_get_m_in_three_processes_fetch_each_key_once_on_a_redis_cluster() {
    if child::is_child() {
        return child_worker().await;
    }
    let cluster = RedisCluster::builder().replicas(0).start();
    batches_fetch_each_key_once(&cluster.url()).await;
}

/// A batch whose fetch is cancelled releases its locks at once: another
/// client fetches the keys without waiting out `lock_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pipeline_releases_its_locks() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fetches");

    #[cache_store(key = "hang:<id>", ttl = "1m", lock_ttl = "30s")]
    async fn hang(ctx: &Worker, id: u32) -> Result<u32, String> {
        record(&ctx.log, &[id]);
        if std::fs::read_to_string(&ctx.log).unwrap().lines().count() <= 5 {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Ok(id)
    }

    let first = Arc::new(Worker {
        client: Client::open(&server.url()).await.unwrap(),
        log: log.clone(),
    });
    let task = tokio::spawn({
        let first = first.clone();
        async move {
            let mut pipeline = Pipeline::new();
            let promises: Vec<_> = (0..5).map(|id| HangStore::get_p(&first, &mut pipeline, id)).collect();
            pipeline.execute().await.unwrap();
            promises
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetched(&log).len() < 5 {
        assert!(Instant::now() < deadline, "the first batch never fetched");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    let second = Worker {
        client: Client::open(&server.url()).await.unwrap(),
        log: log.clone(),
    };
    let started = Instant::now();
    let mut m = HangStore::get_m(&second);
    for id in 0..5 {
        m.push(id);
    }
    let values = tokio::time::timeout(Duration::from_secs(5), m.run())
        .await
        .expect("the cancelled batch's locks (30 s) were released")
        .into_all()
        .unwrap();
    assert_eq!(values.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fetched(&log).values().sum::<usize>(), 10, "each key fetched again once");
}
