//! Cancellation safety of the miss path, against real servers: a caller of
//! `get`, `get_m` or a pipeline is dropped (its task aborted) at each
//! await of the lock and settle steps, and another client (standing for
//! another process) is still served in well under `lock_ttl` (10 s here),
//! with no lock left behind.
//!
//! The three points of cancellation:
//!
//! - **lock**: the lock command was executed by the server but its answer
//!   is held by a [`StallingProxy`] (armed with `}:lock`, the first
//!   command of the miss naming a lock: `SET … NX` for one key, the lock
//!   script for a batch);
//! - **fetch**: the fetch has started and never returns;
//! - **settle**: the fetch returned and the fill was sent, its answer held
//!   by the proxy. Fills run on a task of their own, so the cancelled
//!   caller cannot cut them short: the value must be stored. (The script
//!   cache is emptied first, so the held answer is a `NOSCRIPT` and the
//!   fill still has a command to send: see [`flush_scripts`].)
//!
//! On a Redis Cluster a client talks to every node, so there is no single
//! proxy: the fetch point is the same, and the settle point freezes
//! (SIGSTOP) the master of the key's slot before the fetch returns, so the
//! fill is sent to a node that does not answer; the caller is dropped once
//! the fetch has returned (from there it runs to the fill's spawn without
//! yielding, see `settle_on_a_cluster`), then the node is thawed. The lock
//! point is not reproduced on the cluster: it would need the server to
//! have executed a command whose answer is held, which only a proxy per
//! node gives (the lock step and the leases are the same code on both).
//!
//! Nothing here sleeps to synchronise: the tests wait for observable
//! states (the proxy saw a pattern, the fetcher's counters).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Client, Context, Pipeline, cache_store};
use cacheme_test_support::{RedisCluster, RedisServer, StallingProxy};
use tokio::sync::Semaphore;

/// The stores' lock TTL; the other client must be served well under it.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// "Well under `lock_ttl`".
const SERVED_WITHIN: Duration = Duration::from_secs(3);
/// How long a released lock may take to disappear (under `LOCK_TTL`, so an
/// expired lock does not pass for a released one).
const LOCK_GONE_WITHIN: Duration = Duration::from_secs(5);
/// Waiting for a state the test caused (generous: the machine is loaded).
const STATE_WITHIN: Duration = Duration::from_secs(20);

/// A process's application: its client and its source.
struct Worker {
    client: Client,
    /// Fetches started.
    fetches: AtomicUsize,
    /// Fetches that returned.
    returned: AtomicUsize,
    /// While `Some`, each fetch waits for a permit.
    gate: Option<Semaphore>,
}

impl Context for Worker {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

impl Worker {
    fn new(client: Client, gated: bool) -> Arc<Worker> {
        Arc::new(Worker {
            client,
            fetches: AtomicUsize::new(0),
            returned: AtomicUsize::new(0),
            gate: gated.then(|| Semaphore::new(0)),
        })
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn open_gate(&self, fetches: usize) {
        self.gate.as_ref().expect("a gated worker").add_permits(fetches);
    }
}

#[cache_store(key = "cancel:<id>", ttl = "1m", lock_ttl = "10s")]
async fn item(ctx: &Worker, id: u32) -> Result<String, String> {
    ctx.fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(gate) = &ctx.gate {
        gate.acquire().await.expect("the gate stays open").forget();
    }
    ctx.returned.fetch_add(1, Ordering::SeqCst);
    Ok(value(id))
}

/// The value of `id` (its text is also the proxy's pattern for its fill).
fn value(id: u32) -> String {
    format!("<value of {id}>")
}

/// How the cancelled caller asks.
#[derive(Clone, Copy, Debug)]
enum Call {
    Get,
    /// A `get_m` of two keys (one lock call for both).
    GetM,
    /// A pipeline of two keys.
    Pipeline,
}

impl Call {
    /// The keys a call for `id` reads.
    fn ids(self, id: u32) -> Vec<u32> {
        match self {
            Call::Get => vec![id],
            Call::GetM | Call::Pipeline => vec![id, id + 1000],
        }
    }

