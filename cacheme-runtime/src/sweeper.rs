//! Periodic background work tied to a backend's lifetime: the sweeps of
//! expired entries that the memory and file backends run every `interval`.

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

/// Runs `work` on the value behind `target` every `interval`, in a Tokio
/// task that ends once the value is dropped (the task holds only a `Weak`).
/// Without a Tokio runtime nothing is spawned and a warning is logged.
pub(crate) fn every<T, F, Fut>(provider: &'static str, interval: Duration, target: Weak<T>, work: F)
where
    T: Send + Sync + 'static,
    F: Fn(std::sync::Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(provider, "no Tokio runtime: the periodic sweep is not started");
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(target) = target.upgrade() else { break };
            work(target).await;
        }
    });
}
