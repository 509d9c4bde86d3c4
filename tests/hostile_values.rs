//! Hostile bytes under store keys: length prefixes claiming 2^64-1, 2^40
//! and 2^32 bytes (2^32-1 in MessagePack, whose lengths are 32-bit), bare
//! and inside a struct or a nested value, and JSON nested past its limit.
//! Every read path on every backend must treat them as undecodable: the
//! typed `get`, `get_m` and pipelines refetch (a miss), `Cache::get_as` and
//! `get_multi_as` return a decode error. None may panic or abort, so each
//! backend runs in a child process (this test binary, started again on the
//! same test as a child doing [`child_reader`]): an abort fails the
//! parent's test instead of killing the test runner.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use cacheme::{Cache, Client, Codec, Context, Error, Op, Pipeline, cache_store};
use cacheme_test_support::child::{self, expect_success};
use cacheme_test_support::{FileFixture, MemcachedServer, RedisCluster, RedisServer};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

/// The child's setting: the cache URL to read from.
const URL: &str = "CACHEME_HOSTILE_URL";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Book {
    id: u64,
    title: String,
}

/// The source never fails; the type is there because a store needs one.
#[derive(Clone, Debug, PartialEq)]
struct Never;

struct App {
    client: Client,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.client
    }
}

fn bytes_of(id: u32) -> Vec<u8> {
    vec![u8::try_from(id % 256).unwrap(); 3]
}

fn text_of(id: u32) -> String {
    format!("text {id}")
}

fn books_of(id: u32) -> Vec<Book> {
    vec![Book {
        id: id.into(),
        title: format!("book {id}"),
    }]
}

fn map_of(id: u32) -> HashMap<String, u64> {
    HashMap::from([(format!("k{id}"), id.into())])
}

fn nested_of(id: u32) -> Vec<Vec<String>> {
    vec![vec![format!("n{id}")], Vec::new()]
}

#[cache_store(key = "hostile-bytes:<id>", ttl = "1m")]
async fn bytes(_app: &App, id: u32) -> Result<Vec<u8>, Never> {
    Ok(bytes_of(id))
}

#[cache_store(key = "hostile-text:<id>", ttl = "1m")]
async fn text(_app: &App, id: u32) -> Result<String, Never> {
    Ok(text_of(id))
}

#[cache_store(key = "hostile-books:<id>", ttl = "1m")]
async fn books(_app: &App, id: u32) -> Result<Vec<Book>, Never> {
    Ok(books_of(id))
}

#[cache_store(key = "hostile-map:<id>", ttl = "1m")]
async fn map(_app: &App, id: u32) -> Result<HashMap<String, u64>, Never> {
    Ok(map_of(id))
}

#[cache_store(key = "hostile-nested:<id>", ttl = "1m")]
async fn nested(_app: &App, id: u32) -> Result<Vec<Vec<String>>, Never> {
    Ok(nested_of(id))
}

/// bincode's varint of a length: 253, then the u64 little endian.
fn bincode_len(len: u64) -> Vec<u8> {
    let mut bytes = vec![253];
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes
}

/// The hostile values of `codec`; none decodes as any store's type.
fn hostile(codec: Codec) -> Vec<Vec<u8>> {
    match codec {
        Codec::Bincode => [u64::MAX, 1 << 40, 1 << 32]
            .into_iter()
            .flat_map(|len| {
                // One book, id 7, a title claiming `len` bytes.
                let in_struct = [vec![1, 7], bincode_len(len)].concat();
                // One inner vec claiming `len` elements (as a map: one
                // entry whose key claims `len` bytes).
                let nested = [vec![1], bincode_len(len)].concat();
                [bincode_len(len), in_struct, nested]
            })
            .collect(),
        // str32, bin32, array32, map32 claiming 2^32-1, bare and nested.
        Codec::MessagePack => [0xdb, 0xc6, 0xdd, 0xdf]
            .into_iter()
            .flat_map(|marker| {
                let bare = [vec![marker], u32::MAX.to_be_bytes().to_vec()].concat();
                let nested = [vec![0x91, 0x92, marker], u32::MAX.to_be_bytes().to_vec()].concat();
                [bare, nested]
            })
            .collect(),
        Codec::Json => vec!["[".repeat(100_000).into_bytes(), b"[\"\\u".to_vec()],
        _ => unreachable!("a codec this test does not know"),
    }
}

