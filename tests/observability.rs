//! Observability (docs/observability.md): the metrics (feature `metrics`),
//! `Client::stats`, the spans and the Logger events of one scripted
//! sequence (hit, miss, fetch error, coalesced caller, lock wait, lock
//! timeout, breaker open), on memory and on a spawned Redis.
//!
//! Metrics go to a `metrics-util` debugging recorder installed for the
//! test's thread (the tests run on a current-thread runtime, so every
//! metric handle is registered with it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cacheme::{Cache, Client, Context, Event, EventKind, StoreStats, cache_store};
use cacheme_test_support::RedisServer;
use tokio::sync::Semaphore;

/// The id whose fetch fails.
const FAILING: u32 = 2;
/// Ids whose fetch waits for its gate.
const GATED: [u32; 3] = [3, 4, 5];

/// Longer than any step of the sequence takes, however loaded the machine:
/// past it, the step is not going to happen.
const NEVER: Duration = Duration::from_secs(60);

/// Gates of the gated fetches (opened, they stay open, by the test or by
/// a logger), and the signals that a gated fetch has begun.
#[derive(Default)]
struct Gates(Mutex<HashMap<(u32, bool), Arc<Semaphore>>>);

impl Gates {
    fn semaphore(&self, id: u32, started: bool) -> Arc<Semaphore> {
        let mut gates = self.0.lock().unwrap();
        Arc::clone(
            gates
                .entry((id, started))
                .or_insert_with(|| Arc::new(Semaphore::new(0))),
        )
    }

    /// Called by the fetch of `id`: signals it began, waits for its gate
    /// (a gate that never opens fails the test rather than hang it).
    async fn pass(&self, id: u32) {
        self.semaphore(id, true).add_permits(1);
        let gate = self.semaphore(id, false);
        let open = tokio::time::timeout(NEVER, gate.acquire()).await;
        let _open = open
            .unwrap_or_else(|_| panic!("the gate of {id} never opened"))
            .unwrap();
    }

