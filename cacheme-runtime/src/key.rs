//! The key scheme of typed stores: `template with escaped values:v{version}`
//! (the backend adds its namespace prefix, giving `prefix:key:v{version}`).
//!
//! Values are written with `Display` and escaped as they are written, so
//! no value can contain a `:` (or whitespace, a control character, a glob
//! character or `%`): `("a:b", "c")` and `("a", "b:c")` give different keys,
//! and a store's keys can be matched segment by segment by
//! [`KeyTemplate::matches`]. The macro emits the literal parts, so building
//! a key is string pushes only, never template parsing.
//!
//! Two templates that can produce the same key (`foo:<id>:info` with
//! `id = "list"` and `foo:list:<id>` with `id = "info"`) are found by
//! [`KeyTemplate::shared_key`], and a client is not built over them.

mod overlap;
mod part;

pub use part::{AnyKeyPart, FastKeyPart, KeyPart};

use std::fmt::{self, Display, Write};

/// One piece of a key template: literal text or a `<variable>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text copied into the key as is.
    Lit(&'static str),
    /// A parameter of the fetcher, escaped into the key.
    Var(&'static str),
}

/// A store's key template, split into parts by the macro at compile time.
#[derive(Clone, Copy, Debug)]
pub struct KeyTemplate {
    /// The template as written (`"book:<category_id>:<book_id>"`).
    pub source: &'static str,
    /// Its parts, in order.
    pub parts: &'static [Part],
}

impl KeyTemplate {
    /// The template with variable names erased (`"book:<>:<>"`): two
    /// stores with the same shape would write the same keys.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for part in self.parts {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(_) => out.push_str("<>"),
            }
        }
        out
    }

    /// A `SCAN MATCH` glob covering every key of this template and
    /// `version` (a superset: check each hit with [`matches`](Self::matches)).
    pub fn glob(&self, version: &str) -> String {
        let mut out = String::new();
        for part in self.parts {
            match part {
                Part::Lit(text) => push_glob_escaped(&mut out, text),
                Part::Var(_) => out.push('*'),
            }
        }
        out.push_str(":v");
        let mut escaped_version = String::new();
        push_param(&mut escaped_version, &version);
        push_glob_escaped(&mut out, &escaped_version);
        out
    }

    /// Whether `key` (without the backend's prefix) is a key of this
    /// template and `version`: exactly the keys the store writes. A
    /// variable matches an escaped value only, so never a `:` (a key has as
    /// many segments as its template) nor a character escaping would have
    /// replaced (a literal `*` or a lone `%`).
    pub fn matches(&self, key: &str, version: &str) -> bool {
        let mut version_part = String::from(":v");
        push_param(&mut version_part, &version);
        let Some(body) = key.strip_suffix(version_part.as_str()) else {
            return false;
        };
        overlap::produces(self.parts, body)
    }

    /// A key both templates produce for some values of their variables,
    /// without the version suffix (`"foo:list:info"` for `foo:<id>:info`
    /// and `foo:list:<id>`), or `None` when no key can be both's.
    ///
    /// Versions are left out on purpose: a store's keys end in
    /// `:v{version}`, one segment whatever the version, so two templates
    /// overlap at some version exactly when their bodies do; and a version
    /// does not keep two stores apart (one may be bumped to the other's, and
    /// `invalidate_all` takes any version).
    pub fn shared_key(&self, other: &KeyTemplate) -> Option<String> {
        overlap::shared_key(self.parts, other.parts)
    }
}

fn push_glob_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Whether a byte must be percent-escaped inside a key value.
#[inline]
fn needs_escape(byte: u8) -> bool {
    matches!(byte, b':' | b'%' | b'*' | b'?' | b'[' | b']' | b'\\' | b'{' | b'}') || byte <= b' ' || byte == 0x7f
}

/// Writes into a key, percent-escaping what [`needs_escape`] says.
struct Escaper<'a, W>(&'a mut W);

