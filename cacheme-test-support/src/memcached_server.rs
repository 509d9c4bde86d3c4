//! A real `memcached` on a free loopback port, run from a temp dir, killed
//! on drop; and [`MemcachedFixture`], the conformance suite's memcache
//! caches on one.
//!
//! The binary is `memcached` from `PATH`, or `$CACHEME_MEMCACHED`. A missing
//! binary fails the test loudly: a test that needs memcached never passes
//! without it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cacheme_runtime::{BoxFuture, Cache};

use crate::conformance::Fixture;
use crate::process::{Launch, ServerProcess};

/// How to start a [`MemcachedServer`].
#[derive(Clone, Debug, Default)]
pub struct MemcachedServerBuilder {
    item_size: Option<String>,
}

impl MemcachedServerBuilder {
    /// The largest item the server stores (memcached's `-I`, e.g. `"2m"`;
    /// memcached's default is 1 MiB).
    pub fn item_size(mut self, size: &str) -> Self {
        self.item_size = Some(size.to_owned());
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> MemcachedServer {
        MemcachedServer {
            process: ServerProcess::start(self, None, |_| {}),
        }
    }
}

impl Launch for MemcachedServerBuilder {
    const BINARY: &'static str = "memcached";
    const BINARY_VAR: &'static str = "CACHEME_MEMCACHED";
    const LOG: &'static str = "stderr.log";

    fn configure(&self, cmd: &mut Command, _dir: &Path, port: u16) {
        cmd.args(["-l", "127.0.0.1", "-p"])
            .arg(port.to_string())
            // No UDP; `-u` only matters when running as root (memcached
            // refuses root without it) and is ignored otherwise.
            .args(["-U", "0", "-u", "root", "-m", "64", "-c", "1024"]);
        if let Some(size) = &self.item_size {
            cmd.args(["-I", size]);
        }
    }

    fn ready(&self, _dir: &Path, port: u16) -> bool {
        answers_version(port)
    }
}

/// A running `memcached` owned by one test.
pub struct MemcachedServer {
    process: ServerProcess<MemcachedServerBuilder>,
}

impl MemcachedServer {
    /// Starts a server with memcached's defaults (1 MiB items, 64 MiB memory).
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder, for another item size.
    pub fn builder() -> MemcachedServerBuilder {
        MemcachedServerBuilder::default()
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.process.port())
    }

    /// `memcache://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.process.port())
    }

    /// Sends raw protocol text and returns the reply once it ends with
    /// `end` (e.g. `"END\r\n"`, `"HD\r\n"`), for tests that look at what a
    /// backend stored. Panics if the server does not answer within 5 s.
    pub fn command(&self, request: &[u8], end: &str) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.process.port())).expect("connect to memcached");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request).expect("write to memcached");
        let mut reply = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        while !reply.ends_with(end.as_bytes()) {
            let n = stream.read(&mut chunk).expect("read from memcached");
            assert!(
                n > 0,
                "memcached closed the connection; got {:?}",
                String::from_utf8_lossy(&reply)
            );
            reply.extend_from_slice(&chunk[..n]);
        }
        reply
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The port stays
    /// reserved for [`restart`](MemcachedServer::restart).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops the server, then starts a fresh one (empty, same settings) on
    /// the same port.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// Freezes the server (SIGSTOP): its port still accepts connections
    /// and its clients' connections stay open, but nothing is answered
    /// until [`thaw`](MemcachedServer::thaw). A server still frozen when
    /// it is stopped or dropped is thawed first.
    pub fn freeze(&mut self) {
        self.process.freeze();
    }

    /// Resumes a [`freeze`](MemcachedServer::freeze)d server (SIGCONT).
    pub fn thaw(&mut self) {
        self.process.thaw();
    }

    /// Every live item's key (`lru_crawler metadump all`, keys as memcached
    /// writes them there: URL-encoded, so `:` reads `%3A` and `#` `%23`).
    pub fn keys(&self) -> Vec<String> {
        self.items().into_iter().map(|(key, _)| key).collect()
    }

    /// Every live item's key (as in [`keys`](MemcachedServer::keys)) and
    /// when it expires, in seconds since the Unix epoch (`None`: never).
    pub fn items(&self) -> Vec<(String, Option<u64>)> {
        let dump = self.command(b"lru_crawler metadump all\r\n", "END\r\n");
        String::from_utf8_lossy(&dump)
            .lines()
            .filter_map(|line| {
                let field = |name: &str| line.split(' ').find_map(|part| part.strip_prefix(name));
                let key = field("key=")?.to_owned();
                Some((key, field("exp=").and_then(|exp| exp.parse().ok())))
            })
            .collect()
    }
}

fn answers_version(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"VERSION "))
}

/// memcache caches on a `memcached` started for this test with 2 MiB items
/// (so the suite's 1 MiB value fits with its key and overhead); the
/// namespace is the key prefix (`key`).
pub struct MemcachedFixture {
    /// The server, for tests that want to look at it directly.
    pub server: MemcachedServer,
}

impl MemcachedFixture {
    /// Starts the server.
    pub fn start() -> Self {
        MemcachedFixture {
            server: MemcachedServer::builder().item_size("2m").start(),
        }
    }
}

impl Fixture for MemcachedFixture {
    fn cache<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Cache> {
        Box::pin(async move {
            let config = format!(r#"{{"key":"{namespace}","conn":"{}"}}"#, self.server.addr());
            Cache::new("memcache", &config).await.expect("memcache cache")
        })
    }
}