    fn open(&self, id: u32) {
        self.semaphore(id, false).add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Waits until a fetch of `id` began (the fetching caller holds the
    /// key's lock by then).
    async fn fetching(&self, id: u32) {
        let started = self.semaphore(id, true);
        let began = tokio::time::timeout(NEVER, started.acquire()).await;
        began
            .unwrap_or_else(|_| panic!("no fetch of {id} began"))
            .unwrap()
            .forget();
    }
}

struct App {
    client: Client,
    gates: Arc<Gates>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

#[cache_store(key = "obs:<id>", ttl = "1m", lock_ttl = "1s", singleflight)]
async fn obs(app: &App, id: u32) -> Result<String, String> {
    if id == FAILING {
        return Err("the source failed".into());
    }
    if GATED.contains(&id) {
        app.gates.pass(id).await;
    }
    Ok(format!("value {id}"))
}

/// Whether `obs_fresh`'s source fails.
#[cfg(feature = "metrics")]
static FRESH_FAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// How many times `obs_fresh`'s source was called.
#[cfg(feature = "metrics")]
static FRESH_FETCHES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[cfg(feature = "metrics")]
#[cache_store(key = "obs-fresh:<id>", ttl = "1m", stale_for = "1h", refresh_after = "30s")]
async fn obs_fresh(ctx: &Client, id: u32) -> Result<String, String> {
    let _ = ctx;
    let n = FRESH_FETCHES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if FRESH_FAILS.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("the source failed".into());
    }
    Ok(format!("value {id} #{n}"))
}

/// A client on `cache` whose logger opens gate 3 when a caller coalesces
/// and gate 5 when a wait gives up, and records every event kind.
fn app(
    cache: Cache,
    gates: &Arc<Gates>,
    events: &Arc<Mutex<Vec<EventKind>>>,
    tune: impl FnOnce(cacheme::ClientBuilder) -> cacheme::ClientBuilder,
) -> App {
    let (opener, sink) = (Arc::clone(gates), Arc::clone(events));
    let logger = move |event: &Event<'_>| {
        sink.lock().unwrap().push(event.kind);
        match event.kind {
            EventKind::Coalesced => opener.open(3),
            EventKind::LockTimeout => opener.open(5),
            _ => {}
        }
    };
    App {
        client: tune(Client::builder().cache(cache).logger(logger)).build().unwrap(),
        gates: Arc::clone(gates),
    }
}

/// Hit, miss, fetch error and two concurrent gets of a cold key (one
/// coalesces): the part of the sequence every backend runs.
async fn common_sequence(app: &App) {
    assert_eq!(ObsStore::get(app, 1).await.unwrap(), "value 1"); // miss
    assert_eq!(ObsStore::get(app, 1).await.unwrap(), "value 1"); // hit
    assert!(ObsStore::get(app, FAILING).await.is_err()); // miss, fetch error
    let (a, b) = tokio::join!(ObsStore::get(app, 3), ObsStore::get(app, 3));
    assert_eq!((a.unwrap(), b.unwrap()), ("value 3".into(), "value 3".into()));
    app.client.flush().await;
}

/// Whether `b` of [`redis_sequence`] was served a's value (a hit after
/// its wait; 0) rather than the lock a had just released (a fetch; 1):
/// (hits, fetches) of `b`.
fn b_was_served(b: &App) -> (u64, u64) {
    let stats = b.client.stats().store("ObsStore").cloned().unwrap();
    assert_eq!(
        stats.hits + stats.fetches,
        1,
        "b either read a's value or fetched: {stats:?}"
    );
    (stats.hits, stats.fetches)
}

/// Waits (yielding) until `client` has a get waiting for another
/// process's fetch.
async fn until_waiting(client: &Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.waiting() == 0 {
        assert!(std::time::Instant::now() < deadline, "no get waited");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The Redis-only part: a wait for another process's fetch (client `b`
/// waits for `a`), a wait that gives up (`b_short`), then the breaker
/// opening on a stopped server (`c`).
async fn redis_sequence(server: &mut RedisServer, a: &App, b: &App, b_short: &App, c: &App) {
    // b waits for a's fetch of 4 (started once a holds the lock; the gate
    // opens once b waits), then reads its value. (If a's fill and lock
    // release land between b's read and b's lock attempt, b takes the free
    // lock and fetches instead: `b_was_served` tells the tests which.)
    let (held, waited) = tokio::join!(ObsStore::get(a, 4), async {
        a.gates.fetching(4).await;
        let (waited, ()) = tokio::join!(ObsStore::get(b, 4), async {
            until_waiting(&b.client).await;
            a.gates.open(4);
        });
        waited
    });
    assert_eq!((held.unwrap(), waited.unwrap()), ("value 4".into(), "value 4".into()));
    // b_short gives up waiting for a's fetch of 5 (its logger then opens
    // the gate) and fetches by itself.
    let (held, gave_up) = tokio::join!(ObsStore::get(a, 5), async {
        a.gates.fetching(5).await;
        ObsStore::get(b_short, 5).await
    });
    assert_eq!((held.unwrap(), gave_up.unwrap()), ("value 5".into(), "value 5".into()));
    for app in [a, b, b_short] {
        app.client.flush().await;
    }
    // Two failures open c's breaker (threshold 2); the third get skips
    // the cache.
    server.stop();
    for id in [6, 7, 8] {
        assert_eq!(ObsStore::get(c, id).await.unwrap(), format!("value {id}"));
    }
    assert!(c.client.is_degraded());
}

#[cfg(feature = "metrics")]
mod metrics_recorded {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    /// Every metric of the snapshot: (name, sorted labels) -> value.
    type Metrics = Vec<(String, Vec<(String, String)>, DebugValue)>;

    fn take(snapshotter: &Snapshotter) -> Metrics {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                (key.name().to_owned(), labels, value)
            })
            .collect()
    }

    /// The labels of `ObsStore` on `backend` plus `extra`, sorted.
    fn labels(backend: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = [("store", "ObsStore"), ("backend", backend)]
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        labels
    }

    /// The counter `name` with exactly these labels (0 if never registered).
    fn counter(metrics: &Metrics, name: &str, labels: &[(String, String)]) -> u64 {
        metrics
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map_or(0, |(_, _, value)| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
    }

    /// How many values the histogram `name` with these labels received.
    fn samples(metrics: &Metrics, name: &str, labels: &[(String, String)]) -> usize {
        metrics
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map_or(0, |(_, _, value)| match value {
                DebugValue::Histogram(values) => values.len(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
    }

    fn gauge(metrics: &Metrics, name: &str, labels: &[(String, String)]) -> f64 {
        metrics
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map_or(f64::NAN, |(_, _, value)| match value {
                DebugValue::Gauge(n) => n.into_inner(),
                other => panic!("{name} is not a gauge: {other:?}"),
            })
    }

    /// Every `cacheme.operation.duration{operation="get"}` sample count by
    /// outcome.
    fn get_outcomes(metrics: &Metrics, backend: &str) -> Vec<(String, usize)> {
        let mut outcomes: Vec<(String, usize)> = metrics
            .iter()
            .filter(|(n, _, _)| n == "cacheme.operation.duration")
            .filter_map(|(_, labels, value)| {
                let outcome = labels.iter().find(|(k, _)| k == "outcome")?.1.clone();
                let ours = labels == &self::labels(backend, &[("operation", "get"), ("outcome", &outcome)]);
                match value {
                    DebugValue::Histogram(values) if ours && !values.is_empty() => Some((outcome, values.len())),
                    _ => None,
                }
            })
            .collect();
        outcomes.sort();
        outcomes
    }

    /// Every `cacheme.backend.operation.duration` series of `backend`:
    /// (operation, result, samples), sorted. Each has exactly the labels
    /// `backend`, `operation` and `result`.
    fn commands(metrics: &Metrics, backend: &str) -> Vec<(String, String, usize)> {
        let mut commands: Vec<(String, String, usize)> = metrics
            .iter()
            .filter(|(n, _, _)| n == "cacheme.backend.operation.duration")
            .filter_map(|(_, labels, value)| {
                let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(names, ["backend", "operation", "result"], "{labels:?}");
                let samples = match value {
                    DebugValue::Histogram(values) => values.len(),
                    other => panic!("not a histogram: {other:?}"),
                };
                let ours = label("backend")? == backend && samples > 0;
                ours.then_some((label("operation")?, label("result")?, samples))
            })
            .collect();
        commands.sort();
        commands
    }

    /// `(operation, result, samples)` as [`commands`] gives them.
    fn command(op: &str, result: &str, samples: usize) -> (String, String, usize) {
        (op.to_owned(), result.to_owned(), samples)
    }

    /// A refresh-ahead and a stale value served by the fail-safe: each
    /// counted once, with the store's labels (memory, a driven clock).
    #[tokio::test]
    async fn a_refresh_and_a_stale_value_are_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let clock = cacheme::testing::TestClock::new();
        let client = Client::builder().clock(&clock).build().unwrap();
        assert_eq!(ObsFreshStore::get(&client, 1).await.unwrap(), "value 1 #1");
        clock.advance(Duration::from_secs(31));
        assert_eq!(
            ObsFreshStore::get(&client, 1).await.unwrap(),
            "value 1 #1",
            "due: answered at once"
        );
        let refreshed = async {
            while ObsFreshStore::peek(&client, 1).await.unwrap().as_deref() != Some("value 1 #2") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(NEVER, refreshed)
            .await
            .expect("the refresh landed");
        FRESH_FAILS.store(true, std::sync::atomic::Ordering::SeqCst);
        clock.advance(Duration::from_secs(120));
        assert_eq!(ObsFreshStore::get(&client, 1).await.unwrap(), "value 1 #2", "stale");

        let m = take(&snapshotter);
        let at = |extra: &[(&str, &str)]| {
            let mut labels = labels("memory", extra);
            for (key, value) in &mut labels {
                if key == "store" {
                    *value = "ObsFreshStore".to_owned();
                }
            }
            labels
        };
        assert_eq!(counter(&m, "cacheme.refreshes", &at(&[])), 1);
        assert_eq!(counter(&m, "cacheme.stale", &at(&[])), 1);
        assert_eq!(counter(&m, "cacheme.fetches", &at(&[("result", "ok")])), 2);
        assert_eq!(counter(&m, "cacheme.fetches", &at(&[("result", "error")])), 1);
        let stats = client.stats().store("ObsFreshStore").cloned().unwrap();
        assert_eq!(
            (stats.refreshes, stats.stale, stats.fetches, stats.fetch_errors),
            (1, 1, 2, 1)
        );
    }

    #[tokio::test]
    async fn memory_counts_and_labels_of_a_scripted_sequence() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let (gates, events) = (Arc::default(), Arc::default());
        let app = app(Cache::open("memory://").await.unwrap(), &gates, &events, |b| b);
        common_sequence(&app).await;

        let m = take(&snapshotter);
        let at = |extra: &[(&str, &str)]| labels("memory", extra);
        assert_eq!(counter(&m, "cacheme.gets", &at(&[("operation", "get")])), 5);
        assert_eq!(counter(&m, "cacheme.hits", &at(&[("tier", "remote")])), 1);
        assert_eq!(counter(&m, "cacheme.hits", &at(&[("tier", "local")])), 0);
        assert_eq!(counter(&m, "cacheme.misses", &at(&[])), 4);
        assert_eq!(counter(&m, "cacheme.fetches", &at(&[("result", "ok")])), 2);
        assert_eq!(counter(&m, "cacheme.fetches", &at(&[("result", "error")])), 1);
        assert_eq!(samples(&m, "cacheme.fetch.duration", &at(&[("result", "ok")])), 2);
        assert_eq!(samples(&m, "cacheme.fetch.duration", &at(&[("result", "error")])), 1);
        assert_eq!(counter(&m, "cacheme.coalesced", &at(&[])), 1);
        assert_eq!(counter(&m, "cacheme.lock.waits", &at(&[])), 0);
        assert_eq!(counter(&m, "cacheme.backend.errors", &at(&[("kind", "error")])), 0);
        assert_eq!(gauge(&m, "cacheme.fetch.active", &at(&[])), 0.0);
        assert_eq!(
            get_outcomes(&m, "memory"),
            [("coalesced".into(), 1), ("hit".into(), 1), ("miss".into(), 3)]
        );
        // Each leader's read, then its fill; the hit reads the memory
        // backend's decoded entry (no command), the follower nothing.
        assert_eq!(
            commands(&m, "memory"),
            [command("get", "ok", 3), command("set", "ok", 2)]
        );
        assert_eq!(
            app.client.stats().store("ObsStore").cloned().map(without_times),
            Some(expected(|s| {
                s.gets = 5;
                s.hits = 1;
                s.misses = 4;
                s.fetches = 2;
                s.fetch_errors = 1;
                s.coalesced = 1;
            }))
        );
    }

    #[tokio::test]
    async fn redis_counts_and_labels_of_a_scripted_sequence() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let mut server = RedisServer::start();
        let (gates, events): (Arc<Gates>, _) = (Arc::default(), Arc::default());
        let url = server.url();
        let redis = || Cache::open(&url);
        let a = app(redis().await.unwrap(), &gates, &events, |b| b);
        let b = app(redis().await.unwrap(), &gates, &events, |b| b);
        let b_short = app(redis().await.unwrap(), &gates, &events, |b| {
            b.max_wait(Duration::from_millis(200))
        });
        let c = app(redis().await.unwrap(), &gates, &events, |b| {
            b.breaker(2, Duration::from_secs(3600))
        });
        common_sequence(&a).await;
        redis_sequence(&mut server, &a, &b, &b_short, &c).await;

        let m = take(&snapshotter);
        let at = |extra: &[(&str, &str)]| labels("redis", extra);
        assert_eq!(counter(&m, "cacheme.gets", &at(&[("operation", "get")])), 12);
        let (b_hits, b_fetches) = b_was_served(&b);
        assert_eq!(counter(&m, "cacheme.hits", &at(&[("tier", "remote")])), 1 + b_hits);
        assert_eq!(counter(&m, "cacheme.misses", &at(&[])), 8);
        assert_eq!(counter(&m, "cacheme.fetches", &at(&[("result", "ok")])), 8 + b_fetches);
        assert_eq!(counter(&m, "cacheme.fetches", &at(&[("result", "error")])), 1);
        assert_eq!(counter(&m, "cacheme.coalesced", &at(&[])), 1);
        assert_eq!(counter(&m, "cacheme.lock.waits", &at(&[])), 2);
        assert_eq!(counter(&m, "cacheme.lock.timeouts", &at(&[])), 1);
        assert_eq!(samples(&m, "cacheme.lock.wait.duration", &at(&[])), 2);
        assert_eq!(gauge(&m, "cacheme.lock.wait.active", &at(&[])), 0.0);
        let failures = counter(&m, "cacheme.backend.errors", &at(&[("kind", "error")]))
            + counter(&m, "cacheme.backend.errors", &at(&[("kind", "timeout")]));
        assert_eq!(failures, 2, "the failure reported and the one that opened the breaker");
        assert_eq!(counter(&m, "cacheme.breaker.opens", &at(&[])), 1);
        assert_eq!(
            get_outcomes(&m, "redis"),
            [
                ("coalesced".into(), 1),
                ("degraded".into(), 3),
                ("hit".into(), 1),
                ("miss".into(), 5),
                ("waited".into(), 2)
            ]
        );
        let kinds = events.lock().unwrap().clone();
        let count = |kind| kinds.iter().filter(|&&k| k == kind).count();
        assert_eq!((count(EventKind::Wait), count(EventKind::LockTimeout)), (2, 1));
        assert_eq!(count(EventKind::Degraded), 1);
    }

    /// Hits served in process (here the memory backend's) are all counted
    /// but only sampled into `cacheme.operation.duration`: the store's
    /// first, then one in `in_process_hit_sampling` on the thread; with
    /// sampling 1 every hit is timed. Misses are always timed.
    #[tokio::test]
    async fn hits_served_in_process_are_counted_every_time_and_timed_by_sample() {
        const HITS: usize = 1000;
        for (one_in, timed) in [
            (0, HITS),
            (1, HITS),
            (100, HITS / 100),
            (cacheme::DEFAULT_IN_PROCESS_HIT_SAMPLING, 16),
        ] {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            let _local = metrics::set_default_local_recorder(&recorder);
            let (gates, events) = (Arc::default(), Arc::default());
            let client = |b: cacheme::ClientBuilder| b.in_process_hit_sampling(one_in);
            let app = app(Cache::open("memory://").await.unwrap(), &gates, &events, client);
            for _ in 0..=HITS {
                ObsStore::get(&app, 1).await.unwrap();
            }
            let m = take(&snapshotter);
            let at = |extra: &[(&str, &str)]| labels("memory", extra);
            assert_eq!(
                counter(&m, "cacheme.gets", &at(&[("operation", "get")])),
                HITS as u64 + 1
            );
            assert_eq!(counter(&m, "cacheme.hits", &at(&[("tier", "remote")])), HITS as u64);
            let outcomes = get_outcomes(&m, "memory");
            // The thread's count goes on from the previous rounds: one
            // sample more or less.
            let hits = outcomes.iter().find(|(o, _)| o == "hit").map_or(0, |(_, n)| *n);
            assert!(
                hits.abs_diff(timed) <= 1 && hits >= 1,
                "sampling one in {one_in}: {hits} hits timed, about {timed} expected"
            );
            assert!(outcomes.contains(&("miss".into(), 1)), "{outcomes:?}");
        }
    }

    /// Hits that crossed the network are each timed, and so are the local
    /// tier's by sample (sampling 1 here: every one).
    #[tokio::test]
    async fn redis_hits_are_each_timed() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let server = RedisServer::start();
        let (gates, events) = (Arc::default(), Arc::default());
        let remote = app(Cache::open(&server.url()).await.unwrap(), &gates, &events, |b| b);
        let local = app(Cache::open(&server.url()).await.unwrap(), &gates, &events, |b| {
            b.local(cacheme::LocalTier::new(100)).in_process_hit_sampling(1)
        });
        for _ in 0..=100 {
            ObsStore::get(&remote, 1).await.unwrap();
            ObsStore::get(&local, 1).await.unwrap();
        }
        let outcomes = get_outcomes(&take(&snapshotter), "redis");
        // Which of the local client's gets read Redis depends on when the
        // remote client's fill notice reached it: take the counts from
        // the stats, which count every hit.
        let stats = |app: &App| app.client.stats().store("ObsStore").cloned().unwrap();
        let (remote, local) = (stats(&remote), stats(&local));
        assert!(local.local_hits >= 90, "{local:?}");
        let hits = (remote.hits + local.hits) as usize;
        assert_eq!(
            outcomes,
            [
                ("hit".into(), hits),
                ("local_hit".into(), local.local_hits as usize),
                ("miss".into(), 1)
            ]
        );
    }

    /// `cacheme.local.entries` follows what the local tier holds: up as
    /// values enter, down as `invalidate` and `invalidate_all` drop them.
    #[tokio::test]
    async fn the_local_entries_gauge_follows_the_tier() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let server = RedisServer::start();
        let (gates, events) = (Arc::default(), Arc::default());
        let app = app(Cache::open(&server.url()).await.unwrap(), &gates, &events, |b| {
            b.local(cacheme::LocalTier::new(100))
        });
        // Values enter the tier once its announcements are heard (the
        // client starts listening at its first get).
        ObsStore::get(&app, 1).await.unwrap();
        let started = std::time::Instant::now();
        while !app.client.local_tiers_serving() {
            assert!(started.elapsed() < NEVER, "the local tier never started serving");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A snapshot of the debugging recorder zeroes its gauges: each step
        // below sets the gauge to a value it did not have.
        let entries = || gauge(&take(&snapshotter), "cacheme.local.entries", &labels("redis", &[]));
        for id in [1, 6, 7] {
            ObsStore::get(&app, id).await.unwrap();
        }
        assert_eq!(app.client.local_entries(), 3);
        assert_eq!(entries(), 3.0);
        ObsStore::invalidate(&app, 6).await.unwrap();
        assert_eq!(entries(), 2.0);
        ObsStore::get(&app, 6).await.unwrap();
        ObsStore::invalidate_all(&app, 1).await.unwrap();
        assert_eq!(entries(), 0.0, "3 before invalidate_all");
        assert_eq!(app.client.local_entries(), 0);
    }

    #[tokio::test]
    async fn untyped_commands_are_timed_once_and_without_metrics_not_at_all() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let cache = Cache::open("memory://").await.unwrap();
        cache.put("k", b"v", Duration::from_secs(60)).await.unwrap();
        assert!(cache.get("k").await.unwrap().is_some());
        // A cache made from a timed backend does not time it twice.
        let again = Cache::from_arc(Arc::clone(cache.backend()));
        assert!(again.get("k").await.unwrap().is_some());
        let quiet = cache.clone().without_metrics();
        assert!(quiet.get("k").await.unwrap().is_some());
        assert!(!quiet.exists("absent").await.unwrap());
        assert_eq!(
            commands(&take(&snapshotter), "memory"),
            [command("get", "ok", 2), command("set", "ok", 1)]
        );
    }

    #[tokio::test]
    async fn redis_backend_commands_are_timed_by_operation_and_result() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let mut server = RedisServer::start();
        let (gates, events) = (Arc::default(), Arc::default());
        let cache = Cache::open(&server.url()).await.unwrap();
        let app = app(cache, &gates, &events, |b| b.breaker(1, Duration::from_secs(3600)));
        assert_eq!(ObsStore::get(&app, 1).await.unwrap(), "value 1"); // GET, lock, fill
        app.client.flush().await;
        assert_eq!(ObsStore::get(&app, 1).await.unwrap(), "value 1"); // GET
        let timed = commands(&take(&snapshotter), "redis");
        let labels: Vec<(&str, &str)> = timed
            .iter()
            .map(|(op, result, _)| (op.as_str(), result.as_str()))
            .collect();
        assert_eq!(labels, [("fill", "ok"), ("get", "ok"), ("lock", "ok")]);
        assert_eq!((timed[0].2, timed[1].2), (1, 2), "one fill, two GETs: {timed:?}");
        // The lock was taken once; a fetch slowed past a third of the lock's
        // TTL by a loaded machine also renews it (a `lock` too).
        assert!(timed[2].2 >= 1, "{timed:?}");

        // A read of a stopped server fails (or is cut off at the cache
        // budget): timed all the same.
        server.stop();
        assert_eq!(ObsStore::get(&app, 6).await.unwrap(), "value 6");
        let failed: Vec<_> = commands(&take(&snapshotter), "redis")
            .into_iter()
            .filter(|(op, result, _)| op == "get" && result != "ok")
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(["error", "cancelled"].contains(&failed[0].1.as_str()), "{failed:?}");
        assert_eq!(failed[0].2, 1);
    }
}

