//! A real `memcached` on a free loopback port, run from a temp dir, killed
//! on drop; and [`MemcachedFixture`], the conformance suite's memcache
//! caches on one.
//!
//! The binary is `memcached` from `PATH`, or `$CACHEME_MEMCACHED`. A missing
//! binary fails the test loudly: a test that needs memcached never passes
//! without it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cacheme_runtime::{BoxFuture, Cache};
use tempfile::TempDir;

use crate::conformance::Fixture;
use crate::ports::free_port;

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
        let dir = tempfile::Builder::new()
            .prefix("cacheme-memcached-")
            .tempdir()
            .expect("create a temp dir for memcached");
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: retry.
        for _ in 0..5 {
            let mut server = MemcachedServer {
                child: None,
                port: free_port(),
                dir: dir.path().to_path_buf(),
                _dir: None,
                builder: self.clone(),
            };
            match server.spawn() {
                Ok(()) => {
                    server._dir = Some(dir);
                    return server;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("memcached did not start: {last_error}");
    }
}

/// A running `memcached` owned by one test.
pub struct MemcachedServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _dir: Option<TempDir>,
    builder: MemcachedServerBuilder,
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
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `memcache://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    /// Sends raw protocol text and returns the reply once it ends with
    /// `end` (e.g. `"END\r\n"`, `"HD\r\n"`), for tests that look at what a
    /// backend stored. Panics if the server does not answer within 5 s.
    pub fn command(&self, request: &[u8], end: &str) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to memcached");
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server, then starts a fresh one (empty, same settings) on
    /// the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("memcached did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var("CACHEME_MEMCACHED").unwrap_or_else(|_| "memcached".to_owned());
        let log = std::fs::File::create(self.dir.join("memcached.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&binary);
        cmd.args(["-l", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            // No UDP; `-u` only matters when running as root (memcached
            // refuses root without it) and is ignored otherwise.
            .args(["-U", "0", "-u", "root", "-m", "64", "-c", "1024"])
            .current_dir(&self.dir);
        if let Some(size) = &self.builder.item_size {
            cmd.args(["-I", size]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {binary:?}: {e}. Install memcached (scripts/test does it with apt-get) \
                     or point CACHEME_MEMCACHED at the binary."
                )
            });
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("memcached.log")).unwrap_or_default();
                self.child = None;
                return Err(format!("exited with {status}; log:\n{log}"));
            }
            if answers_version(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err(format!("did not answer `version` on port {} within 10 s", self.port))
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

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        self.stop();
    }
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
