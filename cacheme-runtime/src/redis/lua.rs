//! The one way this backend runs Lua: a [`Script`] (its body and SHA1
//! hash), called with its `KEYS` and `ARGV` ([`Call`]) as `EVALSHA`, and
//! once more as `EVAL` with the body when the server does not know the
//! script (`NOSCRIPT`: first use, a restart, `SCRIPT FLUSH`, a replica
//! just promoted), which caches it there.
//!
//! - [`Call::invoke`] runs one call on a connection; [`invoke_pipelined`]
//!   runs many as one pipeline of `EVALSHA`s, then one pipeline of `EVAL`s
//!   for the calls the server refused with `NOSCRIPT`.
//! - Never `SCRIPT LOAD`: a cluster connection sends it to every node,
//!   dead ones included. `EVALSHA`/`EVAL` go where their first key's slot
//!   says (or where a batch routes them).

use std::future::Future;
use std::sync::OnceLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, ServerErrorKind, ToRedisArgs, Value};

/// A Lua script: its body, and its hash, computed on first use.
pub(super) struct Script {
    body: &'static str,
    hash: OnceLock<String>,
}

impl Script {
    /// The script with this body.
    pub(super) const fn new(body: &'static str) -> Self {
        Script {
            body,
            hash: OnceLock::new(),
        }
    }

    /// The script's source.
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the scripts' tests"))]
    pub(super) fn body(&self) -> &'static str {
        self.body
    }

    fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| redis::Script::new(self.body).get_hash().to_owned())
    }

    /// A call of this script, with no keys or arguments yet.
    pub(super) fn call(&'static self) -> Call {
        Call {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Script`]: its `KEYS` and `ARGV`.
pub(super) struct Call {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// Appends to `KEYS`.
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Appends to `ARGV`.
    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// `EVALSHA hash`, or `EVAL body`, then the keys and arguments.
    fn command(&self, with_body: bool) -> Cmd {
        let mut cmd = if with_body {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(self.script.body);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.script.hash());
            cmd
        };
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    /// Runs the call on `connection` (on the node of its first key in a
    /// cluster): `EVALSHA`, then `EVAL` on `NOSCRIPT`.
    pub(super) async fn invoke<T: FromRedisValue, C: ConnectionLike>(&self, connection: &mut C) -> RedisResult<T> {
        match self.command(false).query_async(connection).await {
            Err(e) if is_noscript(&e) => self.command(true).query_async(connection).await,
            reply => reply,
        }
    }
}

/// Sends `calls` as one pipeline through `send` (given the pipeline and
/// its length): `EVALSHA`s, then the calls the server refused with
/// `NOSCRIPT` once more, in a pipeline of `EVAL`s. One reply per call,
/// errors kept per call; `Err` when a pipeline got no (or a short) reply.
pub(super) async fn invoke_pipelined<F, Fut>(calls: &[Call], send: F) -> RedisResult<Vec<RedisResult<Value>>>
where
    F: Fn(redis::Pipeline, usize) -> Fut,
    Fut: Future<Output = RedisResult<Vec<Value>>>,
{
    let run = |which: &[usize], with_body: bool| {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &n in which {
            pipe.add_command(calls[n].command(with_body));
        }
        let count = which.len();
        let sent = send(pipe, count);
        async move {
            let replies = sent.await?;
            if replies.len() != count {
                return Err(short_reply(replies.len(), count));
            }
            Ok(replies.into_iter().map(Value::extract_error).collect::<Vec<_>>())
        }
    };
    let all: Vec<usize> = (0..calls.len()).collect();
    let mut replies = run(&all, false).await?;
    let unknown: Vec<usize> = all
        .into_iter()
        .filter(|&n| matches!(&replies[n], Err(e) if is_noscript(e)))
        .collect();
    if !unknown.is_empty() {
        for (&n, reply) in unknown.iter().zip(run(&unknown, true).await?) {
            replies[n] = reply;
        }
    }
    Ok(replies)
}

fn is_noscript(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// A reply of `got` elements where `wanted` were expected.
pub(super) fn short_reply(got: usize, wanted: usize) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "unexpected batch script reply",
        format!("{got} elements for {wanted} entries"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    static ECHO: Script = Script::new("return {KEYS[1], ARGV[1]}");

    #[test]
    fn calls_go_by_hash_or_with_the_body() {
        let mut call = ECHO.call();
        call.key("k").arg("a").arg(2);
        let by_hash = call.command(false).get_packed_command();
        let hash = redis::Script::new(ECHO.body()).get_hash().to_owned();
        assert_eq!(
            by_hash,
            redis::cmd("EVALSHA")
                .arg(&hash)
                .arg(1)
                .arg("k")
                .arg("a")
                .arg(2)
                .get_packed_command()
        );
        let with_body = call.command(true).get_packed_command();
        assert_eq!(
            with_body,
            redis::cmd("EVAL")
                .arg(ECHO.body())
                .arg(1)
                .arg("k")
                .arg("a")
                .arg(2)
                .get_packed_command()
        );
    }
}
