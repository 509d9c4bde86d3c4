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
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Launch, ServerProcess};

/// How to start a [`RedisServer`].
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    users: Vec<(String, String)>,
    args: Vec<String>,
    tls: bool,
    port: Option<u16>,
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

    /// Listens on `port` (waiting up to 10 s for it to be free) instead of
    /// a free port of its own choosing: for a server that appears where a
    /// client already expects one ([`free_port`](crate::free_port) gives
    /// an address nothing listens on yet).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> RedisServer {
        let tls = self.tls;
        let port = self.port;
        RedisServer {
            process: ServerProcess::start(self, port, |dir| {
                if tls {
                    make_certificates(dir);
                }
            }),
        }
    }
}

impl Launch for RedisServerBuilder {
    const BINARY: &'static str = "redis-server";
    const BINARY_VAR: &'static str = "CACHEME_REDIS_SERVER";
    const LOG: &'static str = "redis.log";

    fn configure(&self, cmd: &mut Command, dir: &Path, port: u16) {
        if self.tls {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(port.to_string());
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
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(Self::LOG));
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        for (user, password) in &self.users {
            cmd.args(["--user", user, "on", &format!(">{password}"), "~*", "&*", "+@all"]);
        }
        cmd.args(&self.args);
    }

    fn ready(&self, dir: &Path, port: u16) -> bool {
        if self.tls {
            answers_tls_ping(port, &dir.join("ca.crt"))
        } else {
            answers_ping(port)
        }
    }
}

/// A running `redis-server` owned by one test.
pub struct RedisServer {
    process: ServerProcess<RedisServerBuilder>,
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
        self.process.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.process.port())
    }

    /// The server's temp dir (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// Whether the server process is running (not [`stop`](RedisServer::stop)ped).
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// `redis://127.0.0.1:PORT` (add credentials and db yourself).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port())
    }

    /// `rediss://127.0.0.1:PORT/#insecure`, for a [`tls`](RedisServerBuilder::tls)
    /// server: TLS without verifying its self-signed certificate.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/#insecure", self.process.port())
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.process.dir().join("ca.crt")
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The port stays
    /// reserved for [`restart`](RedisServer::restart).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops the server, then starts a fresh one (empty, same settings) on
    /// the same port. A cluster node keeps its `nodes.conf` (in the same
    /// temp dir), so it rejoins its cluster with its slots.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// Freezes the server (SIGSTOP): its port still accepts connections
    /// and its clients' connections stay open, but nothing is answered
    /// until [`thaw`](RedisServer::thaw). A server still frozen when it is
    /// stopped or dropped is thawed first.
    pub fn freeze(&mut self) {
        self.process.freeze();
    }

    /// Resumes a [`freeze`](RedisServer::freeze)d server (SIGCONT): it
    /// answers what was sent meanwhile.
    pub fn thaw(&mut self) {
        self.process.thaw();
    }

    /// Whether the server is [`freeze`](RedisServer::freeze)d.
    pub fn is_frozen(&self) -> bool {
        self.process.is_frozen()
    }

    /// A plain connection (no password; reads time out after 5 s), to look
    /// at what the server holds. Panics if the server does not answer.
    pub fn connection(&self) -> redis::Connection {
        let connection = redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr()));
        let _ = connection.set_read_timeout(Some(Duration::from_secs(5)));
        connection
    }

    /// The keys matching `pattern` (`KEYS`, for the small data sets of
    /// tests). Panics if the server does not answer within 5 s.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.connection())
            .unwrap_or_else(|e| panic!("KEYS {pattern} on {}: {e}", self.addr()))
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
