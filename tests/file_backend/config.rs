//! Beego JSON and `file://` URLs, relative paths, and config errors that
//! name their field.

use std::time::Duration;

use cacheme::{Cache, Error};

use crate::{entry_files, temp_dir};

fn field_of(err: &Error) -> Option<&str> {
    match err {
        Error::Config { field, .. } => field.as_deref(),
        _ => None,
    }
}

#[tokio::test]
async fn beego_json_with_its_four_keys() {
    let dir = temp_dir();
    let root = dir.path().join("cache");
    let config = serde_json::json!({
        "CachePath": root, "FileSuffix": ".cache", "DirectoryLevel": 2, "EmbedExpiry": 120,
    });
    let cache = Cache::new("file", &config.to_string()).await.unwrap();
    assert_eq!(cache.provider(), "file");
    cache.put("user:1", b"ann", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("user:1").await.unwrap().as_deref(), Some(&b"ann"[..]));

    let files = entry_files(&root);
    assert_eq!(files.len(), 1, "{files:?}");
    let relative = files[0].strip_prefix(&root).unwrap();
    assert_eq!(relative.components().count(), 3, "two directory levels: {relative:?}");
    assert!(relative.to_str().unwrap().ends_with(".cache"), "{relative:?}");

    // Beego writes numbers as strings; the same cache opens with them.
    let config = serde_json::json!({
        "CachePath": root, "FileSuffix": ".cache", "DirectoryLevel": "2", "EmbedExpiry": "0",
    });
    let again = Cache::new("file", &config.to_string()).await.unwrap();
    assert_eq!(again.get("user:1").await.unwrap().as_deref(), Some(&b"ann"[..]));
}

#[tokio::test]
async fn file_url_with_settings_in_the_query() {
    let dir = temp_dir();
    let root = dir.path().join("from url");
    let url = format!("file://{}?DirectoryLevel=1&FileSuffix=.c&interval=0", root.display()).replace(' ', "%20");
    let cache = Cache::open(&url).await.unwrap();
    cache.put_forever("k", b"v").await.unwrap();
    let files = entry_files(&root);
    assert_eq!(files.len(), 1, "{files:?}");
    let relative = files[0].strip_prefix(&root).unwrap();
    assert_eq!(relative.components().count(), 2, "one directory level: {relative:?}");
    assert!(relative.to_str().unwrap().ends_with(".c"));
}

#[tokio::test]
async fn relative_cache_path_is_relative_to_the_working_directory_and_created() {
    let base = tempfile::Builder::new()
        .prefix(".cacheme-file-test-")
        .tempdir_in(".")
        .unwrap();
    let name = base.path().file_name().unwrap().to_str().unwrap();
    let relative = format!("{name}/nested/cache");
    let config = serde_json::json!({ "CachePath": relative });
    let cache = Cache::new("file", &config.to_string()).await.unwrap();
    cache.put_forever("k", b"v").await.unwrap();
    let root = std::env::current_dir().unwrap().join(&relative);
    assert!(root.is_dir(), "{root:?} was not created");
    assert_eq!(entry_files(&root).len(), 1);
}

#[tokio::test]
async fn an_unusable_cache_path_is_a_config_error_naming_it() {
    let dir = temp_dir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    for path in [file.clone(), file.join("below")] {
        let config = serde_json::json!({ "CachePath": path });
        let err = Cache::new("file", &config.to_string()).await.unwrap_err();
        assert_eq!(field_of(&err), Some("CachePath"), "{err}");
        assert!(err.to_string().contains("a-file"), "the path is named: {err}");
    }
}

#[tokio::test]
async fn bad_settings_name_their_field() {
    let dir = temp_dir();
    let root = dir.path().display().to_string();
    for (url, field) in [
        (format!("file://{root}?DirectoryLevel=9"), "DirectoryLevel"),
        (format!("file://{root}?FileSuffix=/x"), "FileSuffix"),
        (format!("file://{root}?CachePath=/elsewhere"), "CachePath"),
        (format!("file://{root}?interval=soon"), "interval"),
        ("file://somehost/cache".to_owned(), "url"),
    ] {
        let err = Cache::open(&url).await.unwrap_err();
        assert_eq!(field_of(&err), Some(field), "{url}: {err}");
    }
    let err = Cache::new("file", r#"{"CachePath":"x","DirectoryLevel":-1}"#)
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("DirectoryLevel"), "{err}");
}

#[test]
fn the_provider_is_registered() {
    assert!(cacheme::providers().contains(&"file".to_owned()));
}
