//! Handing one failed fetch's error to every caller that waited for it.
//!
//! A store's `get` returns the fetcher's own error type `E`. When several
//! callers of one key are coalesced behind one fetch and that fetch fails,
//! the followers can return the same error only if `E` can be copied and
//! sent between tasks: `E: Clone + Send + 'static`. Generated code picks
//! the sharing for its store's error type at compile time (without asking
//! users for a bound they may not meet): [`ErrorSharing::by_clone`] when
//! `E` qualifies, [`ErrorSharing::none`] otherwise. With `none`, the
//! followers of a failed fetch call the fetcher themselves, each once, at
//! the same time (bounded latency, but one source call per caller): give
//! a store an error type that is `Clone` (wrap it in an `Arc` if need be)
//! to make a failing source see one call per failure.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// A fetch error shared by a flight's leader with its followers.
#[derive(Clone)]
pub(crate) struct SharedError(Arc<dyn Any + Send + Sync>);

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedError")
    }
}

/// How a store's fetch errors are shared with coalesced callers; made by
/// generated code (see the module docs).
pub struct ErrorSharing<E> {
    share: Option<fn(&E) -> SharedError>,
    restore: fn(&SharedError) -> Option<E>,
}

impl<E> Clone for ErrorSharing<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ErrorSharing<E> {}

impl<E> fmt::Debug for ErrorSharing<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorSharing")
            .field("shared", &self.share.is_some())
            .finish()
    }
}

impl<E: Clone + Send + 'static> ErrorSharing<E> {
    /// Followers receive a clone of the leader's error.
    pub fn by_clone() -> Self {
        fn share<E: Clone + Send + 'static>(error: &E) -> SharedError {
            SharedError(Arc::new(Mutex::new(error.clone())))
        }
        fn restore<E: Clone + Send + 'static>(shared: &SharedError) -> Option<E> {
            let cell = shared.0.downcast_ref::<Mutex<E>>()?;
            // A clone cannot leave the error half-written: ignore poison.
            Some(cell.lock().unwrap_or_else(|p| p.into_inner()).clone())
        }
        ErrorSharing {
            share: Some(share::<E>),
            restore: restore::<E>,
        }
    }
}

impl<E> ErrorSharing<E> {
    /// Errors are not shared: followers of a failed fetch fetch themselves.
    pub fn none() -> Self {
        ErrorSharing {
            share: None,
            restore: |_| None,
        }
    }

    /// The error to hand to the followers, if it can be shared.
    pub(crate) fn share(&self, error: &E) -> Option<SharedError> {
        self.share.map(|share| share(error))
    }

    /// A follower's copy of the leader's error.
    pub(crate) fn restore(&self, shared: &SharedError) -> Option<E> {
        (self.restore)(shared)
    }
}

/// Chooses an [`ErrorSharing`] for `E` at compile time, in generated code
/// where `E` is a concrete type: `(&&ErrorProbe::<E>::NEW).sharing()`
/// resolves to [`ShareByClone`] when `E: Clone + Send + 'static`, else to
/// [`ShareNothing`] (autoref specialization).
pub struct ErrorProbe<E>(PhantomData<fn() -> E>);

impl<E> ErrorProbe<E> {
    /// The probe.
    pub const NEW: Self = ErrorProbe(PhantomData);
}

/// The probe's choice when the error can be cloned and sent.
pub trait ShareByClone<E> {
    /// [`ErrorSharing::by_clone`].
    fn sharing(&self) -> ErrorSharing<E>;
}

impl<E: Clone + Send + 'static> ShareByClone<E> for &ErrorProbe<E> {
    fn sharing(&self) -> ErrorSharing<E> {
        ErrorSharing::by_clone()
    }
}

/// The probe's fallback.
pub trait ShareNothing<E> {
    /// [`ErrorSharing::none`].
    fn sharing(&self) -> ErrorSharing<E>;
}

impl<E> ShareNothing<E> for ErrorProbe<E> {
    fn sharing(&self) -> ErrorSharing<E> {
        ErrorSharing::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_borrow)] // the autoref is the point
    fn the_probe_shares_clone_errors_and_not_others() {
        #[derive(Debug)]
        struct Opaque;
        let cloned = (&&ErrorProbe::<String>::NEW).sharing();
        let shared = cloned.share(&"boom".to_owned()).expect("String is shared");
        assert_eq!(cloned.restore(&shared).as_deref(), Some("boom"));
        let opaque = (&&ErrorProbe::<Opaque>::NEW).sharing();
        assert!(opaque.share(&Opaque).is_none());
        // A shared error of another type is not restored as this one.
        assert!(ErrorSharing::<u8>::by_clone().restore(&shared).is_none());
    }
}
