//! A TCP proxy on a free loopback port that can hold a server's answers,
//! so a test can cancel a client mid-command at a chosen request: the
//! server has executed it, the client has no answer yet.
//!
//! [`StallingProxy::arm`] with a byte pattern (a command name, an argument
//! such as `NX`, a value): the next client→server bytes holding it (on
//! any connection) are still forwarded, but from that moment nothing the
//! server sends on *that* connection reaches the client until
//! [`release`](StallingProxy::release). Other connections (a pub/sub
//! connection, other clients) flow on. The match is made before the
//! request is forwarded, so its answer is always among the held bytes,
//! and it is found however the client's writes are cut into segments.
//! Client→server bytes are never held: a command sent after the held one
//! (a lock release) reaches the server at once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the proxy's threads share.
#[derive(Default)]
struct State {
    /// The pattern waited for, until it is seen.
    armed: Option<Vec<u8>>,
    /// The connection whose answers are held (by its number), if any.
    holding: Option<u64>,
    /// How many times an armed pattern was seen.
    seen: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The proxy (see the module docs); stops accepting when dropped, and
/// releases what it holds.
pub struct StallingProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl StallingProxy {
    /// Forwards connections on a free port to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (state, stopped) = (shared.clone(), stop.clone());
        thread::spawn(move || {
            let mut connections = 0;
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) {
                            connections += 1;
                            relay(client, server, connections, state.clone());
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        StallingProxy { port, shared, stop }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` through the proxy, with `query` appended
    /// (e.g. `?timeout=30s`; empty for none).
    pub fn redis_url(&self, query: &str) -> String {
        format!("redis://127.0.0.1:{}{query}", self.port)
    }

    /// Holds the answers of the next connection that sends `pattern` (see
    /// the module docs). Replaces a pattern armed and not seen yet.
    pub fn arm(&self, pattern: &[u8]) {
        assert!(!pattern.is_empty(), "an empty pattern");
        self.shared.lock().armed = Some(pattern.to_vec());
    }

    /// How many times an armed pattern was seen (and its connection held).
    pub fn seen(&self) -> u64 {
        self.shared.lock().seen
    }

    /// Waits until an armed pattern has been seen `times` times in all;
    /// panics after `timeout`.
    pub fn wait_seen(&self, times: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.seen < times {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("the proxy never saw the armed pattern (seen {})", state.seen));
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Lets the held answers (and all later ones) through.
    pub fn release(&self) {
        self.shared.lock().holding = None;
        self.shared.changed.notify_all();
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.release();
    }
}

fn relay(client: TcpStream, server: TcpStream, connection: u64, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut from_server, mut to_client) = (server, client);
    let requests = shared.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        // The last bytes seen, so a pattern cut between reads is found.
        let mut window: Vec<u8> = Vec::new();
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            window.extend_from_slice(&buf[..n]);
            {
                let mut state = requests.lock();
                if let Some(pattern) = &state.armed {
                    if window.windows(pattern.len()).any(|w| w == pattern.as_slice()) {
                        state.armed = None;
                        state.holding = Some(connection);
                        state.seen += 1;
                        requests.changed.notify_all();
                        window.clear();
                    } else {
                        let keep = pattern.len().saturating_sub(1).min(window.len());
                        window.drain(..window.len() - keep);
                    }
                } else {
                    window.clear();
                }
            }
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut state = shared.lock();
                while state.holding == Some(connection) {
                    state = shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
}