/// The key a store key is stored under: backends that cannot list keys
/// (memcached) add the store's generation, `:g0` until an `invalidate_all`.
fn stored(client: &Client, key: String) -> String {
    if client.cache().backend().supports_delete_matching() {
        key
    } else {
        format!("{key}:g0")
    }
}

/// Every store's key of `id`, as stored.
fn keys_of(client: &Client, id: u32) -> [String; 5] {
    [
        BytesStore::key(&id),
        TextStore::key(&id),
        BooksStore::key(&id),
        MapStore::key(&id),
        NestedStore::key(&id),
    ]
    .map(|key| stored(client, key))
}

/// Writes hostile value `id` under the key of `id` in every store.
async fn plant(client: &Client, values: &[Vec<u8>]) {
    for (id, value) in (0u32..).zip(values) {
        for key in keys_of(client, id) {
            client.cache().put(&key, value, Duration::from_secs(60)).await.unwrap();
        }
    }
}

/// `get` of every store and every planted id, concurrently: each refetches.
async fn typed_gets(app: &App, ids: &[u32]) {
    join_all(ids.iter().map(|&id| async move {
        assert_eq!(BytesStore::get(app, id).await.unwrap(), bytes_of(id));
        assert_eq!(TextStore::get(app, id).await.unwrap(), text_of(id));
        assert_eq!(BooksStore::get(app, id).await.unwrap(), books_of(id));
        assert_eq!(MapStore::get(app, id).await.unwrap(), map_of(id));
        assert_eq!(NestedStore::get(app, id).await.unwrap(), nested_of(id));
    }))
    .await;
}

/// One `get_m` per store over every planted id.
async fn multi_gets(app: &App, ids: &[u32]) {
    macro_rules! run {
        ($store:ident) => {
            async {
                let mut multi = $store::get_m(app);
                for &id in ids {
                    multi.push(id);
                }
                multi.run().await.into_all().unwrap()
            }
        };
    }
    let (bytes, text, books, map, nested) = futures_util::join!(
        run!(BytesStore),
        run!(TextStore),
        run!(BooksStore),
        run!(MapStore),
        run!(NestedStore)
    );
    for &id in ids {
        assert_eq!(bytes.get(&id), Some(&bytes_of(id)));
        assert_eq!(text.get(&id), Some(&text_of(id)));
        assert_eq!(books.get(&id), Some(&books_of(id)));
        assert_eq!(map.get(&id), Some(&map_of(id)));
        assert_eq!(nested.get(&id), Some(&nested_of(id)));
    }
}

/// One pipeline over every store and every planted id.
async fn pipelined_gets(app: &App, ids: &[u32]) {
    let mut pipeline = Pipeline::new();
    let promises: Vec<_> = ids
        .iter()
        .map(|&id| {
            (
                id,
                BytesStore::get_p(app, &mut pipeline, id),
                TextStore::get_p(app, &mut pipeline, id),
                BooksStore::get_p(app, &mut pipeline, id),
                MapStore::get_p(app, &mut pipeline, id),
                NestedStore::get_p(app, &mut pipeline, id),
            )
        })
        .collect();
    pipeline.execute().await.unwrap();
    for (id, bytes, text, books, map, nested) in promises {
        assert_eq!(bytes.into_result().unwrap(), bytes_of(id));
        assert_eq!(text.into_result().unwrap(), text_of(id));
        assert_eq!(books.into_result().unwrap(), books_of(id));
        assert_eq!(map.into_result().unwrap(), map_of(id));
        assert_eq!(nested.into_result().unwrap(), nested_of(id));
    }
}