impl<W: Write> Write for Escaper<'_, W> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(needs_escape) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if c.is_ascii() && needs_escape(c as u8) {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let b = c as u8;
                self.0.write_char('%')?;
                self.0.write_char(HEX[usize::from(b >> 4)] as char)?;
                self.0.write_char(HEX[usize::from(b & 0xf)] as char)?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Appends `value` (its `Display` form) to `key` (a `String` or a
/// [`KeyBuf`]), escaped.
#[inline]
pub fn push_param<W: Write, T: Display + ?Sized>(key: &mut W, value: &T) {
    // Writing into a String or a KeyBuf cannot fail; a Display impl that
    // errors leaves what it wrote so far, like `to_string` would panic on
    // instead.
    let _ = write!(Escaper(key), "{value}");
}

/// Appends `text` to `key`, escaped: what [`push_param`] writes for a
/// string, without going through `fmt`.
#[inline]
pub fn push_text<W: Write>(key: &mut W, text: &str) {
    let _ = Escaper(key).write_str(text);
}

/// How many bytes of a key [`KeyBuf`] holds without allocating.
const INLINE: usize = 64;

/// A key being written by a typed call: on the stack while it fits
/// `INLINE` (64) bytes (so a get costs no allocation for its key), moved to
/// the heap when it grows past them. Writing never fails.
#[derive(Clone, Debug)]
pub struct KeyBuf(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Inline(arrayvec::ArrayString<INLINE>),
    Heap(String),
}

impl KeyBuf {
    /// An empty key.
    #[inline]
    pub fn new() -> Self {
        KeyBuf(Repr::Inline(arrayvec::ArrayString::new()))
    }

    /// Appends `text` as it is.
    #[inline]
    pub fn push_str(&mut self, text: &str) {
        match &mut self.0 {
            Repr::Inline(inline) => {
                if inline.try_push_str(text).is_err() {
                    let mut heap = String::with_capacity(2 * (inline.len() + text.len()));
                    heap.push_str(inline);
                    heap.push_str(text);
                    self.0 = Repr::Heap(heap);
                }
            }
            Repr::Heap(heap) => heap.push_str(text),
        }
    }

    /// The key written so far.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(inline) => inline,
            Repr::Heap(heap) => heap,
        }
    }

    /// The key, as an owned string.
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Inline(inline) => inline.as_str().to_owned(),
            Repr::Heap(heap) => heap,
        }
    }
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for KeyBuf {
    #[inline]
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push_str(text);
        Ok(())
    }
}

impl std::ops::Deref for KeyBuf {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK: KeyTemplate = KeyTemplate {
        source: "book:<category>:<id>",
        parts: &[
            Part::Lit("book:"),
            Part::Var("category"),
            Part::Lit(":"),
            Part::Var("id"),
        ],
    };

    fn key(values: &[&str], version: &str) -> String {
        let mut out = String::from("book:");
        push_param(&mut out, values[0]);
        out.push(':');
        push_param(&mut out, values[1]);
        out.push_str(":v");
        push_param(&mut out, version);
        out
    }

    #[test]
    fn a_key_buf_moves_to_the_heap_past_its_inline_bytes_and_loses_nothing() {
        let mut buf = KeyBuf::new();
        let mut expected = String::new();
        for i in 0..40 {
            let part = format!("part{i}:");
            buf.push_str(&part);
            push_param(&mut buf, "a:b é");
            expected.push_str(&part);
            push_param(&mut expected, "a:b é");
            assert_eq!(buf.as_str(), expected);
        }
        assert!(expected.len() > 4 * INLINE);
        assert!(matches!(buf.0, Repr::Heap(_)));
        assert_eq!(buf.clone().into_string(), expected);
        let mut short = KeyBuf::default();
        short.push_str("book:7");
        assert!(matches!(short.0, Repr::Inline(_)));
        assert_eq!(&*short, "book:7");
        assert_eq!(short.into_string(), "book:7");
        // A push that crosses the bound mid-way (and one exactly at it).
        let mut edge = KeyBuf::new();
        edge.push_str(&"x".repeat(INLINE));
        assert!(matches!(edge.0, Repr::Inline(_)));
        edge.push_str("é");
        assert_eq!(edge.as_str(), format!("{}é", "x".repeat(INLINE)));
    }

    #[test]
    fn text_is_escaped_as_display_escapes_it() {
        for text in ["", "plain", "a:b", "100%", "x y\n*", "ключ", "🦀{}[]?\\"] {
            let mut fast = KeyBuf::new();
            push_text(&mut fast, text);
            let mut slow = String::new();
            push_param(&mut slow, text);
            assert_eq!(fast.as_str(), slow);
        }
    }

    #[test]
    fn separators_inside_values_cannot_collide() {
        assert_ne!(key(&["a:b", "c"], "1"), key(&["a", "b:c"], "1"));
        assert_eq!(key(&["a:b", "c"], "1"), "book:a%3Ab:c:v1");
        assert_eq!(key(&["100%", "x y\n*"], "1"), "book:100%25:x%20y%0A%2A:v1");
        assert_eq!(key(&["ключ", "🦀"], "1"), "book:ключ:🦀:v1");
    }

    #[test]
    fn matches_only_keys_of_the_template_and_version() {
        assert!(BOOK.matches(&key(&["7", "42"], "1"), "1"));
        assert!(BOOK.matches(&key(&["a:b", ""], "1"), "1"));
        assert!(!BOOK.matches(&key(&["7", "42"], "1"), "2"));
        assert!(
            !BOOK.matches("book:7:42:43:v1", "1"),
            "one more segment is another store"
        );
        assert!(!BOOK.matches("books:7:42:v1", "1"));
        assert!(!BOOK.matches("book:7:v1", "1"));
        assert!(
            !BOOK.matches("book:*:42:v1", "1"),
            "a value never holds a bare `*`: another store's literal"
        );
        assert_eq!(BOOK.glob("1"), "book:*:*:v1");
        assert_eq!(BOOK.shape(), "book:<>:<>");
    }
}
