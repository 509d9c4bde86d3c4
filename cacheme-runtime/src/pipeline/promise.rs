//! [`Promise`]: one typed result of a pipeline, readable once the pipeline
//! has run.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Why a [`Promise`] has no value.
#[derive(Debug, thiserror::Error)]
pub enum PromiseError<E> {
    /// The store's fetcher failed for this key. Other promises of the
    /// pipeline are not affected.
    #[error("fetch failed: {0}")]
    Fetch(#[source] E),
    /// The pipeline as a whole failed before this key was resolved. No
    /// longer produced: a cache that cannot be read serves the promise from
    /// the source instead. Kept so code matching on it still compiles.
    #[error(transparent)]
    Cache(Error),
    /// The pipeline was not executed, or its `execute` was cancelled
    /// before this promise was resolved.
    #[error("the pipeline this promise belongs to was not executed")]
    NotExecuted,
}

/// Where a pipeline puts a promise's result.
pub(crate) struct Cell<V, E> {
    result: Mutex<Option<Result<V, PromiseError<E>>>>,
}

impl<V, E> Cell<V, E> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Cell {
            result: Mutex::new(None),
        })
    }

    pub(crate) fn set(&self, result: Result<V, PromiseError<E>>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
}

/// The typed result of one key added to a [`Pipeline`](crate::Pipeline)
/// with a store's `get_p`, available once the pipeline has been executed.
///
/// Each promise has its own outcome: one key's fetch error does not fail
/// the others.
#[must_use = "a promise does nothing until its pipeline is executed and its result read"]
pub struct Promise<V, E> {
    cell: Arc<Cell<V, E>>,
}

impl<V, E> Promise<V, E> {
    pub(crate) fn new(cell: Arc<Cell<V, E>>) -> Self {
        Promise { cell }
    }

    /// Whether the pipeline has resolved this promise.
    pub fn is_resolved(&self) -> bool {
        self.cell.result.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The value, or why there is none: the fetcher's error
    /// ([`PromiseError::Fetch`]), or [`PromiseError::NotExecuted`] when
    /// read before the pipeline ran.
    pub fn into_result(self) -> Result<V, PromiseError<E>> {
        self.cell
            .result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(Err(PromiseError::NotExecuted))
    }
}

impl<V, E> fmt::Debug for Promise<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("resolved", &self.is_resolved())
            .finish()
    }
}
