//! A port that accepts connections and never answers: what a client meets
//! when a server hangs before its first reply (a frozen process behind a
//! live listen queue, a half-dead proxy). Unlike a port with nothing
//! listening, a connect succeeds at once and only the first command hangs.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The silent listener; dropping it closes the port and every connection
/// it accepted.
pub struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// Listens on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("silent server address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            // Held, never read nor written, until the server is dropped.
            let mut accepted: Vec<TcpStream> = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => accepted.push(stream),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SilentServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
