//! A TCP proxy on a free loopback port that counts round trips between its
//! clients and one server, so tests can check that a batch read is one
//! round trip without timing anything.
//!
//! A round trip starts each time a client sends bytes after the server last
//! sent some on that connection (or for the first time): a pipelined batch
//! written at once and answered at once is one, N request/reply exchanges
//! are N. Counted over all connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

const CLIENT_SENT: u8 = 1;
const SERVER_SENT: u8 = 2;

/// The proxy; stops accepting when dropped.
pub struct CountingProxy {
    port: u16,
    round_trips: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    /// Forwards connections on a free port to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let round_trips = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (round_trips.clone(), stop.clone());
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) {
                            relay(client, server, count.clone());
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        CountingProxy {
            port,
            round_trips,
            stop,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Round trips counted so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, server: TcpStream, round_trips: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let last = Arc::new(AtomicU8::new(0));
    let pipes = [
        (client.try_clone(), server.try_clone(), CLIENT_SENT),
        (server.try_clone(), client.try_clone(), SERVER_SENT),
    ];
    for (from, to, direction) in pipes {
        let (Ok(mut from), Ok(mut to)) = (from, to) else { return };
        let (last, round_trips) = (last.clone(), round_trips.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let before = last.swap(direction, Ordering::SeqCst);
                if direction == CLIENT_SENT && before != CLIENT_SENT {
                    round_trips.fetch_add(1, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
