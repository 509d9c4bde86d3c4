//! The boxed future every dyn-compatible trait of the runtime returns
//! ([`Backend`](crate::Backend), [`Coordinator`](crate::stampede::Coordinator)):
//! below both, so neither module depends on the other for it.

use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future: the return type of every [`Backend`](crate::Backend)
/// method, so the trait stays dyn-compatible (`Arc<dyn Backend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `work`, failed with [`tokio::time::error::Elapsed`] if it is not done by
/// `deadline`. Polls `work` once before arming a timer, so work that is
/// ready at once (an in-process backend, a key that needs no lookup) costs
/// no timer: the typed hit path stays as cheap as the backend.
pub(crate) async fn within<F: Future>(
    deadline: tokio::time::Instant,
    work: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        std::task::Poll::Ready(done) => std::task::Poll::Ready(Some(done)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    match first {
        Some(done) => Ok(done),
        None => tokio::time::timeout_at(deadline, work).await,
    }
}
