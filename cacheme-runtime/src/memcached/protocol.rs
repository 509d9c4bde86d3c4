//! The part of memcached's meta protocol (memcached >= 1.6) this backend
//! speaks: building `mg` / `ms` / `md` / `ma` / `mn` requests and reading
//! their replies.
//!
//! The meta commands are used rather than the classic `get`/`set` because
//! they give, in one request each, what the backend needs: the client flags
//! and remaining TTL with a value (`mg k v f t c`), compare-and-swap on
//! delete (`md k C<cas>`), add and CAS modes on one store command
//! (`ms k n ME` / `C<cas>`), and quiet pipelined reads closed by `mn`.

use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest reply header line accepted; real ones are under 100 bytes.
const MAX_LINE: usize = 8 * 1024;

/// What went wrong talking to one memcached server. Becomes the `source`
/// of an [`Error::Backend`](crate::Error::Backend).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The socket failed (refused, reset, closed mid-reply).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
    #[error("the server replied {0:?}")]
    Server(String),
    /// A reply this client does not understand.
    #[error("unexpected reply {0:?}")]
    Unexpected(String),
    /// The server refused to store a value larger than its item size.
    #[error(
        "the value ({size} bytes) is too large for the server's item size \
         (memcached's -I setting, 1 MiB by default); the server said {reply:?}"
    )]
    TooLarge {
        /// Bytes in the refused value.
        size: usize,
        /// The server's own words.
        reply: String,
    },
    /// A compare-and-swap loop lost to other writers too many times in a row.
    #[error("gave up after {0} compare-and-swap conflicts with concurrent writers")]
    Contention(u32),
    /// Something the backend stores for itself holds an unexpected value.
    #[error("{0}")]
    Corrupt(String),
}

impl ProtocolError {
    /// Whether the connection that saw this error can still be used: only
    /// when the server answered a well-formed refusal (`SERVER_ERROR`, e.g.
    /// a value over its item size, whose data it skips). After `ERROR` or
    /// `CLIENT_ERROR` the server may read the rest of the request as
    /// commands, so the connection is closed.
    pub(crate) fn keeps_connection(&self) -> bool {
        match self {
            ProtocolError::Server(reply) => reply.starts_with("SERVER_ERROR"),
            ProtocolError::TooLarge { .. } => true,
            _ => false,
        }
    }

    /// A `SERVER_ERROR` about the item size, turned into [`TooLarge`](Self::TooLarge).
    pub(crate) fn for_value_of(self, size: usize) -> Self {
        match self {
            ProtocolError::Server(reply) if reply.contains("too large") => ProtocolError::TooLarge { size, reply },
            other => other,
        }
    }
}

/// The status of a meta reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// `VA`: a value follows.
    Value,
    /// `HD`: success, no value.
    Done,
    /// `EN`: `mg` miss.
    Miss,
    /// `NF`: not found (`md`, `ma`, `ms` with `C`).
    NotFound,
    /// `NS`: not stored (`ms` in add mode on an existing key).
    NotStored,
    /// `EX`: the compare-and-swap token did not match.
    Exists,
    /// `MN`: the end of a pipelined batch.
    Noop,
}

/// One parsed meta reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// What happened.
    pub(crate) status: Status,
    /// The value, for [`Status::Value`].
    pub(crate) value: Option<Vec<u8>>,
    /// Client flags (`f`), 0 when not returned.
    pub(crate) flags: u32,
    /// Remaining TTL in seconds (`t`), -1 for none or not returned.
    pub(crate) ttl: i64,
    /// Compare-and-swap token (`c`), 0 when not returned.
    pub(crate) cas: u64,
    /// Opaque token (`O`) echoed from the request.
    pub(crate) opaque: Option<u32>,
}

/// Appends `mg <key> <flags>`.
pub(crate) fn mg(buf: &mut Vec<u8>, key: &str, flags: &str) {
    let _ = write!(buf, "mg {key} {flags}\r\n");
}

/// Appends `ms <key> <len> <flags>` and the data block.
pub(crate) fn ms(buf: &mut Vec<u8>, key: &str, value: &[u8], flags: &str) {
    let _ = write!(buf, "ms {key} {} {flags}\r\n", value.len());
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Appends `md <key> <flags>`.
pub(crate) fn md(buf: &mut Vec<u8>, key: &str, flags: &str) {
    let _ = write!(buf, "md {key} {flags}\r\n");
}

/// Appends `ma <key> <flags>`.
pub(crate) fn ma(buf: &mut Vec<u8>, key: &str, flags: &str) {
    let _ = write!(buf, "ma {key} {flags}\r\n");
}

/// Appends `mn`, which the server answers with `MN` after everything before it.
pub(crate) fn mn(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"mn\r\n");
}

