//! Writes off the caller's path: a fetched value's fill (or a failed
//! fetch's release) runs on a task of its own, so a caller that is
//! cancelled cannot cut it short, and the caller waits for it at most one
//! cache budget. The number of such writes in flight is bounded per client;
//! past it, a write is dropped and reported rather than memory growing.

use std::future::Future;

use tokio::time::Instant;

use crate::client::Client;
use crate::logger::EventKind;
use crate::spec::StoreSpec;

/// Runs `write` on its own task and waits for it until `deadline` at most
/// (it goes on afterwards). Without a free slot, `write` is dropped (its
/// own drop guards still run) and reported as `FILL_DROPPED`.
pub(crate) async fn write_behind<W>(client: &Client, spec: &StoreSpec, key: &str, deadline: Instant, write: W)
where
    W: Future<Output = ()> + Send + 'static,
{
    let Ok(slot) = client.fills().clone().try_acquire_owned() else {
        client.log(EventKind::FillDropped, spec, key, None);
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime to run it on: write inline.
        write.await;
        return;
    };
    let task = runtime.spawn(async move {
        write.await;
        drop(slot);
    });
    // Cancelling this wait leaves the task running.
    let _ = tokio::time::timeout_at(deadline, task).await;
}