/// A `get_m` (or pipeline) whose key another caller is already fetching
/// follows that fetch, and is counted as coalesced as a `get` is.
#[tokio::test]
async fn a_batch_following_another_callers_fetch_is_coalesced() {
    let (gates, events): (Arc<Gates>, Arc<Mutex<Vec<EventKind>>>) = (Arc::default(), Arc::default());
    // The logger opens gate 3 on COALESCED: without it the get of 3 never
    // finishes (and its gate fails the test).
    let app = app(Cache::open("memory://").await.unwrap(), &gates, &events, |b| b);
    let (led, batch) = tokio::join!(ObsStore::get(&app, 3), async {
        app.gates.fetching(3).await;
        ObsStore::get_m(&app).add(3).add(1).run().await.into_all()
    });
    assert_eq!(led.unwrap(), "value 3");
    let batch = batch.unwrap();
    let values: Vec<&String> = batch.iter().collect();
    assert_eq!(values, ["value 3", "value 1"]);
    app.client.flush().await;
    let stats = without_times(app.client.stats().store("ObsStore").cloned().unwrap());
    assert_eq!(
        stats,
        expected(|s| {
            s.gets = 2;
            s.misses = 3;
            s.fetches = 2;
            s.coalesced = 1;
        })
    );
    let kinds = events.lock().unwrap().clone();
    assert_eq!(kinds.iter().filter(|&&k| k == EventKind::Coalesced).count(), 1);
}

