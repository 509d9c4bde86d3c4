//! Free loopback ports.

use std::net::TcpListener;

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it).
/// Nothing listens on it once this returns, so it also serves as an
/// address where no server answers.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}
