//! Reading a key within a deadline, and removing a value that turned out
//! not to decode: the two backend steps every part of the miss path shares.

use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Op, Result};
use crate::future::within;
use crate::spec::StoreSpec;

/// What reading a key found, before decoding.
pub(crate) enum Probe {
    /// The stored bytes.
    Found(Vec<u8>),
    /// Nothing stored.
    Missing,
    /// The backend failed or did not answer by the deadline (reported to
    /// the client's breaker).
    Failed,
}

/// Reads `key` by `deadline`.
pub(crate) async fn probe(client: &Client, spec: &StoreSpec, key: &str, deadline: Instant) -> Probe {
    match read_by(client, spec, key, deadline).await {
        Ok(found) => found.map_or(Probe::Missing, Probe::Found),
        Err(_) => Probe::Failed,
    }
}

/// Reads `key` by `deadline`, giving the backend's error (or a timeout);
/// either way reported to the client's breaker.
pub(crate) async fn read_by(
    client: &Client,
    spec: &StoreSpec,
    key: &str,
    deadline: Instant,
) -> Result<Option<Vec<u8>>> {
    let backend = client.cache().backend();
    let read = backend.get(key);
    // A backend that fails the read itself within one cache budget needs
    // no second timer (the read then ends at most the time the steps
    // before it took past the deadline: nothing, unless a generation was
    // looked up).
    let bounded = backend
        .read_timeout()
        .is_some_and(|limit| limit <= client.cache_timeout());
    let read = if bounded {
        Ok(read.await)
    } else {
        within(deadline, read).await
    };
    let error = match read {
        Ok(Ok(found)) => {
            client.cache_answered(spec, key);
            return Ok(found);
        }
        Ok(Err(error)) => error,
        Err(_) => Error::Timeout {
            op: Op::Get,
            budget: client.cache_timeout(),
        },
    };
    client.cache_failed(spec, key, &error);
    Err(error)
}

/// Removes a value that did not decode, if it is still those bytes.
///
/// An undecodable value is a miss for every step, the stampede lock
/// included: lock steps refuse a lock over a value that exists (it may
/// have landed since the caller's miss), so a bad value left in place
/// would keep every caller waiting for a fill that never comes. The
/// compare-and-delete leaves a good value another process wrote meanwhile.
pub(crate) async fn discard(client: &Client, spec: &StoreSpec, key: &str, bytes: &[u8]) {
    let removal = client.cache().backend().delete_if_equals(key, bytes);
    match tokio::time::timeout(client.cache_timeout(), removal).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => client.cache_failed(spec, key, &error),
        Err(_) => {
            let budget = client.cache_timeout();
            client.cache_failed(
                spec,
                key,
                &Error::Timeout {
                    op: Op::DeleteIfEquals,
                    budget,
                },
            );
        }
    }
}
