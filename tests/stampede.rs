//! Stampede protection across processes, against real servers. Fetches are
//! counted by the test (each fetch appends its pid to a log file), never by
//! the library.
//!
//! The other processes are this test binary run again on the test that
//! starts them, as a child ([`child::is_child`]) doing [`child_worker`], the
//! environment telling it what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Client, Context, cache_store};
use cacheme_test_support::child::{self, expect_success, sleep_until_unix_ms, unix_ms};
use cacheme_test_support::{MemcachedServer, RedisCluster, RedisServer};
use tokio::sync::Semaphore;

/// The child's settings.
const URL: &str = "CACHEME_STAMPEDE_URL";
const LOG: &str = "CACHEME_STAMPEDE_LOG";
const TASKS: &str = "CACHEME_STAMPEDE_TASKS";
const START_AT: &str = "CACHEME_STAMPEDE_START_AT";
/// The first fetch hangs (so its process can be killed mid-fetch).
const HANG_FIRST: &str = "CACHEME_STAMPEDE_HANG_FIRST";

/// The application of a child (and of in-process tests).
struct Worker {
    client: Client,
    log: PathBuf,
    fetch_time: Duration,
    hang_first: bool,
    /// Fetches that should fail before one succeeds.
    fail: AtomicUsize,
    /// The value the source returns.
    version: AtomicUsize,
    /// While `Some`, each fetch of the stores that look at it waits for a
    /// permit (after its `fetch_time`): the test decides when it ends.
    gate: Option<Semaphore>,
}

impl Context for Worker {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

impl Worker {
    fn new(client: Client, log: &Path) -> Arc<Worker> {
        Arc::new(Worker {
            client,
            log: log.to_owned(),
            fetch_time: Duration::from_millis(50),
            hang_first: false,
            fail: AtomicUsize::new(0),
            version: AtomicUsize::new(1),
            gate: None,
        })
    }

