//! The key scheme of typed stores: `template with escaped values:v{version}`
//! (the backend adds its namespace prefix, giving `prefix:key:v{version}`).
//!
//! Values are written with `Display` and escaped as they are written, so
//! no value can contain a `:` (or whitespace, a control character, a glob
//! character or `%`): `("a:b", "c")` and `("a", "b:c")` give different keys,
//! and a store's keys can be matched segment by segment by
//! [`KeyTemplate::matches`]. The macro emits the literal parts, so building
//! a key is string pushes only, never template parsing.

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
    /// template and `version`. A variable matches any run of characters
    /// without `:`, which escaped values never contain.
    pub fn matches(&self, key: &str, version: &str) -> bool {
        let mut version_part = String::from(":v");
        push_param(&mut version_part, &version);
        let Some(body) = key.strip_suffix(version_part.as_str()) else {
            return false;
        };
        match_parts(self.parts, body)
    }
}

fn match_parts(parts: &[Part], text: &str) -> bool {
    match parts.split_first() {
        None => text.is_empty(),
        Some((Part::Lit(lit), rest)) => text.strip_prefix(lit).is_some_and(|tail| match_parts(rest, tail)),
        Some((Part::Var(_), rest)) => {
            // Try every split point up to the next ':' (a value has none).
            let limit = text.find(':').unwrap_or(text.len());
            (0..=limit)
                .filter(|&i| text.is_char_boundary(i))
                .any(|i| match_parts(rest, &text[i..]))
        }
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

/// Writes into a `String`, percent-escaping what [`needs_escape`] says.
struct Escaper<'a>(&'a mut String);

impl Write for Escaper<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(needs_escape) {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            if c.is_ascii() && needs_escape(c as u8) {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let b = c as u8;
                self.0.push('%');
                self.0.push(HEX[usize::from(b >> 4)] as char);
                self.0.push(HEX[usize::from(b & 0xf)] as char);
            } else {
                self.0.push(c);
            }
        }
        Ok(())
    }
}

/// Appends `value` (its `Display` form) to `key`, escaped.
#[inline]
pub fn push_param<T: Display + ?Sized>(key: &mut String, value: &T) {
    // Writing into a String cannot fail; a Display impl that errors leaves
    // what it wrote so far, like `to_string` would panic on instead.
    let _ = write!(Escaper(key), "{value}");
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
        assert_eq!(BOOK.glob("1"), "book:*:*:v1");
        assert_eq!(BOOK.shape(), "book:<>:<>");
    }
}
