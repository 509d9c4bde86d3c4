//! Connections to one memcached server: a small pool of plain TCP
//! connections, each used by one request at a time.
//!
//! Every exchange is "write the whole request, read the expected replies",
//! with the write and the read running together so a large pipelined batch
//! cannot deadlock on full socket buffers. A connection goes back to the
//! pool only after a complete, well-formed exchange; one that failed, timed
//! out, or whose future was dropped half-way is closed, so a connection in
//! the pool is never out of step with its server. An idle connection the
//! server has closed (restart) is noticed and dropped when taken, so the
//! next call after a restart reconnects instead of failing.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

use super::protocol::{ProtocolError, Reply, Status, read_reply};
use crate::config::scaled_timeout;

/// How an exchange knows it has read everything.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    /// Exactly this many replies.
    Replies(usize),
    /// Replies up to the `MN` that closes a quiet batch (not returned).
    UntilNoop,
}

struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Connection {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        Ok(Connection {
            reader: BufReader::with_capacity(64 * 1024, read),
            writer,
        })
    }

    /// Whether the server closed this idle connection (or sent something
    /// unasked), so it must not be used.
    ///
    /// Asked of the socket itself (a non-blocking `MSG_PEEK`): tokio's
    /// `try_read` would trust the readiness its reactor last saw, so a
    /// connection closed since the reactor last polled would pass.
    fn is_stale(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let stream: &TcpStream = self.reader.get_ref().as_ref();
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(stream).peek(&mut probe) {
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            // End of stream, or bytes nobody asked for.
            Ok(_) => true,
        }
    }

    async fn exchange(&mut self, request: &[u8], expect: Expect) -> Result<Vec<Reply>, ProtocolError> {
        let Connection { reader, writer } = self;
        let write = async {
            writer.write_all(request).await?;
            Ok::<_, ProtocolError>(())
        };
        let read = async {
            let mut replies = Vec::new();
            loop {
                match expect {
                    Expect::Replies(n) if replies.len() == n => return Ok(replies),
                    _ => {}
                }
                let reply = read_reply(reader).await?;
                if matches!(expect, Expect::UntilNoop) && reply.status == Status::Noop {
                    return Ok(replies);
                }
                replies.push(reply);
            }
        };
        let ((), replies) = tokio::try_join!(write, read)?;
        Ok(replies)
    }
}

/// One memcached server and its pool of connections.
pub(crate) struct Server {
    addr: String,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    max_idle: usize,
    timeout: Duration,
}

impl Server {
    /// A server at `addr` (`host:port`) with at most `pool_size` connections
    /// in use at once; each exchange (waiting for a connection of the pool
    /// and connecting included) must finish within `timeout` plus what its
    /// request adds ([`scaled_timeout`]).
    pub(crate) fn new(addr: String, pool_size: usize, timeout: Duration) -> Self {
        Server {
            addr,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(pool_size),
            max_idle: pool_size,
            timeout,
        }
    }

    /// `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and reads its replies on a pooled connection.
    pub(crate) async fn exchange(&self, request: &[u8], expect: Expect) -> Result<Vec<Reply>, ProtocolError> {
        let work = async {
            // Inside the timeout: with the server frozen, every connection
            // of the pool is stuck in an exchange, and a caller waiting for
            // one must give up as soon as one that holds one does.
            // The semaphore is never closed, so acquiring only fails if it were.
            let _permit = self.permits.acquire().await.map_err(|_| ProtocolError::Closed)?;
            let mut connection = match self.take_idle() {
                Some(connection) => connection,
                None => Connection::open(&self.addr).await?,
            };
            let outcome = connection.exchange(request, expect).await;
            match &outcome {
                Ok(_) => self.put_idle(connection),
                // A refusal of the only request leaves nothing unread.
                Err(e) if e.keeps_connection() && matches!(expect, Expect::Replies(1)) => self.put_idle(connection),
                Err(ProtocolError::Io(_) | ProtocolError::Closed) => self.drop_idle(),
                Err(_) => {}
            }
            outcome
        };
        let limit = scaled_timeout(self.timeout, request.len());
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ProtocolError::Timeout(limit)))
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(connection) = idle.pop() {
            if !connection.is_stale() {
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
    }

    /// After an I/O error the other idle connections to this server are
    /// most likely dead too (it went away): close them all.
    fn drop_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
