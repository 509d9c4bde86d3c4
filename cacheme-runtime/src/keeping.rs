//! Keeping decoded values in process: what lets a hit skip decoding.
//!
//! Two places hold a store's values decoded, as `Arc<dyn Any>`: the memory
//! backend, beside each entry's bytes (see [`MemoryBackend`](crate::MemoryBackend)),
//! and the local tier over a remote backend (see the `local` option of
//! `#[cache_store]`). A hit then costs a clone of the value, not a decode.
//! That needs `V: Clone + Send + Sync + 'static`; generated code picks the
//! keeping for its store's value type at compile time (autoref
//! specialization, as [`ErrorSharing`](crate::store::sharing::ErrorSharing)
//! does): [`ValueKeeping::by_clone`] when `V` qualifies, else
//! [`ValueKeeping::none`] (every hit decodes; a `local` tier is refused at
//! compile time for such a store).

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A decoded value held in process, of the store's type.
pub(crate) type Kept = Arc<dyn Any + Send + Sync>;

/// How a store's decoded values are kept and taken back; made by
/// generated code (see the module docs).
pub struct ValueKeeping<V> {
    keep: Option<fn(&V) -> Kept>,
    take: fn(&Kept) -> Option<V>,
}

impl<V> Clone for ValueKeeping<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for ValueKeeping<V> {}

impl<V> fmt::Debug for ValueKeeping<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueKeeping")
            .field("kept", &self.keep.is_some())
            .finish()
    }
}

impl<V: Clone + Send + Sync + 'static> ValueKeeping<V> {
    /// Values are kept decoded and cloned out on a hit.
    pub fn by_clone() -> Self {
        fn keep<V: Clone + Send + Sync + 'static>(value: &V) -> Kept {
            Arc::new(value.clone())
        }
        fn take<V: Clone + Send + Sync + 'static>(kept: &Kept) -> Option<V> {
            kept.downcast_ref::<V>().cloned()
        }
        ValueKeeping {
            keep: Some(keep::<V>),
            take: take::<V>,
        }
    }
}

impl<V> ValueKeeping<V> {
    /// Values are not kept decoded: every hit decodes.
    pub fn none() -> Self {
        ValueKeeping {
            keep: None,
            take: |_| None,
        }
    }

    /// Whether values can be kept decoded (the value type is
    /// `Clone + Send + Sync + 'static`).
    pub fn keeps(&self) -> bool {
        self.keep.is_some()
    }

    /// `value`, to be kept (`None` if values of this type cannot be).
    pub(crate) fn keep(&self, value: &V) -> Option<Kept> {
        self.keep.map(|keep| keep(value))
    }

    /// A copy of a kept value, if it is of this type.
    pub(crate) fn take(&self, kept: &Kept) -> Option<V> {
        (self.take)(kept)
    }
}

/// Chooses a [`ValueKeeping`] for `V` at compile time, in generated code
/// where `V` is a concrete type: `(&&ValueProbe::<V>::NEW).keeping()`
/// resolves to [`KeepByClone`] when `V: Clone + Send + Sync + 'static`,
/// else to [`KeepNothing`] (autoref specialization).
pub struct ValueProbe<V>(PhantomData<fn() -> V>);

impl<V> ValueProbe<V> {
    /// The probe.
    pub const NEW: Self = ValueProbe(PhantomData);
}

/// The probe's choice when the value can be cloned and shared.
pub trait KeepByClone<V> {
    /// [`ValueKeeping::by_clone`].
    fn keeping(&self) -> ValueKeeping<V>;
}

impl<V: Clone + Send + Sync + 'static> KeepByClone<V> for &ValueProbe<V> {
    fn keeping(&self) -> ValueKeeping<V> {
        ValueKeeping::by_clone()
    }
}

/// The probe's fallback.
pub trait KeepNothing<V> {
    /// [`ValueKeeping::none`].
    fn keeping(&self) -> ValueKeeping<V>;
}

impl<V> KeepNothing<V> for ValueProbe<V> {
    fn keeping(&self) -> ValueKeeping<V> {
        ValueKeeping::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_borrow)] // the autoref is the point
    fn the_probe_keeps_clone_values_and_not_others() {
        struct Opaque;
        let cloned = (&&ValueProbe::<String>::NEW).keeping();
        let kept = cloned.keep(&"v".to_owned()).expect("String is kept");
        assert_eq!(cloned.take(&kept).as_deref(), Some("v"));
        assert!(!(&&ValueProbe::<Opaque>::NEW).keeping().keeps());
        // A value of another type is not taken back as this one.
        assert!(ValueKeeping::<u8>::by_clone().take(&kept).is_none());
    }
}