/// `stats` without its durations (they depend on the machine).
fn without_times(mut stats: StoreStats) -> StoreStats {
    stats.fetch_time = Duration::ZERO;
    stats.lock_wait_time = Duration::ZERO;
    stats
}

/// Stats with the counters `set` sets, zero elsewhere.
fn expected(set: impl FnOnce(&mut StoreStats)) -> StoreStats {
    let mut stats = StoreStats::default();
    set(&mut stats);
    stats
}

#[tokio::test]
async fn stats_count_the_sequence_per_client_and_reset() {
    let mut server = RedisServer::start();
    let (gates, events): (Arc<Gates>, _) = (Arc::default(), Arc::default());
    let url = server.url();
    let redis = || Cache::open(&url);
    let a = app(redis().await.unwrap(), &gates, &events, |b| b);
    let b = app(redis().await.unwrap(), &gates, &events, |b| b);
    let b_short = app(redis().await.unwrap(), &gates, &events, |b| {
        b.max_wait(Duration::from_millis(200))
    });
    let c = app(redis().await.unwrap(), &gates, &events, |b| {
        b.breaker(2, Duration::from_secs(3600))
    });
    common_sequence(&a).await;
    redis_sequence(&mut server, &a, &b, &b_short, &c).await;

    let a_stats = a.client.stats().store("ObsStore").cloned().unwrap();
    assert!(a_stats.fetch_time > Duration::ZERO);
    assert_eq!(
        without_times(a_stats),
        expected(|s| {
            s.gets = 7;
            s.hits = 1;
            s.misses = 6;
            s.fetches = 4;
            s.fetch_errors = 1;
            s.coalesced = 1;
        })
    );
    let b_stats = b.client.stats().store("ObsStore").cloned().unwrap();
    assert!(b_stats.lock_wait_time > Duration::ZERO);
    let (b_hits, b_fetches) = b_was_served(&b);
    assert_eq!(
        without_times(b_stats),
        expected(|s| {
            s.gets = 1;
            s.hits = b_hits;
            s.fetches = b_fetches;
            s.misses = 1;
            s.lock_waits = 1;
        })
    );
    let short = without_times(b_short.client.reset_stats().store("ObsStore").cloned().unwrap());
    assert_eq!((short.lock_waits, short.lock_timeouts, short.fetches), (1, 1, 1));
    assert_eq!(
        b_short.client.stats().store("ObsStore"),
        Some(&StoreStats::default()),
        "reset zeroes the counters"
    );
    let c_stats = c.client.stats().total();
    assert_eq!(
        (
            c_stats.gets,
            c_stats.fetches,
            c_stats.backend_errors + c_stats.backend_timeouts,
            c_stats.breaker_opens
        ),
        (3, 3, 2, 1)
    );
}

