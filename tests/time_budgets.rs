//! The client's time settings against a real Redis: a fetch that runs past
//! `fetch_timeout` gives its lock back (another process's waiter fetches
//! instead of waiting for it), and a cache step that runs past
//! `cache_timeout` serves the caller from the source. Bounds are far from
//! what the defects cost (seconds) and far above a loaded machine's needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, cache_store};
use cacheme_test_support::RedisServer;

struct App {
    client: Client,
    fetches: Arc<AtomicUsize>,
    /// The next fetch takes this long (once); later ones answer at once.
    slow_next: Arc<AtomicBool>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

#[cache_store(key = "report:<id>", ttl = "1m")]
async fn report(ctx: &App, id: u32) -> Result<String, String> {
    ctx.fetches.fetch_add(1, Ordering::SeqCst);
    if ctx.slow_next.swap(false, Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        return Ok(format!("slow report {id}"));
    }
    Ok(format!("report {id}"))
}

async fn app(server: &RedisServer, configure: impl FnOnce(cacheme::ClientBuilder) -> cacheme::ClientBuilder) -> App {
    let cache = Cache::open(&server.url()).await.unwrap();
    App {
        client: configure(Client::builder().cache(cache)).build().unwrap(),
        fetches: Arc::default(),
        slow_next: Arc::default(),
    }
}

/// Process A's fetch hangs past its `fetch_timeout`: its renewer releases
/// the lock (and tells the waiters), so process B's waiter takes the lock
/// and fetches at once instead of waiting for A (4 s) or for `max_wait`
/// (30 s); A still gets its own value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_past_fetch_timeout_gives_its_lock_back() {
    let server = RedisServer::start();
    let a = Arc::new(app(&server, |b| b.fetch_timeout(Duration::from_millis(300))).await);
    let b = app(&server, |b| b).await;
    a.slow_next.store(true, Ordering::SeqCst);
    let slow = tokio::spawn({
        let a = a.clone();
        async move { ReportStore::get(&a, 1).await }
    });
    while a.fetches.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    assert_eq!(ReportStore::get(&b, 1).await.unwrap(), "report 1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the waiter took {:?}: the slow fetch kept its lock",
        started.elapsed()
    );
    assert_eq!(b.fetches.load(Ordering::SeqCst), 1, "the waiter fetched by itself");
    assert_eq!(
        slow.await.unwrap().unwrap(),
        "slow report 1",
        "the slow caller still gets its value"
    );
}

/// A frozen Redis: a get costs the caller its `cache_timeout`, then the
/// source answers; nothing waits for the server to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_cache_costs_a_get_its_cache_timeout_at_most() {
    let mut server = RedisServer::start();
    let app = app(&server, |b| b.cache_timeout(Duration::from_millis(200))).await;
    assert_eq!(ReportStore::get(&app, 2).await.unwrap(), "report 2");
    server.freeze();
    for id in 3..6 {
        let started = Instant::now();
        assert_eq!(ReportStore::get(&app, id).await.unwrap(), format!("report {id}"));
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a get on a frozen cache took {:?}",
            started.elapsed()
        );
    }
    server.thaw();
}
