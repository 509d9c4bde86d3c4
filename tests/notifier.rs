//! Stampede notifications survive a failed first subscribe: against a real
//! Redis, two clients (two "processes"), one holding a key's lock while the
//! other waits for its notice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Client, Context, cache_store};
use cacheme_test_support::RedisServer;
use tokio::sync::Semaphore;

/// One process's application: its client, and a gate its fetches wait on.
struct App {
    client: Client,
    gate: Semaphore,
    fetches: AtomicUsize,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

impl App {
    async fn open(url: &str, open_gate: bool) -> Arc<App> {
        Arc::new(App {
            client: Client::open(url).await.unwrap(),
            gate: Semaphore::new(if open_gate { 1000 } else { 0 }),
            fetches: AtomicUsize::new(0),
        })
    }
}

/// A long lock, so a waiter that is not woken waits a quarter of it.
#[cache_store(key = "slow:<id>", ttl = "1m", lock_ttl = "10s")]
async fn slow(ctx: &App, id: u64) -> Result<u64, String> {
    ctx.fetches.fetch_add(1, Ordering::SeqCst);
    // Each pass lets one fetch through.
    ctx.gate.acquire().await.map_err(|e| e.to_string())?.forget();
    Ok(id)
}

/// Lets the server accept `clients` connections at most: new connections
/// beyond them are refused, the open ones keep working.
async fn max_clients(raw: &mut redis::aio::MultiplexedConnection, clients: u64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(clients)
        .query_async(raw)
        .await
        .unwrap();
}

/// A numeric field of an `INFO` section.
async fn info_field(raw: &mut redis::aio::MultiplexedConnection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query_async(raw).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Polls until `done` holds, for at most 10 s.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `holder` takes `id`'s lock and blocks in its fetch; `waiter` then waits
/// for it. Returns the waiter's task.
async fn wait_behind(holder: &Arc<App>, waiter: &Arc<App>, id: u64) -> tokio::task::JoinHandle<Result<u64, String>> {
    let fetched = holder.fetches.load(Ordering::SeqCst);
    let held = Arc::clone(holder);
    tokio::spawn(async move { SlowStore::get(&held, id).await });
    until("the holder's fetch", async || {
        holder.fetches.load(Ordering::SeqCst) > fetched
    })
    .await;
    let waiting = Arc::clone(waiter);
    tokio::spawn(async move { SlowStore::get(&waiting, id).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_after_a_failed_first_subscribe() {
    let server = RedisServer::start();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let url = format!("redis://{}/0?prefix=notify", server.addr());
    let holder = App::open(&url, false).await;
    let waiter = App::open(&url, true).await;
    let lock_ttl = SlowStore::SPEC.lock_ttl.unwrap();

    // The waiter's first subscribe fails: its notification connection (the
    // only new connection) is refused by the server.
    let connected = info_field(&mut raw, "clients", "connected_clients").await;
    max_clients(&mut raw, connected).await;
    let first = wait_behind(&holder, &waiter, 1).await;
    // The connection manager tries 3 times (2 retries) before it fails.
    until("the refused connections", async || {
        info_field(&mut raw, "stats", "rejected_connections").await >= 3
    })
    .await;
    max_clients(&mut raw, 10_000).await;
    holder.gate.add_permits(1);
    assert_eq!(first.await.unwrap(), Ok(1));

    // A later waiter subscribes and is woken by the holder's notice.
    let fetched = waiter.fetches.load(Ordering::SeqCst);
    let second = wait_behind(&holder, &waiter, 2).await;
    until("the waiter's subscription", async || {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(&mut raw)
            .await
            .unwrap();
        channels.iter().any(|channel| channel.contains("slow:2"))
    })
    .await;
    let released = Instant::now();
    holder.gate.add_permits(1);
    assert_eq!(second.await.unwrap(), Ok(2));
    let took = released.elapsed();
    assert!(
        took < lock_ttl / 8,
        "the waiter took {took:?} after the fill (lock_ttl {lock_ttl:?}): it was not woken"
    );
    assert_eq!(
        waiter.fetches.load(Ordering::SeqCst),
        fetched,
        "the waiter did not fetch"
    );
}
