//! One directory, several processes and threads: each sees the others'
//! writes, counters and locks are atomic across them, and no reader ever
//! sees a torn value.
//!
//! The other process is this test binary run again on the test that starts
//! it, as a child ([`child::is_child`]) doing [`child_worker`], the
//! environment telling it what to do.

use cacheme_test_support::child::{self, expect_success};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme::Cache;
use serde_json::json;

use crate::temp_dir;

/// What the child does: `share` or `torn-writer`.
const MODE: &str = "CACHEME_FILE_CHILD_MODE";
/// The `CachePath` the child opens.
const DIR: &str = "CACHEME_FILE_CHILD_DIR";

/// Tasks per process incrementing one counter, and increments per task.
const TASKS: usize = 4;
const INCRS: usize = 100;
/// Keys both processes race to take with `set_if_absent`.
const SLOTS: usize = 100;
/// Versions of the big value the writer goes through.
const VERSIONS: usize = 150;

async fn cache_on(dir: &Path) -> Cache {
    let config = json!({ "CachePath": dir, "interval": 0 });
    Cache::new("file", &config.to_string()).await.unwrap()
}

/// What the child process does, by its [`MODE`].
async fn child_worker() {
    let mode = std::env::var(MODE).expect("the child's mode");
    let dir = std::env::var(DIR).expect("the child's directory");
    let cache = cache_on(Path::new(&dir)).await;
    match mode.as_str() {
        "share" => {
            assert_eq!(
                cache.get("parent-says").await.unwrap().as_deref(),
                Some(&b"hello from the parent"[..]),
                "the child must see the parent's write"
            );
            cache.put_forever("child-says", "hello from the child").await.unwrap();
            cache.put_forever("child-ready", "1").await.unwrap();
            wait_for(&cache, "go").await;
            race(&cache, "child").await;
        }
        "torn-writer" => {
            for version in 1..=VERSIONS {
                cache.put_forever("big", big_value(version)).await.unwrap();
            }
            cache.put_forever("writer-done", "1").await.unwrap();
        }
        other => panic!("unknown child mode {other:?}"),
    }
}

fn spawn_child(mode: &str, dir: &Path) -> tokio::process::Child {
    child::this_test_again().env(MODE, mode).env(DIR, dir).spawn().unwrap()
}

/// Polls until `key` exists (bounded).
async fn wait_for(cache: &Cache, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cache.exists(key).await.unwrap() {
        assert!(Instant::now() < deadline, "{key:?} never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What both processes do at once: increment one counter from several
/// tasks, and race for the slots, counting the ones won.
async fn race(cache: &Cache, who: &'static str) {
    let incrementers: Vec<_> = (0..TASKS)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for _ in 0..INCRS {
                    cache.incr("n").await.unwrap();
                }
            })
        })
        .collect();
    for slot in 0..SLOTS {
        let key = format!("slot-{slot}");
        if cache.backend().set_if_absent(&key, who.as_bytes(), None).await.unwrap() {
            cache.incr("wins").await.unwrap();
        }
    }
    for task in incrementers {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_writes_counters_and_locks() {
    if child::is_child() {
        return child_worker().await;
    }
    let dir = temp_dir();
    let cache = cache_on(dir.path()).await;
    cache.put_forever("parent-says", "hello from the parent").await.unwrap();
    let mut child = spawn_child("share", dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cache.exists("child-ready").await.unwrap() {
        if let Some(status) = child.try_wait().unwrap() {
            expect_success(child).await;
            panic!("the child exited ({status}) before it was ready");
        }
        assert!(Instant::now() < deadline, "the child never got ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cache.get("child-says").await.unwrap().as_deref(),
        Some(&b"hello from the child"[..]),
        "the parent must see the child's write"
    );
    cache.put_forever("go", "1").await.unwrap();
    race(&cache, "parent").await;
    expect_success(child).await;

    assert_eq!(
        cache.get_counter("n").await.unwrap(),
        Some((2 * TASKS * INCRS) as i64),
        "increments from two processes must all count"
    );
    assert_eq!(
        cache.get_counter("wins").await.unwrap(),
        Some(SLOTS as i64),
        "each slot is won by exactly one process"
    );
    for slot in 0..SLOTS {
        let owner = cache.get(&format!("slot-{slot}")).await.unwrap().unwrap();
        assert!(owner == b"parent" || owner == b"child", "{owner:?}");
    }
}

/// Version `v` of the big value: its length and every byte say which
/// version it is, so a mix of two versions is detected.
fn big_value(version: usize) -> Vec<u8> {
    vec![version as u8; 200_000 + version * 997]
}

/// Panics unless `read` is exactly one version of [`big_value`]. (A torn
/// file shows as a miss, or as bytes of two versions.)
fn check_whole(read: Option<Vec<u8>>) -> usize {
    let bytes = read.expect("a reader found no value while the key was being rewritten: a torn file");
    let version = usize::from(bytes[0]);
    assert!(
        bytes.len() == 200_000 + version * 997 && bytes.iter().all(|&b| usize::from(b) == version),
        "torn read: {} bytes starting with version {version}",
        bytes.len()
    );
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_in_another_process_never_sees_a_torn_value() {
    if child::is_child() {
        return child_worker().await;
    }
    let dir = temp_dir();
    let cache = cache_on(dir.path()).await;
    cache.put_forever("big", big_value(0)).await.unwrap();
    let child = spawn_child("torn-writer", dir.path());
    let mut reads = 0;
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = cache.exists("writer-done").await.unwrap();
        last = check_whole(cache.get("big").await.unwrap()).max(last);
        reads += 1;
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never finished");
    }
    expect_success(child).await;
    assert_eq!(
        last, VERSIONS,
        "the last read after the writer finished sees its last version"
    );
    assert!(reads > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_in_other_threads_never_see_a_torn_value() {
    let dir = temp_dir();
    let cache = cache_on(dir.path()).await;
    cache.put_forever("big", big_value(0)).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cache, done, reads) = (cache.clone(), done.clone(), reads.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Acquire) {
                    check_whole(cache.get("big").await.unwrap());
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for version in 1..=VERSIONS {
        cache.put_forever("big", big_value(version)).await.unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(check_whole(cache.get("big").await.unwrap()), VERSIONS);
    assert!(reads.load(Ordering::Relaxed) > 0);
}