    /// Runs the call for `id` to its end (the tests abort it).
    async fn run(self, worker: Arc<Worker>, id: u32) {
        let ids = self.ids(id);
        match self {
            Call::Get => {
                ItemStore::get(&worker, id).await.unwrap();
            }
            Call::GetM => {
                let mut m = ItemStore::get_m(&worker);
                for &id in &ids {
                    m.push(id);
                }
                m.run().await.into_all().unwrap();
            }
            Call::Pipeline => {
                let mut pipeline = Pipeline::new();
                let promises: Vec<_> = ids
                    .iter()
                    .map(|&id| ItemStore::get_p(&worker, &mut pipeline, id))
                    .collect();
                pipeline.execute().await.unwrap();
                for promise in promises {
                    promise.into_result().unwrap();
                }
            }
        }
    }
}

/// Where the caller is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Lock,
    Fetch,
    Settle,
}

/// A client on `url` whose cache budget outlasts every held answer, so
/// the caller is still waiting when it is dropped (not served from the
/// source after a timeout).
async fn patient_client(url: &str) -> Client {
    Client::builder()
        .cache(Cache::open(url).await.unwrap())
        .cache_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `done` (an observable state) until it holds; panics after
/// [`STATE_WITHIN`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STATE_WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "waited {STATE_WITHIN:?} for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `locks()` (the `*:lock` keys of the server) is empty,
/// within [`LOCK_GONE_WITHIN`].
async fn until_no_lock(locks: impl Fn() -> Vec<String>) {
    let deadline = Instant::now() + LOCK_GONE_WITHIN;
    loop {
        let left = locks();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "locks left {LOCK_GONE_WITHIN:?} after the cancellation: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Another process: a fresh client on `url` gets every key of the call,
/// each within [`SERVED_WITHIN`]; returns how many fetches it made.
async fn another_process_is_served(url: &str, call: Call, id: u32) -> usize {
    let other = Worker::new(Client::open(url).await.unwrap(), false);
    let started = Instant::now();
    for id in call.ids(id) {
        let got = tokio::time::timeout(SERVED_WITHIN, ItemStore::get(&other, id))
            .await
            .unwrap_or_else(|_| {
                panic!("another process waited over {SERVED_WITHIN:?} for {id} (lock_ttl {LOCK_TTL:?})")
            })
            .unwrap();
        assert_eq!(got, value(id));
    }
    assert!(started.elapsed() < SERVED_WITHIN, "served in {:?}", started.elapsed());
    other.fetches()
}

/// Aborts `task` and checks it was dropped mid-flight, not finished.
async fn cancel<T: std::fmt::Debug>(task: tokio::task::JoinHandle<T>) {
    task.abort();
    let ended = task.await;
    assert!(
        ended.as_ref().is_err_and(|e| e.is_cancelled()),
        "the caller finished before it was cancelled: {ended:?}"
    );
}

fn spawn_call(worker: &Arc<Worker>, call: Call, id: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(call.run(worker.clone(), id))
}

/// Loads the batch scripts into the server (a batch of two other keys),
/// so the cancelled call's lock step is one `EVALSHA` the server runs,
/// not a `NOSCRIPT` answer.
async fn warm_up(worker: &Arc<Worker>, call: Call) {
    if matches!(call, Call::GetM | Call::Pipeline) {
        tokio::time::timeout(STATE_WITHIN, call.run(worker.clone(), 999_000))
            .await
            .expect("the warm-up batch");
    }
}

/// Empties the server's script cache, so the next fill takes two round
/// trips (`EVALSHA` answered `NOSCRIPT`, then `EVAL`): the held answer is
/// the first one, and a fill cut short by its cancelled caller would never
/// store its value (with the script cached, the server would store it
/// whatever became of the caller, and the test could not tell).
fn flush_scripts(node: &mut redis::Connection) {
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(node).unwrap();
}

/// One case on one Redis, through a proxy for the cancelled caller.
async fn on_redis(call: Call, at: At) {
    let server = RedisServer::start();
    let proxy = StallingProxy::start(server.port());
    let caller = Worker::new(patient_client(&proxy.redis_url("?timeout=30s")).await, true);
    if at != At::Fetch {
        caller.open_gate(usize::MAX >> 4);
        warm_up(&caller, call).await;
    }
    let before = caller.fetches();
    let id = 7;
    let keys = call.ids(id).len();
    match at {
        At::Lock => proxy.arm(b"}:lock"),
        At::Settle => {
            flush_scripts(&mut server.connection());
            proxy.arm(value(id).as_bytes());
        }
        At::Fetch => {}
    }
    let task = spawn_call(&caller, call, id);
    match at {
        At::Lock | At::Settle => {
            let proxy = &proxy;
            tokio::task::block_in_place(|| proxy.wait_seen(1, STATE_WITHIN));
        }
        At::Fetch => until("the fetches to start", || caller.fetches() == before + keys).await,
    }
    cancel(task).await;
    proxy.release();

    until_no_lock(|| server.keys("*:lock")).await;
    if at == At::Settle {
        for id in call.ids(id) {
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(format!("cacheme:cancel:{id}:v1"))
                .query(&mut server.connection())
                .unwrap();
            assert!(
                stored.is_some(),
                "the fill of {id} was cut short by the cancelled caller"
            );
        }
    }
    let fetched = another_process_is_served(&server.url(), call, id).await;
    let expected = match at {
        At::Settle => 0,
        At::Lock | At::Fetch => keys,
    };
    assert_eq!(fetched, expected, "the other process's fetches ({call:?}, {at:?})");
    match at {
        At::Lock => assert_eq!(caller.fetches(), before, "the cancelled caller never fetched"),
        At::Fetch | At::Settle => assert_eq!(caller.fetches(), before + keys),
    }
}

macro_rules! redis_cases {
    ($($name:ident: $call:expr, $at:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            on_redis($call, $at).await;
        }
    )*};
}

redis_cases! {
    redis_get_cancelled_with_its_lock_in_flight: Call::Get, At::Lock;
    redis_get_cancelled_during_its_fetch: Call::Get, At::Fetch;
    redis_get_cancelled_with_its_fill_in_flight: Call::Get, At::Settle;
    redis_get_m_cancelled_with_its_locks_in_flight: Call::GetM, At::Lock;
    redis_get_m_cancelled_during_its_fetch: Call::GetM, At::Fetch;
    redis_get_m_cancelled_with_its_settle_in_flight: Call::GetM, At::Settle;
    redis_pipeline_cancelled_with_its_locks_in_flight: Call::Pipeline, At::Lock;
    redis_pipeline_cancelled_during_its_fetch: Call::Pipeline, At::Fetch;
    redis_pipeline_cancelled_with_its_settle_in_flight: Call::Pipeline, At::Settle;
}

/// The fetch and settle cases of `call` on one cluster (see the module
/// docs), on different keys.
async fn on_a_cluster(call: Call) {
    let mut cluster = RedisCluster::builder().replicas(0).start();
    let url = format!("{}?timeout=30s", cluster.url());
    // Fetch: the fetch never returns.
    let caller = Worker::new(patient_client(&url).await, true);
    let id = 7;
    let keys = call.ids(id).len();
    let task = spawn_call(&caller, call, id);
    until("the fetches to start", || caller.fetches() == keys).await;
    cancel(task).await;
    until_no_lock(|| cluster.keys("*:lock")).await;
    assert_eq!(another_process_is_served(&cluster.url(), call, id).await, keys);

    // Settle: the fill goes to a frozen master.
    let caller = Worker::new(patient_client(&url).await, true);
    let id = 8;
    settle_on_a_cluster(&mut cluster, &caller, call, id).await;
    until_no_lock(|| cluster.keys("*:lock")).await;
    for id in call.ids(id) {
        let key = format!("cacheme:cancel:{id}:v1");
        let master = cluster.master_of(&key);
        let stored: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut cluster.node_connection(&master))
            .unwrap();
        assert_eq!(stored, 1, "the fill of {id} was cut short by the cancelled caller");
    }
    assert_eq!(another_process_is_served(&cluster.url(), call, id).await, 0);
    assert_eq!(caller.fetches(), keys);
}

/// Drops `call`'s caller while its fill is sent to the frozen master of
/// `id`'s slot. The caller is dropped once every fetch has returned: the
/// fetcher's last step, after which the caller runs on to spawn the fill
/// without yielding (nothing between the fetch's return and the spawn
/// awaits), so the abort lands on its wait for the fill.
async fn settle_on_a_cluster(cluster: &mut RedisCluster, caller: &Arc<Worker>, call: Call, id: u32) {
    let keys = call.ids(id).len();
    let task = spawn_call(caller, call, id);
    until("the fetches to start", || caller.fetches() == keys).await;
    let master = cluster.master_of(&format!("cacheme:cancel:{id}:v1"));
    for node in cluster.masters() {
        flush_scripts(&mut cluster.node_connection(&node));
    }
    cluster.freeze(&master);
    caller.open_gate(keys);
    until("the fetches to return", || {
        caller.returned.load(Ordering::SeqCst) == keys
    })
    .await;
    // Nothing answers on the frozen node: the caller waits for its fill.
    assert!(!task.is_finished(), "the caller did not wait for its fill");
    cancel(task).await;
    cluster.thaw(&master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_get_cancelled_during_its_fetch_and_its_fill() {
    on_a_cluster(Call::Get).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_get_m_cancelled_during_its_fetch_and_its_settle() {
    on_a_cluster(Call::GetM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_pipeline_cancelled_during_its_fetch_and_its_settle() {
    on_a_cluster(Call::Pipeline).await;
}
