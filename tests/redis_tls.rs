//! `rediss://` against a real redis-server that serves TLS only, with a
//! certificate signed by a throwaway CA (built with `--features redis-tls`).

use std::time::Duration;

use cacheme::{Cache, Error};
use cacheme_test_support::RedisServer;

#[tokio::test]
async fn rediss_insecure_puts_gets_and_increments_over_tls() {
    let server = RedisServer::builder().tls().start();
    let cache = Cache::open(&server.tls_url()).await.unwrap();
    cache.put("greeting", b"hello", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("greeting").await.unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(cache.incr("hits").await.unwrap(), 1);
    assert_eq!(cache.incr("hits").await.unwrap(), 2);
    assert!(cache.exists("greeting").await.unwrap());
}

#[tokio::test]
async fn rediss_with_a_password_and_prefix_over_tls() {
    let server = RedisServer::builder().tls().password("s3cret").start();
    let url = format!("rediss://:s3cret@127.0.0.1:{}/2?prefix=tls#insecure", server.port());
    let cache = Cache::open(&url).await.unwrap();
    cache.put_forever("k", b"v").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn rediss_verifies_the_certificate_unless_insecure() {
    let server = RedisServer::builder().tls().start();
    // The throwaway CA is in no trust store, so verification must fail.
    let url = format!("rediss://127.0.0.1:{}/", server.port());
    let err = Cache::open(&url).await.unwrap_err();
    assert!(matches!(&err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&server.addr()), "{err}");
}

#[tokio::test]
async fn plain_redis_to_a_tls_port_is_a_connect_error() {
    let server = RedisServer::builder().tls().start();
    let err = Cache::open(&server.url()).await.unwrap_err();
    assert!(matches!(&err, Error::Connect { .. }), "{err:?}");
}
