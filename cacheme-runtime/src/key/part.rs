//! How generated code writes a key parameter: strings and primitive
//! integers without going through `fmt`, any other type through
//! [`KeyParam`] (its `Display`).
//!
//! The choice is made by the compiler from the parameter's real type
//! (autoref specialization), not from how its type is spelled: a
//! parameter written `String` that is some other type in scope (a
//! `use smol_str::SmolStr as String`, say) takes the `Display` path.
//!
//! ```text
//! { use {AnyKeyPart as _, FastKeyPart as _}; (&KeyPart(param)).push_key(&mut key); }
//! ```
//!
//! Method lookup tries the receiver `&KeyPart<T>` as it is first, where
//! only [`FastKeyPart`] is implemented (for `String`, `str`, `&str` and
//! the integers), then with one more reference, where [`AnyKeyPart`] is.

use super::{KeyBuf, push_text};
use crate::checks::KeyParam;

/// A key parameter, borrowed, waiting to be written (see the module docs).
pub struct KeyPart<'a, T: ?Sized>(pub &'a T);

/// Writes a string or an integer parameter without `fmt`.
pub trait FastKeyPart {
    /// Appends the parameter, escaped, to `key`.
    fn push_key(&self, key: &mut KeyBuf);
}

/// Writes any other parameter with its `Display` (through [`KeyParam`]).
pub trait AnyKeyPart {
    /// Appends the parameter, escaped, to `key`.
    fn push_key(&self, key: &mut KeyBuf);
}

impl<T: KeyParam + ?Sized> AnyKeyPart for &KeyPart<'_, T> {
    #[inline]
    fn push_key(&self, key: &mut KeyBuf) {
        self.0.push_to(key);
    }
}

impl FastKeyPart for KeyPart<'_, str> {
    #[inline]
    fn push_key(&self, key: &mut KeyBuf) {
        push_text(key, self.0);
    }
}

impl FastKeyPart for KeyPart<'_, &str> {
    #[inline]
    fn push_key(&self, key: &mut KeyBuf) {
        push_text(key, self.0);
    }
}

impl FastKeyPart for KeyPart<'_, String> {
    #[inline]
    fn push_key(&self, key: &mut KeyBuf) {
        push_text(key, self.0);
    }
}

macro_rules! integers {
    ($($int:ty),*) => {$(
        impl FastKeyPart for KeyPart<'_, $int> {
            #[inline]
            fn push_key(&self, key: &mut KeyBuf) {
                // Digits and `-` need no escaping.
                key.push_str(itoa::Buffer::new().format(*self.0));
            }
        }
    )*};
}

integers!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// The key `value` is written as, by the expression the macro emits.
    macro_rules! written {
        ($value:expr) => {{
            #[allow(unused_imports)]
            use super::{AnyKeyPart as _, FastKeyPart as _};
            let mut key = KeyBuf::new();
            (&KeyPart($value)).push_key(&mut key);
            key.as_str().to_owned()
        }};
    }

    /// A type that calls itself `String` but is not std's.
    mod shadowed {
        pub struct String(pub u8);
    }

    impl fmt::Display for shadowed::String {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "shadow:{}", self.0)
        }
    }

    #[test]
    fn strings_and_integers_are_written_as_display_would_write_them() {
        let text = String::from("a:b c");
        assert_eq!(written!(&text), "a%3Ab%20c");
        let borrowed: &str = "x*y";
        assert_eq!(written!(&borrowed), "x%2Ay");
        assert_eq!(written!("plain"), "plain");
        assert_eq!(written!(&-42i64), "-42");
        assert_eq!(written!(&u128::MAX), u128::MAX.to_string());
        assert_eq!(written!(&1.5f64), "1.5", "any other Display type");
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        macro_rules! both {
            ($($value:expr),*) => {$(
                let mut slow = String::new();
                super::super::push_param(&mut slow, &$value);
                assert_eq!(written!(&$value), slow);
            )*};
        }
        both!(
            0u8,
            u64::MAX,
            i64::MIN,
            -1i32,
            u128::MAX,
            isize::MIN,
            i128::MIN,
            u16::MAX
        );
    }

    #[test]
    fn a_type_named_like_a_fast_one_is_written_with_its_display() {
        use shadowed::String;
        // `shadow:7`, escaped: the `Display` path, not a string's.
        assert_eq!(written!(&String(7)), "shadow%3A7");
    }
}
