//! What every real server of the test support shares: a process on a free
//! loopback port, in its own temp dir, started until it answers, stopped
//! (SIGKILL) on demand and on drop, restartable on the same port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ports::free_port;

/// How to run one kind of server.
pub(crate) trait Launch: Clone {
    /// The binary's default name, also used in messages (`"redis-server"`).
    const BINARY: &'static str;
    /// The environment variable that overrides the binary.
    const BINARY_VAR: &'static str;
    /// The log file the server writes in its dir, shown when it fails
    /// (beside `stderr.log`, where its standard error goes).
    const LOG: &'static str;

    /// Adds the server's arguments for `port`, with `dir` as its home.
    fn configure(&self, cmd: &mut Command, dir: &Path, port: u16);

    /// Whether the server on `port` answers.
    fn ready(&self, dir: &Path, port: u16) -> bool;
}

/// A server process owned by one test.
pub(crate) struct ServerProcess<L: Launch> {
    launch: L,
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl<L: Launch> ServerProcess<L> {
    /// Makes the temp dir, lets `prepare` put files in it, then starts the
    /// server on a free port (another one if the port was taken meanwhile).
    pub(crate) fn start(launch: L, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cacheme-{}-", L::BINARY))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for {}: {e}", L::BINARY));
        prepare(dir.path());
        let mut server = ServerProcess {
            launch,
            child: None,
            port: 0,
            dir,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("{} did not start: {last_error}", L::BINARY);
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The port stays
    /// reserved for [`restart`](Self::restart).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`) to the running server with
    /// `kill(1)`. Panics if it is not running or the signal fails.
    pub(crate) fn signal(&self, signal: &str) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", L::BINARY));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} {} failed: {status}", child.id());
    }

    /// Stops the server, then starts a fresh one (empty, same settings) on
    /// the same port.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("{} did not restart: {e}", L::BINARY),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var(L::BINARY_VAR).unwrap_or_else(|_| L::BINARY.to_owned());
        let dir = self.dir.path();
        let stderr = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&binary);
        self.launch.configure(&mut cmd, dir, self.port);
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {binary:?}: {e}. Install {} (scripts/test does it with apt-get) \
                     or point {} at the binary.",
                    L::BINARY,
                    L::BINARY_VAR
                )
            });
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let mut log = read("stderr.log");
                if L::LOG != "stderr.log" {
                    log.insert_str(0, &read(L::LOG));
                }
                return Err(format!("exited with {status}; log:\n{log}"));
            }
            if self.launch.ready(self.dir.path(), self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err(format!("did not answer on port {} within 10 s", self.port))
    }
}

impl<L: Launch> Drop for ServerProcess<L> {
    fn drop(&mut self) {
        self.stop();
    }
}