mod spans {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Metadata, Subscriber};

    use super::*;

    /// A span's name and the fields recorded on it.
    type Span = (&'static str, HashMap<String, String>);

    /// Every span, by id (its index + 1).
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<Span>>>);

    struct Fields<'a>(&'a mut HashMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    /// Captures the spans of target `cacheme` and their fields.
    struct Capture {
        spans: Spans,
        next: AtomicU64,
    }

    impl Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target() == "cacheme"
        }

        fn new_span(&self, attributes: &Attributes<'_>) -> Id {
            let mut fields = HashMap::new();
            attributes.record(&mut Fields(&mut fields));
            let mut spans = self.spans.0.lock().unwrap();
            spans.push((attributes.metadata().name(), fields));
            self.next.fetch_add(1, Ordering::Relaxed);
            Id::from_u64(spans.len() as u64)
        }

        fn record(&self, span: &Id, values: &Record<'_>) {
            let mut spans = self.spans.0.lock().unwrap();
            let (_, fields) = &mut spans[span.into_u64() as usize - 1];
            values.record(&mut Fields(fields));
        }

        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[tokio::test]
    async fn every_entry_point_has_a_span_with_store_outcome_and_duration() {
        let spans = Spans::default();
        let _default = tracing::subscriber::set_default(Capture {
            spans: spans.clone(),
            next: AtomicU64::new(0),
        });
        let (gates, events) = (Arc::default(), Arc::default());
        let app = app(Cache::open("memory://").await.unwrap(), &gates, &events, |b| b);
        common_sequence(&app).await;
        ObsStore::get_m(&app).add(1).add(9).run().await.into_all().unwrap();
        ObsStore::update(&app, 1).await.unwrap();
        ObsStore::invalidate(&app, 1).await.unwrap();
        ObsStore::invalidate_all(&app, 1).await.unwrap();

        let spans = spans.0.lock().unwrap().clone();
        let seen: Vec<(&str, &str)> = spans
            .iter()
            .map(|(name, fields)| (*name, fields.get("outcome").map_or("?", String::as_str)))
            .collect();
        assert_eq!(
            seen,
            [
                ("get", "miss"),
                ("get", "hit"),
                ("get", "miss"),
                ("get", "miss"),
                ("get", "coalesced"),
                ("get_m", "miss"),
                ("update", "ok"),
                ("invalidate", "ok"),
                ("invalidate_all", "ok"),
            ]
        );
        for (name, fields) in &spans {
            assert_eq!(fields.get("store").map(String::as_str), Some("ObsStore"), "{name}");
            assert!(fields.contains_key("duration"), "{name}: {fields:?}");
        }
        assert_eq!(
            spans[2].1.get("error").map(String::as_str),
            Some("true"),
            "the failed fetch"
        );
    }
}