fn assert_decode_error<T: std::fmt::Debug>(result: cacheme::Result<T>, what: &str) {
    match result {
        Err(Error::Codec { op: Op::Decode, .. }) => {}
        other => panic!("{what}: expected a decode error, got {other:?}"),
    }
}

/// `Cache::get_as` and `get_multi_as` of every planted key: decode errors.
async fn untyped_gets(client: &Client, codec: Codec, ids: &[u32]) {
    let cache = client.cache().clone().with_codec(codec);
    for &id in ids {
        let [bytes, text, books, map, nested] = keys_of(client, id);
        assert_decode_error(cache.get_as::<Vec<u8>>(&bytes).await, &bytes);
        assert_decode_error(cache.get_as::<String>(&text).await, &text);
        assert_decode_error(cache.get_as::<Vec<Book>>(&books).await, &books);
        assert_decode_error(cache.get_as::<HashMap<String, u64>>(&map).await, &map);
        assert_decode_error(cache.get_as::<Vec<Vec<String>>>(&nested).await, &nested);
    }
    let all: Vec<String> = ids.iter().flat_map(|&id| keys_of(client, id)).collect();
    assert_decode_error(cache.get_multi_as::<String, _>(&all).await, "get_multi_as");
    assert_decode_error(cache.get_multi_as::<Vec<Book>, _>(&all).await, "get_multi_as");
}

/// Runs every read path over every codec's hostile values on `url`.
async fn read_everything(url: &str) {
    let cache = Cache::open(url).await.unwrap();
    for codec in [Codec::Bincode, Codec::Json, Codec::MessagePack] {
        let app = App {
            // A short lock: how long a get waits on a value that exists but
            // does not decode is not this test's subject.
            client: Client::builder()
                .cache(cache.clone())
                .codec(codec)
                .lock_ttl(Duration::from_millis(100))
                .build()
                .unwrap(),
        };
        let values = hostile(codec);
        let ids: Vec<u32> = (0u32..).take(values.len()).collect();
        plant(&app.client, &values).await;
        untyped_gets(&app.client, codec, &ids).await;
        typed_gets(&app, &ids).await;
        plant(&app.client, &values).await;
        multi_gets(&app, &ids).await;
        plant(&app.client, &values).await;
        pipelined_gets(&app, &ids).await;
        println!("{codec:?}: {} hostile values read on every path", values.len());
    }
}

/// The child: reads everything from the cache at `$CACHEME_HOSTILE_URL`.
async fn child_reader() {
    let url = std::env::var(URL).expect("the child's cache");
    read_everything(&url).await;
    println!("child {} done", std::process::id());
}

async fn in_a_child(url: &str) {
    let mut command = child::this_test_again();
    command.env(URL, url);
    expect_success(command.spawn().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_misses_or_decode_errors_on_memory() {
    if child::is_child() {
        return child_reader().await;
    }
    in_a_child("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_misses_or_decode_errors_on_redis() {
    if child::is_child() {
        return child_reader().await;
    }
    let server = RedisServer::start();
    in_a_child(&format!("{}?prefix=hostile", server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_misses_or_decode_errors_on_a_redis_cluster() {
    if child::is_child() {
        return child_reader().await;
    }
    let cluster = RedisCluster::builder().replicas(0).start();
    in_a_child(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_misses_or_decode_errors_on_memcached() {
    if child::is_child() {
        return child_reader().await;
    }
    let server = MemcachedServer::start();
    in_a_child(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_misses_or_decode_errors_on_files() {
    if child::is_child() {
        return child_reader().await;
    }
    let dir = FileFixture::start();
    in_a_child(&format!("file://{}", dir.path().display())).await;
}
