//! Where entries live: hashed names, keys that look like paths, collisions,
//! foreign files, and what `clear` removes.

use serde_json::json;

use crate::{entry_files, files_under, open, temp_dir};

/// SHA-256 of "abc" (FIPS 180-2 test vector).
const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[tokio::test]
async fn file_names_are_sha256_hashes_spread_over_directory_levels() {
    let dir = temp_dir();
    let two = dir.path().join("two");
    let (backend, cache) = open(&two, json!({"FileSuffix": ".cache", "DirectoryLevel": 2})).await;
    cache.put_forever("abc", b"v").await.unwrap();
    let expected = two.join("ba").join("78").join(format!("{SHA256_ABC}.cache"));
    assert_eq!(backend.file_path("abc"), expected);
    assert_eq!(entry_files(&two), [expected]);

    let flat = dir.path().join("flat");
    let (backend, cache) = open(&flat, json!({"FileSuffix": "", "DirectoryLevel": 0})).await;
    cache.put_forever("abc", b"v").await.unwrap();
    assert_eq!(backend.file_path("abc"), flat.join(SHA256_ABC));
    assert_eq!(entry_files(&flat), [flat.join(SHA256_ABC)]);
}

#[tokio::test]
async fn keys_that_look_like_paths_or_hold_nul_bytes_stay_inside_cache_path() {
    let outer = temp_dir();
    let root = outer.path().join("cache");
    let (backend, cache) = open(&root, json!({"DirectoryLevel": 1})).await;
    let keys = [
        "../../etc/passwd",
        "../escape",
        "/etc/passwd",
        "..",
        ".",
        "",
        "a/b/c",
        "a\\..\\b",
        "C:\\Windows",
        "nul\0byte",
        "\0",
        "..\0/../x",
    ];
    for key in keys {
        assert!(backend.file_path(key).starts_with(&root), "{key:?}");
        cache.put_forever(key, key).await.unwrap();
    }
    for key in keys {
        assert_eq!(
            cache.get(key).await.unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key:?}"
        );
    }
    let all = files_under(outer.path());
    assert!(all.iter().all(|path| path.starts_with(&root)), "{all:?}");
    assert_eq!(entry_files(&root).len(), keys.len(), "one file per key");
    assert!(!outer.path().join("etc").exists() && !outer.path().join("escape").exists());
}

#[tokio::test]
async fn a_file_holding_another_key_is_a_miss_not_its_value() {
    let dir = temp_dir();
    let (backend, cache) = open(dir.path(), json!({})).await;
    cache.put_forever("a", b"value of a").await.unwrap();
    // Simulate a hash collision: "b"'s file holds "a"'s entry.
    let b_path = backend.file_path("b");
    std::fs::create_dir_all(b_path.parent().unwrap()).unwrap();
    std::fs::copy(backend.file_path("a"), &b_path).unwrap();

    assert_eq!(cache.get("b").await.unwrap(), None);
    assert_eq!(cache.get_multi(&["b", "a"]).await.unwrap()[0], None);
    assert!(!cache.exists("b").await.unwrap());
    assert!(!cache.delete("b").await.unwrap());
    assert!(b_path.exists(), "deleting b must not remove a file holding another key");
    assert!(cache.backend().set_if_absent("b", b"mine", None).await.unwrap());
    assert_eq!(cache.get("b").await.unwrap().as_deref(), Some(&b"mine"[..]));
    assert_eq!(cache.get("a").await.unwrap().as_deref(), Some(&b"value of a"[..]));
}

#[tokio::test]
async fn a_foreign_or_truncated_file_is_a_miss_and_is_replaced() {
    let dir = temp_dir();
    let (backend, cache) = open(dir.path(), json!({})).await;
    let path = backend.file_path("k");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"\x0e\xff\x81 a Beego gob file").unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert!(!cache.exists("k").await.unwrap());
    cache.put_forever("k", b"v").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    cache.put_forever("long", vec![7u8; 4096]).await.unwrap();
    let long = backend.file_path("long");
    let bytes = std::fs::read(&long).unwrap();
    std::fs::write(&long, &bytes[..22]).unwrap();
    assert_eq!(cache.get("long").await.unwrap(), None, "a truncated file is a miss");
}

#[tokio::test]
async fn clear_removes_this_caches_files_and_leaves_everything_else() {
    let dir = temp_dir();
    let root = dir.path();
    let (a_backend, a) = open(root, json!({"FileSuffix": ".a"})).await;
    let (_, b) = open(root, json!({"FileSuffix": ".b"})).await;
    for i in 0..50 {
        a.put_forever(&format!("k{i}"), b"a").await.unwrap();
    }
    b.put_forever("k1", b"b").await.unwrap();

    let hash_dir = a_backend.file_path("k1").parent().unwrap().to_path_buf();
    let hash = a_backend
        .file_path("k1")
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let foreign = [
        root.join("notes.txt"),
        root.join("ab").join("README"),
        hash_dir.join(format!("{hash}.bak")),
        hash_dir.join(format!("{}.a", hash.to_uppercase())),
        // Our name, but not in the directory its hash belongs to.
        root.join("00").join("00").join(format!("{}.a", "f".repeat(64))),
    ];
    for path in &foreign {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not the cache's").unwrap();
    }
    // A temp file left by a writer that crashed is ours to remove.
    let leftover = hash_dir.join(format!(".{hash}.1.1.tmp"));
    std::fs::write(&leftover, b"half a write").unwrap();

    a.clear().await.unwrap();
    for i in 0..50 {
        assert_eq!(a.get(&format!("k{i}")).await.unwrap(), None);
    }
    assert_eq!(
        b.get("k1").await.unwrap().as_deref(),
        Some(&b"b"[..]),
        "another suffix is another cache"
    );
    for path in &foreign {
        assert_eq!(
            std::fs::read(path).unwrap(),
            b"not the cache's",
            "{path:?} must survive"
        );
    }
    assert!(!leftover.exists(), "a crashed writer's temp file goes with clear");
    for i in 0..50 {
        assert!(!a_backend.file_path(&format!("k{i}")).exists(), "k{i}'s file is gone");
    }
}