    /// Lets `fetches` held fetches end.
    fn open_gate(&self, fetches: usize) {
        self.gate.as_ref().expect("a gated worker").add_permits(fetches);
    }
}

/// Holds the fetch at `ctx`'s gate, if it has one.
async fn pass_gate(ctx: &Worker) {
    if let Some(gate) = &ctx.gate {
        gate.acquire().await.expect("the gate stays open").forget();
    }
}

/// Appends a line to the fetch log; returns how many lines were there.
async fn record_fetch(log: &Path) -> usize {
    use std::io::Write;
    let before = fetches(log);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    file.write_all(format!("{}\n", std::process::id()).as_bytes()).unwrap();
    file.sync_all().unwrap();
    before
}

/// The pids in the fetch log, one per fetch.
fn fetch_log(log: &Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn fetches(log: &Path) -> usize {
    fetch_log(log).len()
}

/// Waits until some get is fetching (its fetch is in the log).
async fn until_fetching(log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetches(log) == 0 {
        assert!(Instant::now() < deadline, "nobody fetched");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A spawned Redis and a fetch log in a temp dir.
fn redis_scene() -> (RedisServer, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fetches");
    (RedisServer::start(), dir, log)
}

/// A worker on `server` whose fetches take `fetch_time`.
async fn slow_worker(server: &RedisServer, log: &Path, fetch_time: Duration) -> Arc<Worker> {
    Arc::new(Worker {
        fetch_time,
        ..Arc::into_inner(redis_worker(server, log).await).unwrap()
    })
}

/// A worker on `server` whose fetches end when the test opens its gate.
async fn gated_worker(server: &RedisServer, log: &Path) -> Arc<Worker> {
    Arc::new(Worker {
        gate: Some(Semaphore::new(0)),
        ..Arc::into_inner(redis_worker(server, log).await).unwrap()
    })
}

#[cache_store(key = "cold:<id>", ttl = "1m", lock_ttl = "2s", singleflight)]
async fn cold(ctx: &Worker, id: u32) -> Result<String, String> {
    let earlier = record_fetch(&ctx.log).await;
    if ctx.hang_first && earlier == 0 {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    tokio::time::sleep(ctx.fetch_time).await;
    if ctx
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err("the source failed".to_owned());
    }
    pass_gate(ctx).await;
    Ok(format!("value {id} v{}", ctx.version.load(Ordering::SeqCst)))
}

/// `cold` without `singleflight`: every get of a process takes part in
/// the cross-process protocol itself.
#[cache_store(key = "shared:<id>", ttl = "1m", lock_ttl = "2s")]
async fn shared(ctx: &Worker, id: u32) -> Result<String, String> {
    record_fetch(&ctx.log).await;
    tokio::time::sleep(ctx.fetch_time).await;
    pass_gate(ctx).await;
    Ok(format!("shared {id}"))
}

/// A source held at the gate past its store's `lock_ttl`: the lock must be
/// renewed. Not a whole number of seconds, so a renewal rounded up to
/// seconds shows in its PTTL.
#[cache_store(key = "long:<id>", ttl = "1m", lock_ttl = "1500ms", singleflight)]
async fn long(ctx: &Worker, id: u32) -> Result<String, String> {
    record_fetch(&ctx.log).await;
    tokio::time::sleep(ctx.fetch_time).await;
    pass_gate(ctx).await;
    Ok(format!("long {id}"))
}

/// What a child process does: its herd of gets of the cold key.
async fn child_worker() {
    let url = std::env::var(URL).expect("the child's server");
    let log = std::env::var(LOG).expect("the child's fetch log");
    let tasks: usize = std::env::var(TASKS).unwrap().parse().unwrap();
    let start_at: u64 = std::env::var(START_AT).unwrap().parse().unwrap();
    let worker = Arc::new(Worker {
        hang_first: std::env::var(HANG_FIRST).is_ok(),
        ..Arc::into_inner(Worker::new(Client::open(&url).await.unwrap(), Path::new(&log))).unwrap()
    });
    // Every process starts its herd at the same moment.
    sleep_until_unix_ms(start_at).await;
    let gets: Vec<_> = (0..tasks)
        .map(|_| {
            let worker = worker.clone();
            tokio::spawn(async move { ColdStore::get(&worker, 1).await })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap(), "value 1 v1");
    }
    println!("child {} done", std::process::id());
}

fn spawn_child(url: &str, log: &Path, tasks: usize, start_at: u64, hang_first: bool) -> tokio::process::Child {
    let mut command = child::this_test_again();
    command
        .env(URL, url)
        .env(LOG, log)
        .env(TASKS, tasks.to_string())
        .env(START_AT, start_at.to_string());
    if hang_first {
        command.env(HANG_FIRST, "1");
    }
    command.spawn().unwrap()
}

/// `processes` x `tasks` concurrent gets of one cold key: one fetch.
async fn herd(url: &str, processes: usize, tasks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fetches");
    let start_at = unix_ms() + 1500;
    let children: Vec<_> = (0..processes)
        .map(|_| spawn_child(url, &log, tasks, start_at, false))
        .collect();
    for child in children {
        expect_success(child).await;
    }
    assert_eq!(
        fetch_log(&log).len(),
        1,
        "{processes} processes x {tasks} gets of one cold key fetch once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_fetch_a_cold_key_once_on_redis() {
    if child::is_child() {
        return child_worker().await;
    }
    let server = RedisServer::start();
    herd(&server.url(), 4, 250).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_fetch_a_cold_key_once_on_a_redis_cluster() {
    if child::is_child() {
        return child_worker().await;
    }
    let cluster = RedisCluster::builder().replicas(0).start();
    herd(&cluster.url(), 4, 250).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fetch_a_cold_key_once_on_memcached() {
    if child::is_child() {
        return child_worker().await;
    }
    let server = MemcachedServer::start();
    herd(&server.url(), 2, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fetch_a_cold_key_once_on_files() {
    if child::is_child() {
        return child_worker().await;
    }
    let dir = tempfile::tempdir().unwrap();
    herd(&format!("file://{}", dir.path().display()), 2, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lock_holder_costs_one_more_fetch_within_lock_ttl() {
    if child::is_child() {
        return child_worker().await;
    }
    let (server, _dir, log) = redis_scene();
    let start_at = unix_ms() + 1500;
    let mut children: Vec<_> = (0..3)
        .map(|_| spawn_child(&server.url(), &log, 100, start_at, true))
        .collect();
    until_fetching(&log).await;
    let holder = fetch_log(&log)[0];
    let position = children
        .iter()
        .position(|c| c.id() == Some(holder))
        .expect("the holder is one of the children");
    let mut killed = children.remove(position);
    killed.start_kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    let lock_ttl = ColdStore::SPEC.lock_ttl.unwrap();
    for child in children {
        expect_success(child).await;
    }
    let took = killed_at.elapsed();
    // The dead holder's lock expires within lock_ttl of the kill, a waiter
    // finds it gone within a wait round (lock_ttl / 4), then one fetch
    // (50 ms) and the children's exit: about 1.3 lock_ttl. Without the
    // takeover the waiters would wait max_wait (30 s).
    assert!(
        took < lock_ttl * 3,
        "the others took over {took:?} after the holder died (lock_ttl {lock_ttl:?})"
    );
    let log = fetch_log(&log);
    assert_eq!(log.len(), 2, "exactly one more fetch: {log:?}");
    assert_ne!(log[1], holder);
    drop(killed);
}

async fn redis_worker(server: &RedisServer, log: &Path) -> Arc<Worker> {
    Worker::new(Client::open(&server.url()).await.unwrap(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fetch_releases_the_waiters_at_once() {
    let (server, _dir, log) = redis_scene();
    // Two clients: two processes as far as coordination goes.
    let holder = redis_worker(&server, &log).await;
    let other = redis_worker(&server, &log).await;
    holder.fail.store(1, Ordering::SeqCst);
    let started = Instant::now();
    let failing = tokio::spawn({
        let holder = holder.clone();
        async move { ColdStore::get(&holder, 7).await }
    });
    until_fetching(&log).await;
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let other = other.clone();
            tokio::spawn(async move { ColdStore::get(&other, 7).await })
        })
        .collect();
    assert_eq!(failing.await.unwrap(), Err("the source failed".to_owned()));
    for waiter in waiters {
        // Errors are not shared: a waiter competes again and fetches anew.
        assert_eq!(waiter.await.unwrap().unwrap(), "value 7 v1");
    }
    let took = started.elapsed();
    let lock_ttl = ColdStore::SPEC.lock_ttl.unwrap();
    // The failed fetch's lock was taken after `started`: had it been left
    // to expire, the waiters could only have taken it lock_ttl later.
    assert!(
        took < lock_ttl,
        "waiters were released by the failure, not by the lock expiring: {took:?}"
    );
    assert_eq!(fetches(&log), 2, "the failed fetch and one replacement");
    assert_eq!(other.client.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalidation_during_a_fetch_wins_over_its_fill() {
    let (server, _dir, log) = redis_scene();
    let slow = slow_worker(&server, &log, Duration::from_millis(500)).await;
    let other = redis_worker(&server, &log).await;
    let in_flight = tokio::spawn({
        let slow = slow.clone();
        async move { ColdStore::get(&slow, 3).await }
    });
    until_fetching(&log).await;
    // The source changes and the application invalidates, mid-fetch.
    slow.version.store(2, Ordering::SeqCst);
    other.version.store(2, Ordering::SeqCst);
    ColdStore::invalidate(&other, 3).await.unwrap();
    // The slow fetch read the source before the change: its caller gets
    // the old value, but it must not land in the cache.
    in_flight.await.unwrap().unwrap();
    assert_eq!(
        ColdStore::get(&other, 3).await.unwrap(),
        "value 3 v2",
        "the pre-invalidation value did not land"
    );
    assert_eq!(fetches(&log), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_longer_than_lock_ttl_is_still_one_fetch() {
    let (server, _dir, log) = redis_scene();
    let workers = [gated_worker(&server, &log).await, gated_worker(&server, &log).await];
    let mut redis = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let gets: Vec<_> = (0..20)
        .map(|i| {
            let worker = workers[i % 2].clone();
            tokio::spawn(async move { LongStore::get(&worker, 1).await })
        })
        .collect();
    until_fetching(&log).await;
    // The fetch is held until its lock, taken before the fetch began, has
    // outlived lock_ttl by half: unrenewed it would be gone by then (and a
    // waiter would fetch again). Until then it lives on, renewed in
    // milliseconds (PEXPIRE), never longer than lock_ttl.
    let lock_ttl = LongStore::SPEC.lock_ttl.unwrap();
    let held_until = Instant::now() + lock_ttl * 3 / 2;
    let lock = "cacheme:{cacheme:long:1:v1}:lock";
    while Instant::now() < held_until {
        let pttl: i64 = ::redis::cmd("PTTL").arg(lock).query_async(&mut redis).await.unwrap();
        assert!(
            (1..=lock_ttl.as_millis() as i64).contains(&pttl),
            "lock PTTL mid-fetch: {pttl}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One permit per get: a second fetch would not hang but be counted.
    workers.iter().for_each(|worker| worker.open_gate(gets.len()));
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap(), "long 1");
    }
    assert_eq!(fetches(&log), 1, "renewal kept the lock for the whole fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_cancelled_by_a_timeout_leave_nothing_behind() {
    let (server, _dir, log) = redis_scene();
    let holder = gated_worker(&server, &log).await;
    let other = redis_worker(&server, &log).await;
    let held = tokio::spawn({
        let holder = holder.clone();
        async move { SharedStore::get(&holder, 9).await }
    });
    until_fetching(&log).await;
    // The holder's fetch is held until the waiters are gone: every waiter
    // is cancelled by its timeout, none served (max_wait is 30 s).
    let timeout = Duration::from_secs(5);
    let waits: Vec<_> = (0..50)
        .map(|_| {
            let other = other.clone();
            // Misses coalesce in the process: one waiter registers.
            tokio::spawn(async move { tokio::time::timeout(timeout, SharedStore::get(&other, 9)).await })
        })
        .collect();
    // Once all 50 are in (49 following the one that waits on Redis)...
    // (past their timeout, this could no longer hold).
    let joined = Instant::now() + timeout;
    while other.client.stats().total().coalesced < 49 || other.client.waiting() == 0 {
        assert!(Instant::now() < joined, "the 50 gets never all waited");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        other.client.waiting(),
        1,
        "the process's waiters share one registration"
    );
    for wait in waits {
        assert!(wait.await.unwrap().is_err(), "a waiter was served before its timeout");
    }
    assert_eq!(other.client.waiting(), 0, "the waiter table is empty again");
    let backend = other.client.cache().backend().clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut redis = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    loop {
        let channels: Vec<String> = ::redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(&mut redis)
            .await
            .unwrap();
        if channels.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "channels left subscribed: {channels:?} ({backend:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.open_gate(1);
    held.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_notification_costs_a_bounded_delay_not_an_error() {
    let (server, _dir, log) = redis_scene();
    // Its fetch is held until the waiter's pub/sub connection is cut.
    let holder = gated_worker(&server, &log).await;
    let other = redis_worker(&server, &log).await;
    let held = tokio::spawn({
        let holder = holder.clone();
        async move { ColdStore::get(&holder, 5).await }
    });
    until_fetching(&log).await;
    let waiter = tokio::spawn({
        let other = other.clone();
        async move { ColdStore::get(&other, 5).await }
    });
    let mut redis = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The waiter registers before its subscription reaches the server:
    // wait for the server to see it subscribed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let channels: Vec<String> = ::redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(&mut redis)
            .await
            .unwrap();
        if other.client.waiting() > 0 && !channels.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never subscribed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Cut the waiters' pub/sub connection: the fill's notice is lost.
    let killed: i64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(killed, 1, "one pub/sub connection for the whole client");
    let released = Instant::now();
    holder.open_gate(1);
    assert_eq!(waiter.await.unwrap().unwrap(), "value 5 v1");
    let took = released.elapsed();
    held.await.unwrap().unwrap();
    // A wait round is lock_ttl / 4: the waiter reads the value at the end
    // of its round at the latest. Waiting for the lost notice would last
    // max_wait (30 s).
    let lock_ttl = ColdStore::SPEC.lock_ttl.unwrap();
    assert!(
        took < lock_ttl,
        "the waiter took {took:?} after the fill (lock_ttl {lock_ttl:?}): not within a wait round"
    );
    assert_eq!(fetches(&log), 1, "still one fetch");
}
