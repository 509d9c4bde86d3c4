//! The boxed future every dyn-compatible trait of the runtime returns
//! ([`Backend`](crate::Backend), [`Coordinator`](crate::stampede::Coordinator)):
//! below both, so neither module depends on the other for it.

use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future: the return type of every [`Backend`](crate::Backend)
/// method, so the trait stays dyn-compatible (`Arc<dyn Backend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
