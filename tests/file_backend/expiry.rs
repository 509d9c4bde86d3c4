//! Expired files: a miss at once, removed by the read that finds them and
//! by the background sweep, which stops with its backend.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{open, temp_dir};

/// Polls until `path` is gone; false if it is still there after `limit`.
async fn gone_within(path: &std::path::Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !path.exists()
}

#[tokio::test]
async fn expired_files_are_removed_by_the_read_that_finds_them() {
    let dir = temp_dir();
    let (backend, cache) = open(dir.path(), json!({"interval": 0})).await;
    for key in ["by-get", "by-exists", "by-get-multi"] {
        cache.put(key, b"v", Duration::from_millis(200)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for key in ["by-get", "by-exists", "by-get-multi"] {
        assert!(
            backend.file_path(key).exists(),
            "no sweeper runs: {key} is still on disk"
        );
    }
    assert_eq!(cache.get("by-get").await.unwrap(), None);
    assert!(!cache.exists("by-exists").await.unwrap());
    assert_eq!(cache.get_multi(&["by-get-multi"]).await.unwrap(), [None]);
    for key in ["by-get", "by-exists", "by-get-multi"] {
        assert!(!backend.file_path(key).exists(), "{key} was read expired and removed");
    }
}

#[tokio::test]
async fn the_background_sweep_removes_expired_files_at_the_interval() {
    let dir = temp_dir();
    let (backend, cache) = open(dir.path(), json!({"interval": 1})).await;
    cache.put("short", b"v", Duration::from_millis(200)).await.unwrap();
    cache.put("long", b"v", Duration::from_secs(600)).await.unwrap();
    cache.put_forever("forever", b"v").await.unwrap();
    assert!(
        gone_within(&backend.file_path("short"), Duration::from_secs(15)).await,
        "the sweeper never removed the expired file"
    );
    assert!(backend.file_path("long").exists() && backend.file_path("forever").exists());
}

#[tokio::test]
async fn sweep_now_counts_what_it_removed() {
    let dir = temp_dir();
    let (backend, cache) = open(dir.path(), json!({"interval": 0})).await;
    for i in 0..3 {
        cache
            .put(&format!("k{i}"), b"v", Duration::from_millis(100))
            .await
            .unwrap();
    }
    cache.put_forever("keep", b"v").await.unwrap();
    let hash = backend
        .file_path("keep")
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let leftover = backend.file_path("keep").with_file_name(format!(".{hash}.99.0.tmp"));
    std::fs::write(&leftover, b"half a write").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.sweep().await.unwrap(),
        4,
        "three expired entries and a temp file"
    );
    assert_eq!(cache.get("keep").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn the_sweeper_stops_when_its_backend_is_dropped() {
    let dir = temp_dir();
    let (backend, cache) = open(dir.path(), json!({"interval": 1})).await;
    drop((backend, cache));
    // Another cache on the directory, without a sweeper of its own.
    let (backend, cache) = open(dir.path(), json!({"interval": 0})).await;
    cache.put("k", b"v", Duration::from_millis(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        backend.file_path("k").exists(),
        "a dropped backend's sweeper must not keep sweeping"
    );
    assert_eq!(cache.get("k").await.unwrap(), None);
}
