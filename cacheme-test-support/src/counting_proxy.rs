//! A TCP proxy on a free loopback port that counts the requests its
//! clients send one server, so tests can check that a batch read is one
//! request (or one per [`MAX_KEYS_PER_COMMAND`](cacheme_runtime::MAX_KEYS_PER_COMMAND)
//! keys) without timing anything.
//!
//! A request is a command the client waits an answer for: each Redis
//! command (RESP), each memcached command without the quiet flag `q` (a
//! multi-get of quiet `mg`s closed by `mn` is one request, the `mn`). The
//! proxy parses the client's bytes, so the count does not depend on how
//! the client's writes are cut into TCP segments, nor on when the server
//! answers: a request written in two pieces while the server already
//! answers the first half is still one. Counted over all connections; the
//! protocol of a connection is told by its first byte (`*`: RESP).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// The proxy; stops accepting when dropped.
pub struct CountingProxy {
    port: u16,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    /// Forwards connections on a free port to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
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
        CountingProxy { port, requests, stop }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests counted so far (see the module docs).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, server: TcpStream, requests: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pipes = [
        (client.try_clone(), server.try_clone(), Some(requests)),
        (server.try_clone(), client.try_clone(), None),
    ];
    for (from, to, count) in pipes {
        let (Ok(mut from), Ok(mut to)) = (from, to) else { return };
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut requests = Requests::default();
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(count) = &count {
                    count.fetch_add(requests.feed(&buf[..n]), Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

/// Splits a client's byte stream into requests, however it arrives.
#[derive(Default)]
struct Requests {
    /// Bytes of a request not complete yet.
    pending: Vec<u8>,
    /// `Some(true)` for RESP, `Some(false)` for memcached's text protocol.
    resp: Option<bool>,
}

impl Requests {
    /// Takes the next bytes; returns how many awaited requests they completed.
    fn feed(&mut self, bytes: &[u8]) -> u64 {
        self.pending.extend_from_slice(bytes);
        let resp = *self.resp.get_or_insert(self.pending.first() == Some(&b'*'));
        let mut at = 0;
        let mut awaited = 0;
        loop {
            let rest = &self.pending[at..];
            let parsed = if resp {
                resp_frame(rest).map(|len| (len, true))
            } else {
                memcached_request(rest)
            };
            let Some((len, waits)) = parsed else { break };
            at += len;
            awaited += u64::from(waits);
        }
        self.pending.drain(..at);
        awaited
    }
}

/// The line at the start of `bytes` (without `\r\n`) and the length with it.
fn line(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    Some((&bytes[..end], end + 2))
}

/// The length of the complete RESP value at the start of `bytes`.
fn resp_frame(bytes: &[u8]) -> Option<usize> {
    let (head, mut len) = line(bytes)?;
    let number = || std::str::from_utf8(&head[1..]).ok()?.parse::<i64>().ok();
    match head.first()? {
        b'$' | b'=' | b'!' => {
            let size = number()?;
            if size < 0 {
                return Some(len);
            }
            let end = len + usize::try_from(size).ok()? + 2;
            (bytes.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let mut items = number()?.max(0);
            if matches!(head[0], b'%' | b'|') {
                items *= 2;
            }
            for _ in 0..items {
                len += resp_frame(&bytes[len..])?;
            }
            Some(len)
        }
        _ => Some(len),
    }
}

/// The length of the complete memcached text request at the start of
/// `bytes` and whether its client waits for an answer (not quiet).
fn memcached_request(bytes: &[u8]) -> Option<(usize, bool)> {
    let (head, mut len) = line(bytes)?;
    let text = String::from_utf8_lossy(head);
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let command = tokens.first().copied().unwrap_or("");
    let data = match command {
        "ms" => tokens.get(2),
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => tokens.get(4),
        _ => None,
    };
    if let Some(size) = data {
        len += size.parse::<usize>().ok()? + 2;
        if bytes.len() < len {
            return None;
        }
    }
    let quiet = command.starts_with('m') && tokens[1..].contains(&"q");
    Some((len, !quiet))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of every size; the count never changes.
    fn counted_in_pieces(stream: &[u8]) -> u64 {
        let whole = Requests::default().feed(stream);
        for piece in 1..stream.len() {
            let mut requests = Requests::default();
            let sum: u64 = stream.chunks(piece).map(|p| requests.feed(p)).sum();
            assert_eq!(sum, whole, "pieces of {piece} bytes");
        }
        whole
    }

    #[test]
    fn resp_commands_are_counted_however_they_are_cut() {
        let mut pipeline = b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec();
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$4\r\nx\r\ny\r\n");
        assert_eq!(counted_in_pieces(&pipeline), 2);
    }

    #[test]
    fn a_memcached_multi_get_is_one_request_and_data_blocks_are_skipped() {
        let multi = b"mg k1 v f t q O0\r\nmg k2 v f t q O1\r\nmn\r\n";
        assert_eq!(counted_in_pieces(multi), 1);
        let set = b"ms k 6 T0\r\nmn\r\nmg\r\nmg k v\r\n";
        assert_eq!(counted_in_pieces(set), 2, "the value holds what looks like commands");
    }
}
