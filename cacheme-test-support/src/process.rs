//! What every real server of the test support shares: a process on a free
//! loopback port, in its own temp dir, started until it answers, stopped
//! (SIGKILL) on demand and on drop, restartable on the same port, and
//! frozen (SIGSTOP) and thawed (SIGCONT) on demand; a frozen server is
//! thawed before it is stopped, so none is left stopped behind a test.

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
    /// Whether the process was sent SIGSTOP and not yet SIGCONT.
    frozen: bool,
}

impl<L: Launch> ServerProcess<L> {
    /// Makes the temp dir, lets `prepare` put files in it, then starts the
    /// server on `port`, or on a free port (another one if the port was
    /// taken meanwhile) when `port` is `None`.
    pub(crate) fn start(launch: L, port: Option<u16>, prepare: impl FnOnce(&Path)) -> Self {
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
            frozen: false,
        };
        if let Some(port) = port {
            server.port = port;
            server.restart();
            return server;
        }
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
        // SIGKILL ends a stopped process too; thawing first keeps the
        // bookkeeping true and never panics (this runs on drop).
        if std::mem::take(&mut self.frozen) {
            let _ = self.signal("-CONT");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

    /// Freezes the server (SIGSTOP): it keeps its port and connections
    /// but answers nothing until [`thaw`](Self::thaw)ed.
    pub(crate) fn freeze(&mut self) {
        if self.child.is_some() && !self.frozen {
            self.signal("-STOP").unwrap_or_else(|e| panic!("{e}"));
            self.frozen = true;
            self.wait_stopped();
        }
    }

    /// Waits (at most 10 s) until every thread of the server is stopped:
    /// `kill` returns once the signal is queued, and a thread of a
    /// multi-threaded server (memcached) may still answer a request before
    /// it stops.
    fn wait_stopped(&self) {
        let Some(child) = &self.child else { return };
        let tasks = format!("/proc/{}/task", child.id());
        let stopped = || {
            let Ok(threads) = std::fs::read_dir(&tasks) else {
                return true; // no procfs: nothing to wait on
            };
            threads.flatten().all(|thread| {
                let stat = std::fs::read_to_string(thread.path().join("stat")).unwrap_or_default();
                // The state follows the command's closing parenthesis.
                stat.rsplit_once(") ")
                    .is_none_or(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(Instant::now() < deadline, "{} did not stop after SIGSTOP", L::BINARY);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Resumes a [`freeze`](Self::freeze)d server (SIGCONT).
    pub(crate) fn thaw(&mut self) {
        if self.frozen {
            self.signal("-CONT").unwrap_or_else(|e| panic!("{e}"));
            self.frozen = false;
        }
    }

    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Sends `signal` (`"-STOP"`, `"-CONT"`) with `kill(1)`.
    fn signal(&self, signal: &str) -> Result<(), String> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run kill {signal}: {e}"))?;
        match status.success() {
            true => Ok(()),
            false => Err(format!("kill {signal} {} failed: {status}", child.id())),
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
