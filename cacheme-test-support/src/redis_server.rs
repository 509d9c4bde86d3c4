//! A real `redis-server` on a free loopback port, in a temp dir, with no
//! persistence, killed on drop.
//!
//! The binary is `redis-server` from `PATH`, or `$CACHEME_REDIS_SERVER`.
//! A missing binary fails the test loudly: a test that needs Redis never
//! passes without it. A TLS server ([`RedisServerBuilder::tls`]) also needs
//! the `openssl` and `redis-cli` commands (scripts/test installs them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ports::free_port;

/// How to start a [`RedisServer`].
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    users: Vec<(String, String)>,
    args: Vec<String>,
    tls: bool,
}

impl RedisServerBuilder {
    /// Requires `password` from the default user (`requirepass`).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Adds an ACL user with full access and this password.
    pub fn acl_user(mut self, user: &str, password: &str) -> Self {
        self.users.push((user.to_owned(), password.to_owned()));
        self
    }

    /// Passes more arguments to `redis-server` (after the defaults, so they
    /// win), e.g. `["--cluster-enabled", "yes"]`. Relative paths are
    /// relative to the server's temp dir.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Serves TLS only (no plain port), with a certificate for 127.0.0.1
    /// signed by a throwaway CA made in the server's temp dir
    /// ([`RedisServer::ca_cert`]). Clients are not asked for certificates.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("cacheme-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        if self.tls {
            make_certificates(dir.path());
        }
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
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
        panic!("redis-server did not start: {last_error}");
    }
}

/// A running `redis-server` owned by one test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _dir: Option<TempDir>,
    builder: RedisServerBuilder,
}

impl RedisServer {
    /// Starts a server with no password.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for a server with a password or ACL users.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's temp dir (its log is `redis.log` there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether the server process is running (not [`stop`](RedisServer::stop)ped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis://127.0.0.1:PORT` (add credentials and db yourself).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:PORT/#insecure`, for a [`tls`](RedisServerBuilder::tls)
    /// server: TLS without verifying its self-signed certificate.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/#insecure", self.port)
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The port stays
    /// reserved for [`restart`](RedisServer::restart).
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
                Err(e) if Instant::now() > deadline => panic!("redis-server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var("CACHEME_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut cmd = Command::new(&binary);
        if self.builder.tls {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .arg("--logfile")
        .arg(self.dir.join("redis.log"));
        if let Some(password) = &self.builder.password {
            cmd.args(["--requirepass", password]);
        }
        for (user, password) in &self.builder.users {
            cmd.args(["--user", user, "on", &format!(">{password}"), "~*", "&*", "+@all"]);
        }
        cmd.args(&self.builder.args).current_dir(&self.dir);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {binary:?}: {e}. Install redis-server (scripts/test does it with apt-get) \
                     or point CACHEME_REDIS_SERVER at the binary."
                )
            });
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                self.child = None;
                return Err(format!("exited with {status}; log:\n{log}"));
            }
            let ready = if self.builder.tls {
                answers_tls_ping(self.port, &self.ca_cert())
            } else {
                answers_ping(self.port)
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err(format!("did not answer PING on port {} within 10 s", self.port))
    }
}

/// Whether something on the port speaks RESP (a `-NOAUTH` reply counts).
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    matches!(stream.read(&mut reply), Ok(n) if n > 0 && (reply[0] == b'+' || reply[0] == b'-') && !reply[..n].starts_with(b"-LOADING"))
}

/// Whether a TLS server on the port answers `redis-cli --tls` PING,
/// verifying its certificate against `ca` (a `NOAUTH` error counts).
fn answers_tls_ping(port: u16, ca: &Path) -> bool {
    let output = Command::new("redis-cli")
        .args(["--tls", "-h", "127.0.0.1", "-p", &port.to_string(), "--cacert"])
        .arg(ca)
        .arg("PING")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli (apt-get install redis-tools): {e}"));
    let reply = String::from_utf8_lossy(&output.stdout);
    reply.contains("PONG") || reply.contains("NOAUTH")
}

/// A throwaway CA (`ca.crt`) and a server certificate for IP 127.0.0.1
/// signed by it (`server.crt`, `server.key`), made with the `openssl` CLI.
fn make_certificates(dir: &Path) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!("req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=cacheme-test-ca"),
        format!("req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext"
            .to_owned(),
    ];
    for step in steps {
        let output = Command::new("openssl")
            .args(step.split(' '))
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
        assert!(
            output.status.success(),
            "openssl {step} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