/// Reads one reply (its header line and, for `VA`, its data block).
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, ProtocolError> {
    let mut line = Vec::with_capacity(64);
    let read = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Err(ProtocolError::Closed);
    }
    let Some(header) = line.strip_suffix(b"\r\n") else {
        return Err(if read >= MAX_LINE {
            unexpected(&line)
        } else {
            ProtocolError::Closed
        });
    };
    let (mut reply, size) = parse_header(header)?;
    if let Some(size) = size {
        let mut data = vec![0; size + 2];
        reader.read_exact(&mut data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(ProtocolError::Unexpected("a value block not ended by CRLF".to_owned()));
        }
        data.truncate(size);
        reply.value = Some(data);
    }
    Ok(reply)
}

/// Parses a header line without its CRLF; for `VA`, also the size of the
/// data block that follows.
fn parse_header(line: &[u8]) -> Result<(Reply, Option<usize>), ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| unexpected(line))?;
    if text == "ERROR" || text.starts_with("CLIENT_ERROR") || text.starts_with("SERVER_ERROR") {
        return Err(ProtocolError::Server(text.to_owned()));
    }
    let mut tokens = text.split(' ').filter(|t| !t.is_empty());
    let status = match tokens.next() {
        Some("VA") => Status::Value,
        Some("HD") => Status::Done,
        Some("EN") => Status::Miss,
        Some("NF") => Status::NotFound,
        Some("NS") => Status::NotStored,
        Some("EX") => Status::Exists,
        Some("MN") => Status::Noop,
        _ => return Err(unexpected(line)),
    };
    let mut reply = Reply {
        status,
        value: None,
        flags: 0,
        ttl: -1,
        cas: 0,
        opaque: None,
    };
    let size = match status {
        Status::Value => Some(
            tokens
                .next()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| unexpected(line))?,
        ),
        _ => None,
    };
    for token in tokens {
        let Some((flag, rest)) = token.split_at_checked(1) else {
            continue;
        };
        let bad = || unexpected(line);
        match flag {
            "f" => reply.flags = rest.parse().map_err(|_| bad())?,
            "t" => reply.ttl = rest.parse().map_err(|_| bad())?,
            "c" => reply.cas = rest.parse().map_err(|_| bad())?,
            "O" => reply.opaque = Some(rest.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    Ok((reply, size))
}

fn unexpected(line: &[u8]) -> ProtocolError {
    let shown: String = String::from_utf8_lossy(line).chars().take(120).collect();
    ProtocolError::Unexpected(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, ProtocolError> {
        let mut reader = bytes;
        read_reply(&mut reader).await
    }

    #[tokio::test]
    async fn values_keep_every_byte_and_flags_are_read() {
        let reply = parse(b"VA 5 f2147483649 t12 c7 O3\r\na\r\n\0b\r\n").await.unwrap();
        assert_eq!(reply.status, Status::Value);
        assert_eq!(reply.value.as_deref(), Some(&b"a\r\n\0b"[..]));
        assert_eq!(
            (reply.flags, reply.ttl, reply.cas, reply.opaque),
            (2_147_483_649, 12, 7, Some(3))
        );
        let empty = parse(b"VA 0 t-1\r\n\r\n").await.unwrap();
        assert_eq!((empty.value, empty.ttl), (Some(Vec::new()), -1));
    }

    #[tokio::test]
    async fn statuses_and_errors() {
        assert_eq!(parse(b"EN\r\n").await.unwrap().status, Status::Miss);
        assert_eq!(parse(b"HD c9\r\n").await.unwrap().cas, 9);
        assert_eq!(parse(b"MN\r\n").await.unwrap().status, Status::Noop);
        let err = parse(b"SERVER_ERROR object too large for cache\r\n").await.unwrap_err();
        let err = err.for_value_of(3 << 20);
        assert!(
            err.to_string().contains("too large for the server's item size"),
            "{err}"
        );
        assert!(matches!(parse(b"XX\r\n").await, Err(ProtocolError::Unexpected(_))));
        assert!(matches!(parse(b"VA 10\r\nshort").await, Err(ProtocolError::Io(_))));
        assert!(matches!(parse(b"").await, Err(ProtocolError::Closed)));
        assert!(matches!(
            parse(b"HD \xce\xbb1\r\n").await,
            Err(ProtocolError::Unexpected(_)) | Ok(_)
        ));
    }

    #[test]
    fn requests_are_meta_commands() {
        let mut buf = Vec::new();
        mg(&mut buf, "k", "v f t");
        ms(&mut buf, "k", b"hi", "T5 F1");
        md(&mut buf, "k", "C3");
        ma(&mut buf, "k", "v");
        mn(&mut buf);
        assert_eq!(buf, b"mg k v f t\r\nms k 2 T5 F1\r\nhi\r\nmd k C3\r\nma k v\r\nmn\r\n");
    }
}
